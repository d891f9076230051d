package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/flightcache/flightcache/bench/internal/benchserver"
	"github.com/flightcache/flightcache/bench/internal/report"
)

// The expiry mode (-expiry) measures what happens when hot entries expire
// under steady load: P flightcache processes on one Redis serve -keys hot
// keys with a short TTL, an open-loop load generator sends a fixed rate of
// requests spread uniformly over the keys and the processes, and it
// reports, for flightcache as configured by default and with early
// refresh (core.EarlyRefresh) on:
//
//   - waited: requests answered by a fill (Cache-Status fwd=uri-miss:
//     they led or joined a fill, here or in another process), that is,
//     that waited for an origin call; and slow: requests that took at
//     least half the origin delay, whatever the reason;
//   - origin calls per key per TTL: calls counted in Redis during the
//     measured run, over keys x duration / TTL (1 is one call per key per
//     lifetime for the whole fleet);
//   - p50, p99, p99.9 and max latency of every request, which spans every
//     expiry boundary, beside the p99 of the hits alone.
//
//	go run ./bench/stampede -expiry -redis 127.0.0.1:6379 -processes 4 -duration 60s

// expiryOptions is what an expiry run measures.
type expiryOptions struct {
	processes   int
	keys        int
	ttl         time.Duration
	duration    time.Duration
	rate        int // requests per second, all processes together
	workers     int
	early       float64 // the EarlyRefresh factor of the early-refresh run
	originDelay time.Duration
	timeout     time.Duration
}

func expiryFlags(fs *flag.FlagSet) *expiryOptions {
	o := &expiryOptions{}
	fs.IntVar(&o.keys, "keys", 100, "-expiry: hot keys")
	fs.DurationVar(&o.ttl, "ttl", 2*time.Second, "-expiry: the servers' TTL")
	fs.DurationVar(&o.duration, "duration", 60*time.Second, "-expiry: length of each measured run")
	fs.IntVar(&o.rate, "rate", 1000, "-expiry: requests per second, all processes together")
	fs.IntVar(&o.workers, "workers", 64, "-expiry: concurrent client workers (keep-alive connections)")
	fs.Float64Var(&o.early, "early-refresh", 2, "-expiry: the EarlyRefresh factor of the early-refresh run")
	return o
}

// runExpiry runs the expiry mode: the default fleet, then the fleet with
// early refresh, each fresh.
func runExpiry(ctx context.Context, o options, e expiryOptions, smoke bool, out string, progress io.Writer) int {
	if smoke {
		e = smokeExpiry(e)
	}
	results, err := benchExpiry(ctx, o, e, progress)
	if len(results) > 0 {
		printExpiry(os.Stdout, results)
		if out != "" {
			b, _ := json.MarshalIndent(results, "", "  ")
			if werr := os.WriteFile(out, append(b, '\n'), 0o644); werr != nil {
				fmt.Fprintln(os.Stderr, "stampede:", werr)
				return 1
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "stampede:", err)
		return 1
	}
	if smoke {
		// The smoke asserts what cannot depend on timing: no errors, and
		// early refresh running at all.
		for _, r := range results {
			if r.Errors > 0 {
				fmt.Fprintf(os.Stderr, "stampede: expiry smoke: %s had %d errors\n", r.Strategy, r.Errors)
				return 1
			}
		}
		if len(results) != 2 || results[1].Stats["early_refreshes"] == 0 {
			fmt.Fprintln(os.Stderr, "stampede: expiry smoke: the early-refresh fleet refreshed nothing early")
			return 1
		}
		fmt.Fprintln(os.Stderr, "stampede: expiry smoke: ok")
	}
	return 0
}

// smokeExpiry is e cut down to the smoke: 2 processes, 10 keys, 3 s of
// load per fleet.
func smokeExpiry(e expiryOptions) expiryOptions {
	e.processes, e.keys, e.duration, e.rate, e.workers = 2, 10, 3*time.Second, 200, 16
	return e
}

func benchExpiry(ctx context.Context, o options, e expiryOptions, progress io.Writer) ([]report.Expiry, error) {
	rdb := benchserver.NewRedisClient(o.redis)
	defer rdb.Close()
	work, logDir, err := workDirs(o, "flightcache-expiry-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	server := o.serverBinary
	if server == "" {
		if server, err = buildServer(ctx, work); err != nil {
			return nil, err
		}
	}
	base := append([]string{"-strategy", "flightcache", "-ttl", e.ttl.String()}, o.serverArgs...)
	runs := []strategy{
		{name: "flightcache", binary: server, args: base},
		{name: "flightcache+early", binary: server, args: append(slices.Clone(base), "-early-refresh", strconv.FormatFloat(e.early, 'g', -1, 64))},
	}
	runID := strconv.FormatInt(time.Now().UnixNano(), 36)
	var results []report.Expiry
	for _, s := range runs {
		cfg := benchserver.Config{Redis: o.redis, Run: fmt.Sprintf("%s-exp-%d", runID, len(results)), OriginDelay: o.originDelay}
		r, err := expiryFleet(ctx, s, cfg, e, o.timeout, logDir)
		if err != nil {
			return results, fmt.Errorf("%s: %w", s.name, err)
		}
		fmt.Fprintf(progress, "%-18s P=%d: waited: %d of %d requests (%.2f%%), %.2f origin calls per key per TTL, p99 %.1fms (hits %.1fms), %d errors\n",
			r.Strategy, r.Processes, r.Waited, r.Requests, 100*float64(r.Waited)/float64(max(r.Requests, 1)), r.CallsPerKeyPerTTL, r.P99MS, r.HitP99MS, r.Errors)
		results = append(results, r)
	}
	return results, nil
}

// sample is one request of the load.
type sample struct {
	latency time.Duration
	waited  bool // answered by a fill
	hit     bool
	err     bool
}

func expiryFleet(ctx context.Context, s strategy, cfg benchserver.Config, e expiryOptions, timeout time.Duration, logDir string) (report.Expiry, error) {
	rdb := benchserver.NewRedisClient(cfg.Redis)
	defer rdb.Close()
	f, err := startFleet(ctx, s, e.processes, cfg, logDir)
	if err != nil {
		return report.Expiry{}, err
	}
	defer rdb.Del(context.WithoutCancel(ctx), benchserver.CallsKey(cfg.Run))
	defer f.stop()

	transport := &http.Transport{MaxIdleConnsPerHost: e.workers, DisableCompression: true}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: timeout}
	url := func(p, k int) string {
		return f.urls[p] + benchserver.ItemPrefix + cfg.Run + "-k" + strconv.Itoa(k)
	}
	// Fill every key, and ask every process for it, before measuring.
	var failed atomic.Int64
	var warm sync.WaitGroup
	for k := range e.keys {
		warm.Go(func() {
			for p := range f.urls {
				if sm := getSample(ctx, client, url(p, k)); sm.err {
					failed.Add(1)
				}
			}
		})
	}
	warm.Wait()
	if n := failed.Load(); n > 0 {
		return report.Expiry{}, fmt.Errorf("%d warm-up requests failed", n)
	}
	before, err := originCalls(ctx, rdb, cfg.Run)
	if err != nil {
		return report.Expiry{}, err
	}

	jobs := make(chan string, e.workers*4)
	samples := make([][]sample, e.workers)
	var wg sync.WaitGroup
	for w := range e.workers {
		wg.Go(func() {
			for u := range jobs {
				samples[w] = append(samples[w], getSample(ctx, client, u))
			}
		})
	}
	// Open loop: the schedule does not wait for slow answers (a full
	// queue does, and shows as latency of the requests behind it).
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	sent := 0
	rng := rand.New(rand.NewPCG(1, 2))
	for ctx.Err() == nil {
		now := <-tick.C
		elapsed := now.Sub(start)
		if elapsed >= e.duration {
			break
		}
		for due := int(elapsed.Seconds() * float64(e.rate)); sent < due; sent++ {
			jobs <- url(rng.IntN(len(f.urls)), rng.IntN(e.keys))
		}
	}
	tick.Stop()
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start)
	after, err := originCalls(ctx, rdb, cfg.Run)
	if err != nil {
		return report.Expiry{}, err
	}
	if ctx.Err() != nil {
		return report.Expiry{}, ctx.Err()
	}

	r := report.Expiry{
		Strategy: s.name, Processes: e.processes, Keys: e.keys, TTLMS: ms(e.ttl), DurationS: e.duration.Seconds(),
		OriginCalls: after - before,
	}
	r.CallsPerKeyPerTTL = float64(r.OriginCalls) / (float64(e.keys) * elapsed.Seconds() / e.ttl.Seconds())
	var all, hits []time.Duration
	for _, ws := range samples {
		for _, sm := range ws {
			r.Requests++
			switch {
			case sm.err:
				r.Errors++
				continue
			case sm.waited:
				r.Waited++
			case sm.hit:
				hits = append(hits, sm.latency)
			}
			if sm.latency >= cfg.OriginDelay/2 {
				r.Slow++
			}
			all = append(all, sm.latency)
		}
	}
	slices.Sort(all)
	slices.Sort(hits)
	r.P50MS, r.P99MS, r.MaxMS = ms(quantile(all, 0.5)), ms(quantile(all, 0.99)), ms(quantile(all, 1))
	r.P999MS, r.HitP99MS = ms(quantile(all, 0.999)), ms(quantile(hits, 0.99))
	r.Stats = fleetStats(ctx, f)
	return r, nil
}

// getSample sends one GET and notes how it was answered.
func getSample(ctx context.Context, client *http.Client, url string) sample {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return sample{err: true}
	}
	req.Host = publicHost // one key per item across the fleet, as behind a load balancer
	began := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return sample{err: true}
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	sm := sample{latency: time.Since(began), err: err != nil || resp.StatusCode != http.StatusOK}
	status := resp.Header.Get("Cache-Status")
	sm.waited = strings.Contains(status, "fwd=uri-miss")
	sm.hit = resp.Header.Get("X-Cache") == "HIT" && !sm.waited
	return sm
}

// quantile returns the q-quantile (0 < q <= 1) of sorted, 0 if empty.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// fleetStats sums the cache counters of every process of f.
func fleetStats(ctx context.Context, f *fleet) map[string]int64 {
	sum := map[string]int64{}
	for _, u := range f.urls {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u+benchserver.StatsPath, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			continue
		}
		var m map[string]int64
		err = json.NewDecoder(resp.Body).Decode(&m)
		resp.Body.Close()
		if err != nil {
			continue
		}
		for k, v := range m {
			sum[k] += v
		}
	}
	return sum
}

func printExpiry(w io.Writer, results []report.Expiry) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "strategy\tP\tkeys\tTTL\twaited\tslow\terrors\tcalls/key/TTL\tp50 ms\tp99 ms\tp99.9 ms\tmax ms\thit p99 ms\tearly refreshes\theld\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0fms\t%d of %d\t%d\t%d\t%.3f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%d\t%d\t\n",
			r.Strategy, r.Processes, r.Keys, r.TTLMS, r.Waited, r.Requests, r.Slow, r.Errors, r.CallsPerKeyPerTTL,
			r.P50MS, r.P99MS, r.P999MS, r.MaxMS, r.HitP99MS, r.Stats["early_refreshes"], r.Stats["held_refreshes"])
	}
	tw.Flush()
}

var errExpiryFlags = errors.New("-expiry: want positive -keys, -ttl, -duration, -rate, -workers and -early-refresh, and one -processes count")
