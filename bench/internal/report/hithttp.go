package report

import (
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// HitHTTP is one run of bench/hithttp: cache hits through real HTTP, each
// variant's req/s and CPU time per request, round after round.
type HitHTTP struct {
	Started  time.Time     `json:"started"`
	Machine  Machine       `json:"machine"`
	Clients  int           `json:"clients"`
	BodySize int           `json:"body_size"`
	Duration time.Duration `json:"duration_ns"` // of one measurement
	Variants []string      `json:"variants"`    // in the order they were run, bare and floor first
	// Rounds holds every round's samples by variant; Median the median of
	// each field over the rounds, its ratios computed from those medians.
	Rounds []map[string]HitHTTPSample `json:"rounds"`
	Median map[string]HitHTTPSample   `json:"median"`
}

// HitHTTPSample is one variant's measurement: req/s, the CPU time spent
// per request by the server process, the load generator's clients and
// redis-server, and its ratios to the bare handler and to the floor (one
// raw go-redis GET of the stored bytes, written out) of the same round.
// The req/CPU ratios are of requests per CPU second, what a machine whose
// cores the three processes share would serve.
type HitHTTPSample struct {
	PerSecond  float64 `json:"req_per_s"`
	ServerCPU  float64 `json:"server_cpu_us_per_req"`
	ClientsCPU float64 `json:"clients_cpu_us_per_req"`
	RedisCPU   float64 `json:"redis_cpu_us_per_req"`
	VsBare     float64 `json:"req_per_s_vs_bare"`
	VsFloor    float64 `json:"req_per_s_vs_floor"`
	CPUVsBare  float64 `json:"req_per_cpu_vs_bare"`
	CPUVsFloor float64 `json:"req_per_cpu_vs_floor"`
}

// CPU is the CPU time per request of the three processes together, in µs.
func (s HitHTTPSample) CPU() float64 { return s.ServerCPU + s.ClientsCPU + s.RedisCPU }

// Write stores h as indented JSON at path.
func (h *HitHTTP) Write(path string) error { return writeJSON(path, "hithttp", h) }

// ReadHitHTTP reads a report written by [HitHTTP.Write].
func ReadHitHTTP(path string) (*HitHTTP, error) {
	var h HitHTTP
	if err := readJSON(path, "hithttp", &h); err != nil {
		return nil, err
	}
	return &h, nil
}

func writeJSON(path, what string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s report: %w", what, err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s report: %w", what, err)
	}
	return nil
}

func readJSON(path, what string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s report: %w", what, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %s report %s: %w", what, path, err)
	}
	return nil
}
