// Command stampede shows what flightcache does to a thundering herd. It
// runs several application instances, each with its own cache and Redis
// client as if they were separate processes, fires concurrent requests at a
// cold key across all of them, and compares three strategies: no cache,
// in-process singleflight only, and flightcache.
//
// Without -redis (or REDIS_URL) it starts an embedded Redis (miniredis) in
// this process, so it runs on a machine with nothing installed.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"

	"github.com/flightcache/flightcache/core"
)

func main() {
	redisAddr := flag.String("redis", "", "Redis address host:port (default: $REDIS_URL, else an embedded Redis)")
	instances := flag.Int("instances", 4, "application instances, each with its own cache and Redis client")
	clients := flag.Int("clients", 400, "concurrent requests in the herd, spread over the instances")
	originDelay := flag.Duration("origin", 200*time.Millisecond, "latency of the slow origin")
	flag.Parse()

	addr, stop, err := redisAddress(*redisAddr)
	if err != nil {
		log.Fatal(err)
	}
	defer stop()

	fmt.Printf("%d instances, %d concurrent requests on one cold key, origin latency %v, Redis %s\n\n",
		*instances, *clients, *originDelay, addr)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "strategy\torigin calls\tdistinct bodies\tp50\tp99\terrors\t")
	for _, s := range []strategy{noCache{}, &singleflightOnly{}, &flightcache{addr: addr}} {
		r := run(s, *instances, *clients, *originDelay)
		fmt.Fprintf(tw, "%s\t%d\t%d\t%v\t%v\t%d\t\n", s.name(), r.originCalls, r.distinct,
			r.p50.Round(time.Millisecond), r.p99.Round(time.Millisecond), r.errors)
	}
	tw.Flush()
}

// redisAddress returns the Redis to use, starting an embedded one if none
// was given.
func redisAddress(flagAddr string) (string, func(), error) {
	addr := flagAddr
	if addr == "" {
		addr = os.Getenv("REDIS_URL")
	}
	if addr != "" {
		if opt, err := redis.ParseURL(addr); err == nil {
			addr = opt.Addr
		}
		return addr, func() {}, nil
	}
	mr := miniredis.NewMiniRedis()
	if err := mr.StartAddr("127.0.0.1:0"); err != nil {
		return "", nil, fmt.Errorf("start embedded Redis: %w", err)
	}
	return mr.Addr(), mr.Close, nil
}

// A strategy serves one request for key on instance i.
type strategy interface {
	name() string
	setup(instances int, key string)
	get(ctx context.Context, i int, key string, origin func(context.Context) ([]byte, time.Duration, error)) ([]byte, error)
	close()
}

type noCache struct{}

func (noCache) name() string      { return "no cache" }
func (noCache) setup(int, string) {}
func (noCache) close()            {}
func (noCache) get(ctx context.Context, _ int, _ string, origin func(context.Context) ([]byte, time.Duration, error)) ([]byte, error) {
	b, _, err := origin(ctx)
	return b, err
}

type singleflightOnly struct{ groups []singleflight.Group }

func (*singleflightOnly) name() string            { return "singleflight per instance" }
func (s *singleflightOnly) setup(n int, _ string) { s.groups = make([]singleflight.Group, n) }
func (*singleflightOnly) close()                  {}
func (s *singleflightOnly) get(ctx context.Context, i int, key string, origin func(context.Context) ([]byte, time.Duration, error)) ([]byte, error) {
	v, err, _ := s.groups[i].Do(key, func() (any, error) {
		b, _, err := origin(ctx)
		return b, err
	})
	b, _ := v.([]byte)
	return b, err
}

type flightcache struct {
	addr    string
	clients []*redis.Client
	stores  []*core.RedisStore
	caches  []*core.Cache
}

func (*flightcache) name() string { return "flightcache" }

func (f *flightcache) setup(n int, _ string) {
	ns := fmt.Sprintf("stampede-%d", time.Now().UnixNano())
	for range n {
		rdb := redis.NewClient(&redis.Options{Addr: f.addr, ContextTimeoutEnabled: true})
		store := core.NewRedisStore(rdb)
		f.clients = append(f.clients, rdb)
		f.stores = append(f.stores, store)
		f.caches = append(f.caches, core.New(store, core.WithNamespace(ns), core.TTL(time.Minute)))
	}
}

func (f *flightcache) close() {
	for i := range f.stores {
		f.stores[i].Close()
		f.clients[i].Close()
	}
}

func (f *flightcache) get(ctx context.Context, i int, key string, origin func(context.Context) ([]byte, time.Duration, error)) ([]byte, error) {
	return f.caches[i].Do(ctx, key, origin)
}

type report struct {
	originCalls int64
	distinct    int
	p50, p99    time.Duration
	errors      int
}

// run releases the herd at once and measures it.
func run(s strategy, instances, clients int, delay time.Duration) report {
	const key = "/reports/monthly"
	s.setup(instances, key)
	defer s.close()
	var calls atomic.Int64
	origin := func(ctx context.Context) ([]byte, time.Duration, error) {
		n := calls.Add(1)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
		return fmt.Appendf(nil, "report rendered by origin call #%d at %s", n, time.Now().Format(time.RFC3339Nano)), 0, nil
	}

	var wg sync.WaitGroup
	start := make(chan struct{})
	bodies := make([]string, clients)
	latency := make([]time.Duration, clients)
	errs := make([]error, clients)
	for c := range clients {
		wg.Go(func() {
			<-start
			t0 := time.Now()
			b, err := s.get(context.Background(), c%instances, key, origin)
			latency[c], bodies[c], errs[c] = time.Since(t0), string(b), err
		})
	}
	close(start)
	wg.Wait()

	r := report{originCalls: calls.Load()}
	seen := map[string]bool{}
	for c := range clients {
		if errs[c] != nil {
			r.errors++
			continue
		}
		seen[bodies[c]] = true
	}
	r.distinct = len(seen)
	slices.Sort(latency)
	r.p50 = latency[len(latency)/2]
	r.p99 = latency[min(len(latency)-1, len(latency)*99/100)]
	return r
}
