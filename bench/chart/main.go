// Command chart draws the charts of BENCHMARKS.md from benchmark results:
//
//	go run ./bench/chart -stampede stampede.json -bench bench.txt -out docs/charts
//
// From the stampede benchmark's JSON (bench/stampede -out) it
// draws, at the largest P×N measured, the origin calls per strategy (log
// scale) and the p99 extra wait per strategy. From go test -bench output
// it draws the cost of a cache hit per adapter: the sub-benchmarks of
// BenchmarkHit in ginmw, echomw and nethttpmw (bare, floor, cached,
// cached-l1 and any others) and BenchmarkPeerHit in bench/peer;
// adapters and cases without results are left out. It also prints the
// hit costs as a Markdown table, with each cached case's ratio to the
// adapter's floor.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"

	"github.com/flightcache/flightcache/bench/internal/report"
)

func main() {
	stampede := flag.String("stampede", "", "stampede benchmark JSON (bench/stampede -out)")
	bench := flag.String("bench", "", "go test -bench output")
	out := flag.String("out", ".", "directory to write the charts to")
	format := flag.String("format", "svg", "chart format: svg or png")
	flag.Parse()
	if *format != "svg" && *format != "png" {
		log.Fatalf("-format %q: want svg or png", *format)
	}
	if *stampede == "" && *bench == "" {
		log.Fatal("nothing to draw: give -stampede FILE.json and/or -bench FILE.txt")
	}
	files, err := draw(*stampede, *bench, *out, *format, os.Stdout)
	for _, f := range files {
		fmt.Fprintln(os.Stderr, "wrote", f)
	}
	if err != nil {
		log.Fatal(err)
	}
}

// draw writes every chart it has data for into dir and returns their
// paths; the hit-cost table goes to table.
func draw(stampedePath, benchPath, dir, format string, table io.Writer) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	var files []string
	save := func(p *plot.Plot, name string) error {
		path := filepath.Join(dir, name+"."+format)
		if err := p.Save(chartWidth, chartHeight, path); err != nil {
			return fmt.Errorf("save %s: %w", path, err)
		}
		files = append(files, path)
		return nil
	}
	if stampedePath != "" {
		if err := drawStampede(stampedePath, save); err != nil {
			return files, err
		}
	}
	if benchPath != "" {
		if err := drawHitCost(benchPath, save, table); err != nil {
			return files, err
		}
	}
	return files, nil
}

func drawStampede(path string, save func(*plot.Plot, string) error) error {
	rep, err := report.ReadStampede(path)
	if err != nil {
		return err
	}
	cells := largestHerd(rep)
	if len(cells) == 0 {
		return fmt.Errorf("%s has no cells", path)
	}
	p, err := originCallsChart(cells)
	if err != nil {
		return err
	}
	if err := save(p, "stampede-origin-calls"); err != nil {
		return err
	}
	if p, err = extraWaitChart(cells); err != nil {
		return err
	}
	return save(p, "stampede-p99-extra-wait")
}

func drawHitCost(path string, save func(*plot.Plot, string) error, table io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open benchmarks: %w", err)
	}
	defer f.Close()
	h, err := parseHitCost(f, path)
	if err != nil {
		return err
	}
	if h.skipped > 0 {
		fmt.Fprintf(os.Stderr, "%s: skipped %d malformed benchmark lines\n", path, h.skipped)
	}
	if len(h.adapters) == 0 {
		return errors.New(path + " has no BenchmarkHit results of ginmw, echomw or nethttpmw, nor BenchmarkPeerHit of bench/peer")
	}
	writeHitTable(table, h)
	p, err := hitCostChart(h)
	if err != nil {
		return err
	}
	return save(p, "hit-cost")
}

// writeHitTable writes h as a Markdown table of ns/op. Cases past the
// floor (a raw Redis GET of the stored bytes, written out) also show their
// ratio to the adapter's floor, when that was measured: the cache's own
// cost on top of the round trip it cannot avoid.
func writeHitTable(w io.Writer, h *hitCost) {
	fmt.Fprintf(w, "| adapter | %s |\n", strings.Join(h.cases, " | "))
	fmt.Fprintf(w, "|---|%s\n", strings.Repeat("---:|", len(h.cases)))
	for _, a := range h.adapters {
		floor, hasFloor := h.value(a, "floor")
		fmt.Fprintf(w, "| %s |", strings.ReplaceAll(a, "\n", " "))
		for _, c := range h.cases {
			v, ok := h.value(a, c)
			switch {
			case !ok:
				fmt.Fprint(w, " – |")
			case hasFloor && floor > 0 && c != "bare" && c != "floor":
				fmt.Fprintf(w, " %.0f ns (%.2f× floor) |", v, v/floor)
			default:
				fmt.Fprintf(w, " %.0f ns |", v)
			}
		}
		fmt.Fprintln(w)
	}
}
