package main

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testdata holds short excerpts of real results, in the formats
// scripts/bench.sh writes them:
//
//   - hit.txt: ginmw's BenchmarkHit and BenchmarkHitParallel (three runs
//     of each path) and BenchmarkHitBodySize; echomw's BenchmarkHit bare
//     only (no cached-l1, no HitParallel) and BenchmarkHitBodySize with
//     the 64 KiB runs edited to 23 allocations, a regression; no
//     nethttpmw;
//   - hithttp.json: bench/hithttp -rounds 2 -duration 500ms -out;
//   - expiry.json: bench/stampede -expiry -smoke -out (server_stats cut);
//   - takeover.txt: go test -v -count 3 of TestFillerKilledMidFetch, one
//     run's time edited to 1.702s;
//   - proxies.json: bench/proxies without fc-embedded, two turns and two
//     herds each;
//   - stampede.json: singleflight and flightcache at 2×100 and 8×1000.
func TestScorecard(t *testing.T) {
	in, err := readInputs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	rows := scorecard(in)
	byLabel := map[string]row{}
	for _, r := range rows {
		if _, dup := byLabel[r.label]; dup {
			t.Errorf("two rows labelled %q", r.label)
		}
		byLabel[r.label] = r
	}
	nan := math.NaN()
	tests := []struct {
		label  string
		ratio  float64 // NaN: none
		status status
	}{
		// Medians: bare 213.6 ns, cached-l1 2892 ns.
		{"local hit, gin Hit", 2892 / 213.6, missed},
		// bare 140.0 ns, cached-l1 1823 ns.
		{"local hit, gin HitParallel", 1823 / 140.0, missed},
		{"local hit, echo Hit", nan, notMeasured},
		{"local hit, echo HitParallel", nan, notMeasured},
		{"local hit, net/http Hit", nan, notMeasured},
		// The median of the rounds' own ratios to bare (two rounds).
		{"local hit, HTTP req/s", (0.8695882391413385 + 0.8161916784291577) / 2, missed},
		{"Redis hit, HTTP req/s", (0.6214269516658536 + 0.6117211095315545) / 2, met},
		// floor 15416 ns, cached 20892 ns.
		{"Redis hit, gin HitParallel", 20892.0 / 15416, missed},
		{"Redis hit, echo HitParallel", nan, notMeasured},
		{"allocs at 64KiB, gin", 1, met},
		{"allocs at 64KiB, echo", 23.0 / 22, missed},
		{"allocs at 64KiB, net/http", nan, notMeasured},
		{"early refresh: waited", 0, met},
		{"early refresh: calls/key/TTL", 0.6665737673916616 / 0.6666542700082978, met},
		{"early refresh: p99", 1, met},
		// The slowest of 1.447, 1.702 and 1.452 s, over the old 5 s expiry.
		{"takeover after SIGKILL", 1.702 / 5, met},
		// The median of the rounds' ratios to nginx's turn of the same
		// round (two turns each in the fixture).
		{"proxy fc-redis-l1, 2 KiB", 0.6742614708401168, missed},
		{"proxy fc-redis, 2 KiB", 0.2215446887003643, missed},
		{"proxy fc-redis-l1, 64 KiB", 1.2414241717813246, met},
		{"proxy fc-redis, 64 KiB", 0.30080403030203684, missed},
		{"proxy herd, fc-redis", 1.0 / 3, met},
		{"proxy herd, fc-redis-l1", 1.0 / 3, met},
		{"cold key: origin calls", 1.0 / 8, met},
	}
	for _, tt := range tests {
		r, ok := byLabel[tt.label]
		if !ok {
			t.Errorf("no row %q", tt.label)
			continue
		}
		if r.status != tt.status {
			t.Errorf("%s: %s (%s), want %s", tt.label, r.status, r.note, tt.status)
		}
		if math.IsNaN(tt.ratio) != math.IsNaN(r.ratio) || math.Abs(r.ratio-tt.ratio) > 1e-9*tt.ratio {
			t.Errorf("%s: ratio %v, want %v", tt.label, r.ratio, tt.ratio)
		}
	}
	if got := byLabel["takeover after SIGKILL"].measured; got != "slowest 1.702s (median 1.452s)" {
		t.Errorf("takeover measured %q, want the slowest and the median run", got)
	}
	if got := byLabel["Redis hit, HTTP req/s"].note; !strings.HasPrefix(got, "floor (bare + one go-redis GET) 0.54× bare") {
		t.Errorf("Redis hit through HTTP: note %q, want the floor's ratio first", got)
	}
}

func TestRunWritesTableAndChart(t *testing.T) {
	out := t.TempDir()
	files, err := run("testdata", out)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 {
		t.Fatalf("run wrote %q, want scorecard.md and scorecard.svg", files)
	}
	md, err := os.ReadFile(filepath.Join(out, "scorecard.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"10 met, 8 missed, 7 not measured",
		"| ≥ 1× nginx | nginx 23869 req/s, p99 20.8ms | fc-redis-l1 24996 req/s, p99 25.5ms | 0.67× nginx | **missed** | median of the rounds' ratios; ratio of the medians 1.05; Varnish 0.69× nginx |",
		"| ≤ 3× bare | – | – | – | not measured | no BenchmarkHit path=bare and path=cached-l1 of github.com/flightcache/flightcache/nethttpmw in hit.txt |",
	} {
		if !bytes.Contains(md, []byte(want)) {
			t.Errorf("scorecard.md:\n%s\nwant %q", md, want)
		}
	}
	svg, err := os.ReadFile(filepath.Join(out, "scorecard.svg"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(svg, []byte("<svg")) || !bytes.Contains(svg, []byte("takeover after SIGKILL")) {
		t.Errorf("scorecard.svg is not the chart of the targets: %.200q", svg)
	}
}

// Without any input every target is there, not measured.
func TestMissingInputs(t *testing.T) {
	dir := t.TempDir()
	files, err := run(dir, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 {
		t.Errorf("run wrote %q, want scorecard.md and scorecard.svg", files)
	}
	in, err := readInputs(dir)
	if err != nil {
		t.Fatal(err)
	}
	rows := scorecard(in)
	if len(rows) != 25 {
		t.Errorf("%d rows, want 25", len(rows))
	}
	for _, r := range rows {
		if r.status != notMeasured || !strings.HasPrefix(r.note, "no ") {
			t.Errorf("%s: %s (%q), want not measured, saying which file is missing", r.label, r.status, r.note)
		}
	}
}

func TestMalformedInputs(t *testing.T) {
	tests := []struct{ name, file, content string }{
		{"hithttp JSON", hitHTTPFile, `{"median": {"bare": {"req_per_s": "fast"}}}`},
		{"truncated JSON", proxiesFile, `{"results": [`},
		{"expiry not a list", expiryFile, `{"strategy": "flightcache"}`},
		{"benchmark line", hitFile, "pkg: github.com/flightcache/flightcache/ginmw\nBenchmarkHit/path=bare-2 \t 100\t fast ns/op\n"},
		{"no takeover time", takeoverFile, "=== RUN   TestFillerKilledMidFetch\n--- PASS: TestFillerKilledMidFetch (1.53s)\n"},
		{"takeover time", takeoverFile, "    process_test.go:199: takeover soon after the filler was killed, waiters served after 1s (lease 1.5s, poll 250ms)\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, tt.file), []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := run(dir, dir); err == nil || !strings.Contains(err.Error(), tt.file) {
				t.Errorf("run with a malformed %s = %v, want an error naming it", tt.file, err)
			}
		})
	}
}

// A takeover test that failed misses the target, whatever the times of
// the runs that passed.
func TestTakeoverFailed(t *testing.T) {
	dir := t.TempDir()
	out := "=== RUN   TestFillerKilledMidFetch\n" +
		"    process_test.go:199: takeover 1.447s after the filler was killed, waiters served after 1.448s (lease 1.5s, poll 250ms)\n" +
		"--- PASS: TestFillerKilledMidFetch (1.53s)\n" +
		"=== RUN   TestFillerKilledMidFetch\n" +
		"    process_test.go:169: waiters still stuck 30s after the filler was killed\n" +
		"--- FAIL: TestFillerKilledMidFetch (31.20s)\n"
	if err := os.WriteFile(filepath.Join(dir, takeoverFile), []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	tk, err := readTakeover(filepath.Join(dir, takeoverFile))
	if err != nil {
		t.Fatal(err)
	}
	if r := takeoverRow(tk); r.status != missed || r.note != "failed runs: 1" {
		t.Errorf("takeover row %s (%q), want missed: failed runs: 1", r.status, r.note)
	}
}
