package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/flightcache/flightcache/bench/internal/report"
)

// The files scorecard reads from its input directory, as scripts/bench.sh
// names them.
const (
	hitFile      = "hit.txt"       // go test -bench: BenchmarkHit, HitParallel, HitBodySize of the adapters
	hitHTTPFile  = "hithttp.json"  // bench/hithttp -out
	expiryFile   = "expiry.json"   // bench/stampede -expiry -out
	takeoverFile = "takeover.txt"  // go test -v -run '^TestFillerKilledMidFetch$' ./core
	proxiesFile  = "proxies.json"  // bench/proxies -out
	stampedeFile = "stampede.json" // bench/stampede -out
)

// inputs is what scorecard found in its input directory; a nil field is a
// file that was not there.
type inputs struct {
	hit      *report.GoBench
	hitHTTP  *report.HitHTTP
	expiry   []report.Expiry
	takeover *takeover
	proxies  *proxiesReport
	stampede *report.Stampede
}

// readInputs reads every input file in dir. A missing file is left nil; a
// file that cannot be read or parsed is an error.
func readInputs(dir string) (*inputs, error) {
	in := &inputs{}
	var errs []error
	read := func(name string, parse func(path string) error) {
		path := filepath.Join(dir, name)
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return
		}
		if err := parse(path); err != nil {
			errs = append(errs, err)
		}
	}
	read(hitFile, func(path string) (err error) { in.hit, err = readHit(path); return })
	read(hitHTTPFile, func(path string) (err error) { in.hitHTTP, err = report.ReadHitHTTP(path); return })
	read(expiryFile, func(path string) error { return readJSON(path, &in.expiry) })
	read(takeoverFile, func(path string) (err error) { in.takeover, err = readTakeover(path); return })
	read(proxiesFile, func(path string) error { in.proxies = &proxiesReport{}; return readJSON(path, in.proxies) })
	read(stampedeFile, func(path string) (err error) { in.stampede, err = report.ReadStampede(path); return })
	return in, errors.Join(errs...)
}

// readHit reads go test -bench output; a line benchfmt cannot parse makes
// it malformed.
func readHit(path string) (*report.GoBench, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	g, err := report.ReadGoBench(f, path)
	if err != nil {
		return nil, err
	}
	if g.Skipped > 0 {
		return nil, fmt.Errorf("%s: %d malformed benchmark lines", path, g.Skipped)
	}
	return g, nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

// proxiesReport is bench/proxies' Report: the fields the scorecard reads.
type proxiesReport struct {
	Results []proxyResult `json:"results"`
}

// proxyResult is one contestant of bench/proxies.
type proxyResult struct {
	Name string `json:"name"`
	Hit  []struct {
		Size      int           `json:"body_size"`
		PerSecond float64       `json:"per_second"`
		Turns     []float64     `json:"turns_per_second"` // turn i of every contestant ran in round i
		P99       time.Duration `json:"p99_ns"`
		Errors    int           `json:"errors"`
	} `json:"hit"`
	Herd []struct {
		OriginCalls int64 `json:"origin_calls"`
		Bodies      int   `json:"distinct_bodies"`
		Errors      int   `json:"errors"`
	} `json:"herd"`
}

// result returns the contestant called name, nil if p has none.
func (p *proxiesReport) result(name string) *proxyResult {
	if p == nil {
		return nil
	}
	for i := range p.Results {
		if p.Results[i].Name == name {
			return &p.Results[i]
		}
	}
	return nil
}

// perSecond returns r's hit req/s at body size, and its errors.
func (r *proxyResult) perSecond(size int) (rps float64, p99 time.Duration, errors int, ok bool) {
	if r == nil {
		return 0, 0, 0, false
	}
	for _, h := range r.Hit {
		if h.Size == size {
			return h.PerSecond, h.P99, h.Errors, true
		}
	}
	return 0, 0, 0, false
}

// vsPerRound returns the median over the rounds of r's hit req/s at body
// size over base's in the same round, as bench/proxies reports ×nginx;
// false when the turns do not pair up.
func (r *proxyResult) vsPerRound(base *proxyResult, size int) (float64, bool) {
	turns := func(p *proxyResult) []float64 {
		if p != nil {
			for _, h := range p.Hit {
				if h.Size == size {
					return h.Turns
				}
			}
		}
		return nil
	}
	got, of := turns(r), turns(base)
	if len(got) == 0 || len(got) != len(of) {
		return 0, false
	}
	ratios := make([]float64, len(got))
	for i := range got {
		if of[i] <= 0 {
			return 0, false
		}
		ratios[i] = got[i] / of[i]
	}
	return report.Median(ratios), true
}

// herd returns the most origin calls and distinct bodies of any of r's
// herd rounds, and the rounds' errors.
func (r *proxyResult) herd() (calls int64, bodies, errors int, ok bool) {
	if r == nil || len(r.Herd) == 0 {
		return 0, 0, 0, false
	}
	for _, h := range r.Herd {
		calls, bodies, errors = max(calls, h.OriginCalls), max(bodies, h.Bodies), errors+h.Errors
	}
	return calls, bodies, errors, true
}

// takeover is what TestFillerKilledMidFetch logged, run after run.
type takeover struct {
	times  []time.Duration // from the SIGKILL to a waiter's fetch, one per passing run
	lease  time.Duration   // the lock lease the test ran with
	failed int             // runs that failed
}

// takeoverLine is the test's t.Logf line.
var takeoverLine = regexp.MustCompile(`takeover (\S+) after the filler was killed, .*\(lease (\S+),`)

// readTakeover reads go test -v output of TestFillerKilledMidFetch. A file
// with neither a takeover line nor a failed run is malformed.
func readTakeover(path string) (*takeover, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	t := &takeover{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "--- FAIL: TestFillerKilledMidFetch") {
			t.failed++
		}
		m := takeoverLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		d, err := time.ParseDuration(m[1])
		if err != nil {
			return nil, fmt.Errorf("%s: takeover time %q: %w", path, m[1], err)
		}
		if t.lease, err = time.ParseDuration(m[2]); err != nil {
			return nil, fmt.Errorf("%s: lease %q: %w", path, m[2], err)
		}
		t.times = append(t.times, d)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(t.times) == 0 && t.failed == 0 {
		return nil, fmt.Errorf("%s: no takeover time logged by TestFillerKilledMidFetch, and no failed run", path)
	}
	return t, nil
}
