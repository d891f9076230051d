package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flightcache/flightcache/bench/internal/benchserver"
	"github.com/flightcache/flightcache/bench/internal/report"
)

// publicHost is the Host header of every request, as a load balancer in
// front of the fleet forwards it: caches keyed on the host share entries.
const publicHost = "bench.example"

// outcome is what one client of a herd got.
type outcome struct {
	status int
	body   string
	err    error
	done   time.Time // when the last body byte arrived
}

// round is one herd's result.
type round struct {
	originCalls   int64
	cacheErrors   int64 // absorbed store errors, if reportsErrors
	reportsErrors bool
	released      time.Time // when the requests were let go
	outcomes      []outcome
}

// measure runs one cell: o.rounds herds of clients concurrent GETs, each
// round for a cold item of its own (itemPrefix-r<i>), spread over the
// fleet and counted by the origins at benchserver.CallsKey(f.run).
func measure(ctx context.Context, rdb *redis.Client, f *fleet, s strategy, itemPrefix string, clients int, o options) (report.Cell, error) {
	var rounds []round
	for i := range o.rounds {
		r, err := measureRound(ctx, rdb, f, fmt.Sprintf("%s-r%d", itemPrefix, i), clients, o.timeout)
		if err != nil {
			return report.Cell{}, err
		}
		rounds = append(rounds, r)
	}
	c := summarize(rounds, o.originDelay)
	c.Strategy, c.Processes, c.Clients = s.name, len(f.urls), clients
	return c, nil
}

func measureRound(ctx context.Context, rdb *redis.Client, f *fleet, item string, clients int, timeout time.Duration) (round, error) {
	before, err := originCalls(ctx, rdb, f.run)
	if err != nil {
		return round{}, err
	}
	errorsBefore, reports := cacheErrors(ctx, f)
	released, outcomes := herd(ctx, f.urls, benchserver.ItemPrefix+item, clients, timeout)
	if err := ctx.Err(); err != nil {
		return round{}, err
	}
	after, err := originCalls(ctx, rdb, f.run)
	if err != nil {
		return round{}, err
	}
	errorsAfter, reportsAfter := cacheErrors(ctx, f)
	return round{
		originCalls: after - before, released: released, outcomes: outcomes,
		cacheErrors: errorsAfter - errorsBefore, reportsErrors: reports && reportsAfter,
	}, nil
}

// cacheErrors sums the store errors the fleet's caches report at
// benchserver.StatsPath; ok is false unless every server reports them.
func cacheErrors(ctx context.Context, f *fleet) (total int64, ok bool) {
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	for _, u := range f.urls {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u+benchserver.StatsPath, nil)
		if err != nil {
			return 0, false
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, false
		}
		var stats struct {
			Errors *int64 `json:"errors"`
		}
		err = json.NewDecoder(resp.Body).Decode(&stats)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil || stats.Errors == nil {
			return 0, false
		}
		total += *stats.Errors
	}
	return total, true
}

// herd gives each client its own connection to its server (client i uses
// urls[i%len(urls)]), opened ahead with a /healthz request as a load
// balancer's pool would be, then releases every request for path at once.
// It returns the release time and every client's outcome.
func herd(ctx context.Context, urls []string, path string, clients int, timeout time.Duration) (time.Time, []outcome) {
	outcomes := make([]outcome, clients)
	start := make(chan struct{})
	var ready, done sync.WaitGroup
	ready.Add(clients)
	for i := range clients {
		done.Go(func() {
			// One transport per client: exactly one warm connection each,
			// so the herd measures the cache and not connection setup.
			client := &http.Client{Timeout: timeout, Transport: &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}}
			defer client.CloseIdleConnections()
			base := urls[i%len(urls)]
			get(ctx, client, base+"/healthz") // a failure here shows in the herd request
			ready.Done()
			select {
			case <-start:
			case <-ctx.Done():
				outcomes[i] = outcome{err: ctx.Err(), done: time.Now()}
				return
			}
			outcomes[i] = get(ctx, client, base+path)
		})
	}
	ready.Wait()
	released := time.Now()
	close(start)
	done.Wait()
	return released, outcomes
}

// get sends one GET and reads the whole response.
func get(ctx context.Context, client *http.Client, url string) outcome {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return outcome{err: err, done: time.Now()}
	}
	req.Host = publicHost
	resp, err := client.Do(req)
	if err != nil {
		return outcome{err: err, done: time.Now()}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return outcome{status: resp.StatusCode, body: string(b), err: err, done: time.Now()}
}

// summarize counts each round's origin calls and distinct bodies, the
// errors, and the extra wait of the successful requests: latency from
// their round's release minus the origin delay.
func summarize(rounds []round, originDelay time.Duration) report.Cell {
	c := report.Cell{Rounds: len(rounds)}
	var extra []time.Duration
	var cacheErrors int64
	reported := len(rounds) > 0
	for _, r := range rounds {
		cacheErrors += r.cacheErrors
		reported = reported && r.reportsErrors
		bodies := map[string]bool{}
		for _, o := range r.outcomes {
			switch {
			case o.err != nil:
				c.TransportErrors++
			case o.status != http.StatusOK:
				c.StatusErrors++
			default:
				bodies[o.body] = true
				extra = append(extra, o.done.Sub(r.released)-originDelay)
			}
		}
		c.OriginCallsPerRound = append(c.OriginCallsPerRound, r.originCalls)
		c.OriginCalls = max(c.OriginCalls, r.originCalls)
		c.DistinctBodies = max(c.DistinctBodies, len(bodies))
	}
	if reported {
		c.CacheErrors = &cacheErrors
	}
	if len(extra) > 0 {
		slices.Sort(extra)
		c.ExtraWaitP50MS = ms(percentile(extra, 50))
		c.ExtraWaitP99MS = ms(percentile(extra, 99))
		c.ExtraWaitMaxMS = ms(extra[len(extra)-1])
	}
	return c
}

// percentile returns the nearest-rank p-th percentile of sorted, which
// must not be empty.
func percentile(sorted []time.Duration, p int) time.Duration {
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 * n)
	return sorted[max(rank, 1)-1]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// originCalls reads the run's origin call counter.
func originCalls(ctx context.Context, rdb *redis.Client, run string) (int64, error) {
	n, err := rdb.Get(ctx, benchserver.CallsKey(run)).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read origin calls of %s: %w", run, err)
	}
	return n, nil
}
