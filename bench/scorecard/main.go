// Command scorecard puts every performance target of issue 13 beside its
// baseline, from the results of one scripts/bench.sh run:
//
//	go run ./bench/scorecard -in docs/bench -out docs/bench
//
// It reads hit.txt (the adapters' hit benchmarks), hithttp.json (hits
// through real HTTP), expiry.json (hot keys expiring under steady load),
// takeover.txt (go test -v of core's TestFillerKilledMidFetch),
// proxies.json (the proxy beside nginx and Varnish) and stampede.json
// (cold herds) from the -in directory, and writes into -out:
//
//   - scorecard.md: a Markdown table, one row per target: the goal, the
//     baseline measured in the same run, flightcache's figure, their ratio
//     and whether the target is met;
//   - scorecard.svg: each target's ratio to its baseline as a bar, with
//     the baseline at 1 and the goal marked in the same terms.
//
// Go benchmarks count as the median of their -count runs, as benchstat
// reports them. A missing input file makes its targets "not measured"; a
// file that cannot be parsed is an error.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	in := flag.String("in", "docs/bench", "directory holding the results of scripts/bench.sh")
	out := flag.String("out", "", "directory to write scorecard.md and scorecard.svg to (default: -in)")
	flag.Parse()
	if *out == "" {
		*out = *in
	}
	files, err := run(*in, *out)
	for _, f := range files {
		fmt.Fprintln(os.Stderr, "wrote", f)
	}
	if err != nil {
		log.Fatal("scorecard: ", err)
	}
}

// run reads the results in dir and writes the scorecard into out,
// returning the paths it wrote.
func run(dir, out string) ([]string, error) {
	in, err := readInputs(dir)
	if err != nil {
		return nil, err
	}
	rows := scorecard(in)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	var md bytes.Buffer
	writeTable(&md, rows, machine(dir))
	mdPath := filepath.Join(out, "scorecard.md")
	if err := os.WriteFile(mdPath, md.Bytes(), 0o644); err != nil {
		return nil, err
	}
	svgPath := filepath.Join(out, "scorecard.svg")
	p, err := chart(rows)
	if err != nil {
		return []string{mdPath}, err
	}
	if err := p.Save(chartWidth, chartHeight(len(rows)), svgPath); err != nil {
		return []string{mdPath}, fmt.Errorf("save %s: %w", svgPath, err)
	}
	return []string{mdPath, svgPath}, nil
}

// machine returns the first lines of machine.txt in dir (written by
// scripts/bench.sh), "" when there is none.
func machine(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "machine.txt"))
	if err != nil {
		return ""
	}
	return strings.Join(strings.Fields(strings.ReplaceAll(string(b), "\n", "; ")), " ")
}

// writeTable writes rows as a Markdown table, after a count of the
// targets met, missed and not measured.
func writeTable(w io.Writer, rows []row, machine string) {
	count := map[status]int{}
	for _, r := range rows {
		count[r.status]++
	}
	fmt.Fprintf(w, "Issue 13's targets from one run of scripts/bench.sh: %d met, %d missed, %d not measured.\n",
		count[met], count[missed], count[notMeasured])
	if machine != "" {
		fmt.Fprintf(w, "Machine: %s.\n", strings.TrimSuffix(machine, ";"))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| target | goal | baseline (same run) | flightcache | ratio | result | notes |")
	fmt.Fprintln(w, "|---|---|---|---|---:|---|---|")
	for _, r := range rows {
		ratio := "–"
		if !math.IsNaN(r.ratio) {
			ratio = fmt.Sprintf("%.2f× %s", r.ratio, r.ratioOf)
		}
		result := r.status.String()
		if r.status != notMeasured {
			result = "**" + result + "**"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n",
			cell(r.target), cell(r.goal), cell(r.baseline), cell(r.measured), ratio, result, cell(r.note))
	}
}

// cell escapes s for a Markdown table cell; "" is shown as "–".
func cell(s string) string {
	if s == "" {
		return "–"
	}
	return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ")
}
