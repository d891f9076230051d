package main

import (
	"context"
	"errors"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flightcache/flightcache/bench/internal/report"
)

// TestSmoke runs the -smoke cell (2 server processes, 20 clients, every
// strategy, 3 rounds) against the redis-server at FLIGHTCACHE_REDIS_ADDR.
func TestSmoke(t *testing.T) {
	addr := os.Getenv("FLIGHTCACHE_REDIS_ADDR")
	if addr == "" {
		if testing.Short() {
			t.Skip("FLIGHTCACHE_REDIS_ADDR not set; skipped in -short mode")
		}
		t.Fatal("FLIGHTCACHE_REDIS_ADDR is not set: run ./scripts/test.sh, which starts redis-server")
	}
	o, smoke, _, err := parseFlags([]string{"-redis", addr, "-smoke"})
	if err != nil || !smoke {
		t.Fatalf("parseFlags(-smoke) = %v, smoke %v", err, smoke)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := bench(ctx, o, testLog{t})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Machine.RedisVersion == "" {
		t.Error("report has no Redis version")
	}
	byStrategy := map[string]report.Cell{}
	for _, c := range rep.Cells {
		byStrategy[c.Strategy] = c
		if c.Processes != 2 || c.Clients != 20 || c.Rounds != 3 {
			t.Errorf("%s cell: P=%d N=%d rounds %d, want P=2 N=20 rounds 3", c.Strategy, c.Processes, c.Clients, c.Rounds)
		}
		if c.Errors() != 0 {
			t.Errorf("%s: %d non-200, %d transport errors, want none", c.Strategy, c.StatusErrors, c.TransportErrors)
		}
	}
	if got := slices.Sorted(maps.Keys(byStrategy)); !slices.Equal(got, slices.Sorted(slices.Values(ownStrategies))) {
		t.Fatalf("strategies measured = %v, want %v", got, ownStrategies)
	}

	// Without a cache every request is an origin call: this checks the
	// counting, across processes, as much as the strategy.
	none := byStrategy["none"]
	for i, n := range none.OriginCallsPerRound {
		if n != 20 {
			t.Errorf("none, round %d: %d origin calls, want 20", i, n)
		}
	}
	if none.DistinctBodies != 20 {
		t.Errorf("none: %d distinct bodies, want 20", none.DistinctBodies)
	}
	if sf := byStrategy["singleflight"]; sf.OriginCalls < 1 || sf.OriginCalls > 2 {
		t.Errorf("singleflight: %d origin calls in a round, want 1 or 2 (at most one per process)", sf.OriginCalls)
	}
	for _, name := range []string{"polling", "flightcache"} {
		c := byStrategy[name]
		for i, n := range c.OriginCallsPerRound {
			if n != 1 {
				t.Errorf("%s, round %d: %d origin calls, want 1", name, i, n)
			}
		}
		if c.DistinctBodies != 1 {
			t.Errorf("%s: %d distinct bodies in a round, want 1", name, c.DistinctBodies)
		}
		if c.CacheErrors == nil {
			t.Errorf("%s: cache errors not reported", name)
		}
	}
	if c := byStrategy["none"].CacheErrors; c != nil {
		t.Errorf("none: %d cache errors reported, want none reported (no cache)", *c)
	}
	if f := smokeFailures(rep, o.strategies); len(f) != 0 {
		t.Errorf("smokeFailures = %q, want none", f)
	}
}

// testLog sends the harness's progress lines to the test log.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func TestSmokeFailures(t *testing.T) {
	good := func() *report.Stampede {
		return &report.Stampede{Cells: []report.Cell{
			{Strategy: "none", OriginCalls: 20, DistinctBodies: 20},
			{Strategy: "flightcache", OriginCalls: 1, DistinctBodies: 1},
		}}
	}
	all := []string{"none", "flightcache"}
	tests := []struct {
		name   string
		change func(*report.Stampede)
		want   string // in a failure; "" for none
	}{
		{"good", func(*report.Stampede) {}, ""},
		{"two origin calls", func(r *report.Stampede) { r.Cells[1].OriginCalls = 2 }, "2 origin calls"},
		{"two bodies", func(r *report.Stampede) { r.Cells[1].DistinctBodies = 2 }, "2 distinct bodies"},
		{"non-200 in flightcache", func(r *report.Stampede) { r.Cells[1].StatusErrors = 1 }, "non-200"},
		{"transport error elsewhere", func(r *report.Stampede) { r.Cells[0].TransportErrors = 3 }, "none P=0 N=0: 3 transport errors"},
		{"strategy missing", func(r *report.Stampede) { r.Cells = r.Cells[:1] }, "flightcache did not run"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := good()
			tt.change(r)
			got := smokeFailures(r, all)
			if tt.want == "" {
				if len(got) != 0 {
					t.Errorf("smokeFailures = %q, want none", got)
				}
				return
			}
			if !slices.ContainsFunc(got, func(f string) bool { return strings.Contains(f, tt.want) }) {
				t.Errorf("smokeFailures = %q, want one mentioning %q", got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	t0 := time.Now()
	const delay = 200 * time.Millisecond
	at := func(ms int) time.Time { return t0.Add(delay + time.Duration(ms)*time.Millisecond) }
	rounds := []round{
		{originCalls: 1, released: t0, outcomes: []outcome{
			{status: 200, body: "a", done: at(10)},
			{status: 200, body: "a", done: at(30)},
			{status: 502, body: "bad", done: at(1)},
		}},
		{originCalls: 2, released: t0, outcomes: []outcome{
			{status: 200, body: "b", done: at(20)},
			{status: 200, body: "c", done: at(40)},
			{err: errors.New("reset"), done: at(2)},
		}},
	}
	c := summarize(rounds, delay)
	want := report.Cell{
		Rounds: 2, OriginCalls: 2, DistinctBodies: 2, OriginCallsPerRound: []int64{1, 2},
		ExtraWaitP50MS: 20, ExtraWaitP99MS: 40, ExtraWaitMaxMS: 40, StatusErrors: 1, TransportErrors: 1,
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("summarize = %+v, want %+v", c, want)
	}
}

func TestParseFlags(t *testing.T) {
	if _, _, _, err := parseFlags(nil); err == nil || !strings.Contains(err.Error(), "-redis") {
		t.Errorf("parseFlags without -redis: err = %v, want one naming -redis", err)
	}
	o, _, _, err := parseFlags([]string{"-redis", "x:1", "-processes", "1,8", "-clients", "5", "-strategies", "flightcache,none"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.processes, []int{1, 8}) || !slices.Equal(o.clients, []int{5}) || !slices.Equal(o.strategies, []string{"none", "flightcache"}) {
		t.Errorf("parseFlags = P %v N %v strategies %v, want [1 8] [5] [none flightcache]", o.processes, o.clients, o.strategies)
	}
	o, _, _, err = parseFlags([]string{"-redis", "x:1", "-smoke", "-processes", "8", "-peer-binary", "/bin/peer", "-peer-name", "gin-cache"})
	if err != nil {
		t.Fatal(err)
	}
	if want := append(slices.Clone(ownStrategies), "gin-cache"); !slices.Equal(o.processes, []int{2}) || !slices.Equal(o.clients, []int{20}) || !slices.Equal(o.strategies, want) {
		t.Errorf("parseFlags(-smoke) = P %v N %v strategies %v, want [2] [20] %v", o.processes, o.clients, o.strategies, want)
	}
	for _, bad := range [][]string{
		{"-redis", "x:1", "-strategies", "peer"}, // no -peer-binary
		{"-redis", "x:1", "-processes", "0"},
		{"-redis", "x:1", "-clients", "ten"},
		{"-redis", "x:1", "-rounds", "0"},
	} {
		if _, _, _, err := parseFlags(bad); err == nil {
			t.Errorf("parseFlags(%q): no error", bad)
		}
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 200; i++ {
		d = append(d, time.Duration(i))
	}
	for _, tt := range []struct{ p, want int }{{50, 100}, {99, 198}, {100, 200}, {1, 2}} {
		if got := percentile(d, tt.p); got != time.Duration(tt.want) {
			t.Errorf("percentile(1..200, %d) = %d, want %d", tt.p, got, tt.want)
		}
	}
	if got := percentile([]time.Duration{7}, 99); got != 7 {
		t.Errorf("percentile([7], 99) = %d, want 7", got)
	}
}

// TestExpirySmoke runs the expiry mode's smoke (2 processes, 10 keys, a
// 2 s TTL, 3 s of load per fleet) against the redis-server at
// FLIGHTCACHE_REDIS_ADDR. It asserts what timing cannot change: every
// request succeeded, both fleets called the origin, and the early-refresh
// fleet refreshed early while the default one did not.
func TestExpirySmoke(t *testing.T) {
	addr := os.Getenv("FLIGHTCACHE_REDIS_ADDR")
	if addr == "" {
		if testing.Short() {
			t.Skip("FLIGHTCACHE_REDIS_ADDR not set; skipped in -short mode")
		}
		t.Fatal("FLIGHTCACHE_REDIS_ADDR is not set: run ./scripts/test.sh, which starts redis-server")
	}
	o, smoke, _, err := parseFlags([]string{"-redis", addr, "-expiry", "-smoke"})
	if err != nil || !smoke || o.expiry == nil || o.expiry.processes != 4 {
		t.Fatalf("parseFlags(-expiry -smoke) = %v, smoke %v, expiry %+v", err, smoke, o.expiry)
	}
	e := smokeExpiry(*o.expiry)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	results, err := benchExpiry(ctx, o, e, testLog{t})
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 2 {
		t.Fatalf("%d results, want 2 (default, early refresh)", len(results))
	}
	for _, r := range results {
		if r.Errors != 0 || r.Requests == 0 || r.OriginCalls == 0 {
			t.Errorf("%s: %d requests, %d errors, %d origin calls; want requests, no errors, origin calls", r.Strategy, r.Requests, r.Errors, r.OriginCalls)
		}
	}
	if n := results[0].Stats["early_refreshes"]; n != 0 {
		t.Errorf("default fleet: %d early refreshes, want 0", n)
	}
	if n := results[1].Stats["early_refreshes"]; n == 0 {
		t.Error("early-refresh fleet: no early refreshes")
	}
}
