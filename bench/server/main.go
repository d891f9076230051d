// Command server is one process of the stampede benchmark's fleet
// (bench/stampede): the benchmark origin behind one caching
// strategy, serving the contract of package benchserver.
//
//	server -listen 127.0.0.1:9000 -redis 127.0.0.1:6379 -run r1 -origin-delay 200ms -strategy flightcache
//
// Strategies:
//
//   - none: every request calls the origin (the origin of the proxy
//     comparison, bench/proxies, with -cache-control);
//   - singleflight: golang.org/x/sync/singleflight collapses this
//     process's concurrent requests for one path; nothing is stored or shared;
//   - polling: flightcache on Redis with the fill lock, but without pub/sub
//     wake-ups: requests waiting on another process's fill poll the store;
//   - flightcache: flightcache on Redis, as configured by default.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/flightcache/flightcache/bench/internal/benchserver"
	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/nethttpmw"
)

// strategies lists the values -strategy accepts.
var strategies = []string{"none", "singleflight", "polling", "flightcache"}

func main() {
	var cfg benchserver.Config
	cfg.RegisterFlags(flag.CommandLine)
	strategy := flag.String("strategy", "flightcache", "caching in front of the origin: none, singleflight, polling or flightcache")
	pollInterval := flag.Duration("poll-interval", 0, "flightcache/polling: how often waiters poll (0: the library default, 250ms)")
	storeTimeout := flag.Duration("store-timeout", 0, "flightcache/polling: bound on each Redis call (0: the library default, 250ms)")
	ttl := flag.Duration("ttl", time.Minute, "flightcache/polling: how long a stored response stays fresh")
	earlyRefresh := flag.Float64("early-refresh", 0, "flightcache/polling: core.EarlyRefresh factor (0: off)")
	ttlJitter := flag.Float64("ttl-jitter", 0, "flightcache/polling: core.TTLJitter fraction (0: none)")
	cacheControl := flag.String("cache-control", "", "none: Cache-Control the origin sends with every body, for a proxy in front (default: none)")
	flag.Parse()
	if err := cfg.Check(); err != nil {
		log.Fatal(err)
	}

	rdb := benchserver.NewRedisClient(cfg.Redis)
	defer rdb.Close()
	origin := benchserver.NewOrigin(rdb, cfg.Run, cfg.OriginDelay)
	who := fmt.Sprintf("bench server %s (%s)", cfg.Listen, *strategy)

	mux := http.NewServeMux()
	var items http.Handler
	switch *strategy {
	case "none":
		origin.CacheControl = *cacheControl
		items = origin
	case "singleflight":
		items = collapse(origin)
	case "polling", "flightcache":
		var opts []core.Option
		if *pollInterval > 0 {
			opts = append(opts, core.WithPollInterval(*pollInterval))
		}
		if *storeTimeout > 0 {
			opts = append(opts, core.WithStoreTimeout(*storeTimeout))
		}
		if *ttl <= 0 || *earlyRefresh < 0 || *ttlJitter < 0 || *ttlJitter >= 1 {
			log.Fatal("want a positive -ttl, -early-refresh at least 0 and -ttl-jitter in [0, 1)")
		}
		opts = append(opts, core.TTL(*ttl), core.TTLJitter(*ttlJitter))
		if *earlyRefresh > 0 {
			opts = append(opts, core.EarlyRefresh(*earlyRefresh))
		}
		c, closeCache := cached(who, cfg, *strategy == "polling", opts...)
		defer closeCache()
		items = nethttpmw.Wrap(origin, c)
		mux.HandleFunc("GET "+benchserver.StatsPath, func(w http.ResponseWriter, r *http.Request) {
			stats := benchserver.CacheStats(c) // origin calls are counted in Redis, by the origins
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(stats)
		})
	default:
		log.Fatalf("-strategy %q: want one of %v", *strategy, strategies)
	}

	mux.HandleFunc("GET /healthz", benchserver.Healthz)
	mux.Handle("GET "+benchserver.ItemPrefix+"{id}", items)
	benchserver.Serve(who, cfg.Listen, mux)
}

// collapse runs one origin call per path at a time in this process and
// gives its body to every request that asked meanwhile.
func collapse(origin *benchserver.Origin) http.Handler {
	var g singleflight.Group
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		item := r.PathValue("id")
		// The shared call must outlive the request that started it, as
		// others wait on it.
		ctx := context.WithoutCancel(r.Context())
		v, err, _ := g.Do(item, func() (any, error) { return origin.Render(ctx, item) })
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		benchserver.WriteBody(w, v.([]byte))
	})
}

// cached returns flightcache on Redis, under a namespace of the run's own;
// without wake-ups, waiters poll. It also returns a function that closes
// the store and reports the errors the cache absorbed.
func cached(who string, cfg benchserver.Config, poll bool, opts ...core.Option) (*core.Cache, func()) {
	// A client of its own, apart from the origin's counting one, as a
	// cache in front of an unrelated origin has.
	rdb := benchserver.NewRedisClient(cfg.Redis)
	rs := core.NewRedisStore(rdb)
	closeStore := func() { rs.Close(); rdb.Close() }
	var store core.Store = rs
	if poll {
		store = noWakeStore{store}
	}
	var absorbed atomic.Int64
	opts = append([]core.Option{core.TTL(time.Minute)}, opts...) // the caller's TTL, if any, wins
	opts = append(opts,
		core.WithNamespace("fcbench-"+cfg.Run),
		core.WithObserver(func(err error) {
			if absorbed.Add(1) <= 5 { // the first few say what went wrong; the count says how often
				log.Printf("%s: cache (serving uncached): %v", who, err)
			}
		}))
	return core.New(store, opts...), func() {
		closeStore()
		if n := absorbed.Load(); n > 0 {
			fmt.Fprintf(os.Stderr, "%s: %d cache errors absorbed\n", who, n)
		}
	}
}

// noWakeStore drops fill notifications: requests waiting on another
// process's fill find out only by polling the store.
type noWakeStore struct{ core.Store }

// Subscribe returns a channel that never receives.
func (noWakeStore) Subscribe(context.Context, string) (<-chan struct{}, func(), error) {
	return nil, func() {}, nil
}
