package main

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/flightcache/flightcache/bench/internal/report"
)

// testdata/bench.txt is go test -bench output as the hit benchmarks will
// print it: core's own BenchmarkHit (not an adapter: ignored), ginmw with
// every case and three runs of bare, echomw without floor and cached-l1
// and with a malformed line, no nethttpmw at all, and the peer's library
// comparison, one library with a case of its own, and a parallel variant
// (not charted).
func TestParseHitCost(t *testing.T) {
	f, err := os.Open("testdata/bench.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, err := parseHitCost(f, "bench.txt")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"gin", "echo", "gin-cache\n(peer bench)", "flightcache\n(peer bench)"}; !slices.Equal(h.adapters, want) {
		t.Errorf("adapters = %q, want %q", h.adapters, want)
	}
	if want := []string{"bare", "floor", "cached", "cached-l1", "redis-get"}; !slices.Equal(h.cases, want) {
		t.Errorf("cases = %q, want %q", h.cases, want)
	}
	want := map[string]map[string]float64{
		"gin":                       {"bare": 1200, "floor": 40000, "cached": 55000, "cached-l1": 3000}, // bare: median of 1000, 1200, 5000
		"echo":                      {"bare": 900, "cached": 53000},                                     // cached: median of 52000, 54000
		"gin-cache\n(peer bench)":   {"cached": 70000, "redis-get": 45000},
		"flightcache\n(peer bench)": {"cached": 56000},
	}
	if !equalApprox(h.nsPerOp, want) {
		t.Errorf("ns/op = %v, want %v", h.nsPerOp, want)
	}
	if h.skipped != 1 {
		t.Errorf("skipped %d malformed lines, want 1", h.skipped)
	}
}

// equalApprox compares ns/op tables up to the rounding of benchfmt's
// conversion to seconds and back.
func equalApprox(got, want map[string]map[string]float64) bool {
	if len(got) != len(want) {
		return false
	}
	for a, cases := range want {
		if len(got[a]) != len(cases) {
			return false
		}
		for c, w := range cases {
			g, ok := got[a][c]
			if !ok || math.Abs(g-w) > w*1e-9 {
				return false
			}
		}
	}
	return true
}

func TestParseHitCostWithoutHitBenchmarks(t *testing.T) {
	in := "pkg: github.com/flightcache/flightcache/core\nBenchmarkHit/do-hit-2 \t 100\t 5000 ns/op\n" +
		"pkg: github.com/flightcache/flightcache/ginmw\nBenchmarkMiss-2 \t 100\t 5000 ns/op\n"
	h, err := parseHitCost(strings.NewReader(in), "in")
	if err != nil {
		t.Fatal(err)
	}
	if len(h.adapters) != 0 || len(h.cases) != 0 {
		t.Errorf("parseHitCost = adapters %q cases %q, want none", h.adapters, h.cases)
	}
}

func TestLargestHerd(t *testing.T) {
	rep, err := report.ReadStampede("testdata/stampede.json")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range largestHerd(rep) {
		if c.Processes != 8 || c.Clients != 1000 {
			t.Errorf("cell %s P=%d N=%d, want P=8 N=1000", c.Strategy, c.Processes, c.Clients)
		}
		got = append(got, c.Strategy)
	}
	if want := []string{"none", "singleflight", "polling", "flightcache"}; !slices.Equal(got, want) {
		t.Errorf("largestHerd strategies = %q, want %q (run order)", got, want)
	}
}

func TestDraw(t *testing.T) {
	dir := t.TempDir()
	var table bytes.Buffer
	files, err := draw("testdata/stampede.json", "testdata/bench.txt", dir, "svg", &table)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte("<svg")) {
			t.Errorf("%s is not an SVG: %.80q", f, b)
		}
	}
	if want := []string{"stampede-origin-calls.svg", "stampede-p99-extra-wait.svg", "hit-cost.svg"}; !slices.Equal(names, want) {
		t.Errorf("draw wrote %q, want %q", names, want)
	}
	if want := "| gin | 1200 ns | 40000 ns | 55000 ns (1.38× floor) | 3000 ns (0.07× floor) | – |"; !strings.Contains(table.String(), want) {
		t.Errorf("hit table:\n%s\nwant a row %q", table.String(), want)
	}
}
