// Command nethttp is a small net/http service with a slow endpoint cached
// by flightcache. Run several instances against one Redis and each product
// is still rendered once per TTL across all of them:
//
//	go run ./examples/nethttp -listen 127.0.0.1:8082 -redis 127.0.0.1:6379
package main

import (
	"encoding/json"
	"flag"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/examples/internal/app"
	"github.com/flightcache/flightcache/nethttpmw"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8082", "address to serve on")
	redisAddr := flag.String("redis", "", "Redis host:port or URL (default $REDIS_URL; none: in-process store)")
	delay := flag.Duration("delay", 300*time.Millisecond, "latency of the slow product endpoint")
	ttl := flag.Duration("ttl", time.Minute, "how long product pages stay cached")
	name := flag.String("name", "", "instance name shown in responses (default: the listen address)")
	namespace := flag.String("namespace", "example-nethttp", "cache key namespace in Redis")
	storeTimeout := flag.Duration("store-timeout", 250*time.Millisecond, "bound on each Redis call before the cache serves uncached")
	flag.Parse()
	if *name == "" {
		*name = *listen
	}

	c, closeStore := app.NewCache("nethttp "+*name, *redisAddr,
		core.WithNamespace(*namespace), core.WithStoreTimeout(*storeTimeout))
	defer closeStore()

	var originCalls atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("GET /products/{id}", func(w http.ResponseWriter, r *http.Request) {
		n := originCalls.Add(1)
		select {
		case <-time.After(*delay): // the expensive part: a slow query, a remote call
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"id": r.PathValue("id"), "rendered_by": *name, "origin_call": n,
			"rendered_at": time.Now().Format(time.RFC3339Nano),
		})
	})
	mux.HandleFunc("GET /admin/stats", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(app.Stats(c, originCalls.Load()))
	})
	handler := nethttpmw.Middleware(c, core.PerRoute(map[string][]core.PolicyOption{
		"GET /products/{id}": {core.TTL(*ttl), core.KeyQuery("lang")},
		"GET /admin/*":       {core.NoCache()},
	}))(mux)

	app.Serve("nethttp "+*name, *listen, "/products/1", app.Instrument("nethttp", handler))
}
