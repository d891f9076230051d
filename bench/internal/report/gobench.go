package report

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"golang.org/x/perf/benchfmt"
	"golang.org/x/perf/benchmath"
)

// GoBench is go test -bench output, as benchfmt reads it.
type GoBench struct {
	Results []GoBenchResult // in the order of the file
	Skipped int             // benchmark lines benchfmt could not parse
}

// GoBenchResult is one line of go test -bench output.
type GoBenchResult struct {
	Pkg  string   // the "pkg:" in force: "github.com/flightcache/flightcache/ginmw"
	Name string   // the top-level benchmark without "Benchmark": "HitParallel"
	Sub  []string // the sub-benchmarks, without their slashes: "path=cached", "size=2KiB"
	// Values holds each measurement by benchfmt's tidied unit: "sec/op"
	// (from ns/op), "B/op", "allocs/op", "B/s" (from MB/s).
	Values map[string]float64
}

// ReadGoBench reads go test -bench output from r; fileName names it in
// errors.
func ReadGoBench(r io.Reader, fileName string) (*GoBench, error) {
	g := &GoBench{}
	br := benchfmt.NewReader(r, fileName)
	for br.Scan() {
		switch rec := br.Result().(type) {
		case *benchfmt.SyntaxError:
			g.Skipped++
		case *benchfmt.Result:
			base, parts := rec.Name.Parts()
			res := GoBenchResult{Pkg: rec.GetConfig("pkg"), Name: string(base), Values: map[string]float64{}}
			for _, p := range parts {
				if s, isSub := strings.CutPrefix(string(p), "/"); isSub { // the rest is "-GOMAXPROCS"
					res.Sub = append(res.Sub, s)
				}
			}
			for _, v := range rec.Values {
				res.Values[v.Unit] = v.Value
			}
			g.Results = append(g.Results, res)
		}
	}
	if err := br.Err(); err != nil {
		return nil, fmt.Errorf("read benchmarks %s: %w", fileName, err)
	}
	return g, nil
}

// Median returns the median of unit over the results of benchmark name
// in pkg whose sub-benchmarks are sub, as benchstat summarizes a sample
// of -count runs, and how many runs there were; 0 runs when none.
func (g *GoBench) Median(pkg, name string, sub []string, unit string) (float64, int) {
	var xs []float64
	for _, r := range g.Results {
		if r.Pkg != pkg || r.Name != name || !slices.Equal(r.Sub, sub) {
			continue
		}
		if v, ok := r.Values[unit]; ok {
			xs = append(xs, v)
		}
	}
	if len(xs) == 0 {
		return 0, 0
	}
	return Median(xs), len(xs)
}

// Median is the center benchstat reports for a sample: its median. It
// may reorder xs.
func Median(xs []float64) float64 {
	return benchmath.AssumeNothing.Summary(benchmath.NewSample(xs, &benchmath.DefaultThresholds), 0.95).Center
}
