package main

import (
	"io"
	"slices"
	"strings"

	"github.com/flightcache/flightcache/bench/internal/report"
)

// hitBenchmark names a hit benchmark and the label its results get.
type hitBenchmark struct {
	pkg   string // the "pkg:" of go test -bench output
	name  string // the top-level benchmark, without "Benchmark" as benchfmt reads it
	label string // "": the first sub-benchmark names the library, see [classify]
}

// hitBenchmarks are the hit-cost benchmarks charted, in display order.
var hitBenchmarks = []hitBenchmark{
	{"github.com/flightcache/flightcache/ginmw", "Hit", "gin"},
	{"github.com/flightcache/flightcache/echomw", "Hit", "echo"},
	{"github.com/flightcache/flightcache/nethttpmw", "Hit", "net/http"},
	{"github.com/flightcache/flightcache/bench/peer", "PeerHit", ""},
}

// caseOrder is the display order of the known sub-benchmarks; others
// follow in name order.
var caseOrder = []string{"bare", "floor", "cached", "cached-l1"}

// hitCost is the median ns/op of each hit benchmark case, by adapter.
type hitCost struct {
	adapters []string                      // labels with results, in display order
	cases    []string                      // sub-benchmark names with results, in display order
	nsPerOp  map[string]map[string]float64 // adapter label → case → median ns/op
	skipped  int                           // lines benchfmt could not parse
}

// value returns the median ns/op of adapter's case, if measured.
func (h *hitCost) value(adapter, c string) (float64, bool) {
	v, ok := h.nsPerOp[adapter][c]
	return v, ok
}

// parseHitCost reads go test -bench output and keeps the results of
// hitBenchmarks, the median of repeated runs (-count) of each case.
func parseHitCost(r io.Reader, fileName string) (*hitCost, error) {
	g, err := report.ReadGoBench(r, fileName)
	if err != nil {
		return nil, err
	}
	samples := map[string]map[string][]float64{}
	var seen []string // labels in the order of their first result
	h := &hitCost{nsPerOp: map[string]map[string]float64{}, skipped: g.Skipped}
	for _, rec := range g.Results {
		label, c, ok := classify(rec)
		if !ok {
			continue
		}
		sec, ok := rec.Values["sec/op"] // benchfmt tidies ns/op into sec/op
		if !ok {
			continue
		}
		if samples[label] == nil {
			samples[label] = map[string][]float64{}
			seen = append(seen, label)
		}
		samples[label][c] = append(samples[label][c], sec*1e9)
	}
	for _, b := range hitBenchmarks { // adapters first, in their order
		if samples[b.label] != nil && b.label != "" {
			h.adapters = append(h.adapters, b.label)
		}
	}
	for _, label := range seen { // then the peer's libraries, as they came
		if !slices.Contains(h.adapters, label) {
			h.adapters = append(h.adapters, label)
		}
	}
	for label, cases := range samples {
		h.nsPerOp[label] = map[string]float64{}
		for c, vs := range cases {
			h.nsPerOp[label][c] = report.Median(vs)
			if !slices.Contains(h.cases, c) {
				h.cases = append(h.cases, c)
			}
		}
	}
	slices.SortFunc(h.cases, compareCases)
	return h, nil
}

// classify returns the adapter label and case name of a hit benchmark
// result: "BenchmarkHit/cached-l1-8" in ginmw is ("gin", "cached-l1").
// The peer's benchmark compares libraries through one framework: its first
// sub-benchmark names the library and the rest the case, "cached" when
// there is no more ("BenchmarkPeerHit/gin-cache-8" is
// ("gin-cache\n(peer bench)", "cached"); the line break keeps axis labels
// apart).
func classify(r report.GoBenchResult) (label, c string, ok bool) {
	for _, b := range hitBenchmarks {
		if b.pkg != r.Pkg || r.Name != b.name {
			continue
		}
		var sub []string
		for _, s := range r.Sub {
			if _, v, keyed := strings.Cut(s, "="); keyed {
				s = v // "path=cached" names the case "cached"
			}
			sub = append(sub, s)
		}
		label = b.label
		if label == "" && len(sub) > 0 {
			label, sub = sub[0]+"\n(peer bench)", sub[1:]
			if len(sub) == 0 {
				sub = []string{"cached"}
			}
		}
		if len(sub) == 0 {
			return "", "", false
		}
		return label, strings.Join(sub, "/"), true
	}
	return "", "", false
}

func compareCases(a, b string) int {
	ia, ib := slices.Index(caseOrder, a), slices.Index(caseOrder, b)
	switch {
	case ia >= 0 && ib >= 0:
		return ia - ib
	case ia >= 0:
		return -1
	case ib >= 0:
		return 1
	}
	return strings.Compare(a, b)
}
