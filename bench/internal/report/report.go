// Package report holds the results the benchmarks write and the chart and
// scorecard generators read: the JSON documents of the stampede benchmark
// and of bench/hithttp, and a reader of go test -bench output.
package report

import "time"

// Stampede is one run of the stampede benchmark.
type Stampede struct {
	Machine       Machine   `json:"machine"`
	Started       time.Time `json:"started"`
	OriginDelayMS float64   `json:"origin_delay_ms"`
	Strategies    []string  `json:"strategies"` // in the order they were run
	Cells         []Cell    `json:"cells"`
}

// Machine describes where the run happened.
type Machine struct {
	GOOS         string `json:"goos"`
	GOARCH       string `json:"goarch"`
	NumCPU       int    `json:"num_cpu"`
	GoVersion    string `json:"go_version"`
	RedisVersion string `json:"redis_version"`
}

// Cell is Rounds herds, each of Clients concurrent requests for a cold
// key of its own, spread over Processes server processes running Strategy.
type Cell struct {
	Strategy  string `json:"strategy"`
	Processes int    `json:"processes"`
	Clients   int    `json:"clients"`
	Rounds    int    `json:"rounds"`

	// Origin calls, counted by the origins in Redis, and distinct bodies
	// among the 200 responses: the most any round had.
	OriginCalls         int64   `json:"origin_calls"`
	DistinctBodies      int     `json:"distinct_bodies"`
	OriginCallsPerRound []int64 `json:"origin_calls_per_round"`

	// Extra wait: a client's latency, from the herd's release to its
	// last body byte, minus the origin delay. Over the successful requests
	// of every round.
	ExtraWaitP50MS float64 `json:"extra_wait_p50_ms"`
	ExtraWaitP99MS float64 `json:"extra_wait_p99_ms"`
	ExtraWaitMaxMS float64 `json:"extra_wait_max_ms"`

	// CacheErrors counts the store errors the servers' caches absorbed by
	// serving uncached (fail-open), in all rounds; nil when the strategy's
	// servers do not report them (only flightcache and polling do).
	CacheErrors *int64 `json:"cache_errors,omitempty"`

	StatusErrors    int `json:"status_errors"`    // responses other than 200, in all rounds
	TransportErrors int `json:"transport_errors"` // requests without a complete response, in all rounds
}

// Errors is the number of clients that got no 200 response.
func (c Cell) Errors() int { return c.StatusErrors + c.TransportErrors }

// Write stores s as indented JSON at path.
func (s *Stampede) Write(path string) error { return writeJSON(path, "stampede", s) }

// ReadStampede reads a report written by [Stampede.Write].
func ReadStampede(path string) (*Stampede, error) {
	var s Stampede
	if err := readJSON(path, "stampede", &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Expiry is one fleet's run of bench/stampede -expiry (hot keys expiring
// under steady load); expiry.json holds one per fleet, in run order.
type Expiry struct {
	Strategy          string           `json:"strategy"`
	Processes         int              `json:"processes"`
	Keys              int              `json:"keys"`
	TTLMS             float64          `json:"ttl_ms"`
	DurationS         float64          `json:"duration_s"`
	Requests          int              `json:"requests"`
	Waited            int              `json:"waited_for_origin"`
	Slow              int              `json:"slower_than_half_the_origin"`
	Errors            int              `json:"errors"`
	OriginCalls       int64            `json:"origin_calls"`
	CallsPerKeyPerTTL float64          `json:"origin_calls_per_key_per_ttl"`
	P50MS             float64          `json:"p50_ms"`
	P99MS             float64          `json:"p99_ms"`
	P999MS            float64          `json:"p999_ms"`
	MaxMS             float64          `json:"max_ms"`
	HitP99MS          float64          `json:"hit_p99_ms"`
	Stats             map[string]int64 `json:"server_stats"`
}
