// Command peer is the comparison point for flightcache's benchmarks: one
// slow gin endpoint cached by github.com/chenyahui/gin-cache v1.10.0 on its
// Redis store, behind the same contract as the flightcache servers the
// stampede harness runs:
//
//	go run ./bench/peer -listen 127.0.0.1:8091 -redis 127.0.0.1:6379 -run r1 -origin-delay 200ms
//
// GET /item/:id is cached for one minute under its request URI. Its origin
// sleeps -origin-delay, counts itself with INCR flightcache-bench:{RUN}:calls
// and answers "call <n> for <path>" padded to exactly 2 KiB, so a client can
// tell which origin call produced the bytes it got. GET /healthz answers 200
// once Redis has answered. SIGINT or SIGTERM stops the server after the
// requests in flight.
//
// gin-cache protects an expiring key with a singleflight group inside each
// middleware instance, so each process calls the origin once per herd;
// nothing coordinates processes, and its store writes with a plain SET, so
// the last process to finish decides what Redis holds.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
	"time"

	cache "github.com/chenyahui/gin-cache"
	"github.com/chenyahui/gin-cache/persist"
	"github.com/gin-gonic/gin"
	redisv8 "github.com/go-redis/redis/v8"

	"github.com/flightcache/flightcache/bench/internal/benchserver"
)

// bodySize is the size of every origin response, padding included.
const bodySize = 2048

// itemTTL is how long an item stays cached, for both caches compared.
const itemTTL = time.Minute

func main() {
	listen := flag.String("listen", "127.0.0.1:8091", "address to serve on")
	redisAddr := flag.String("redis", "", "Redis host:port (required)")
	runID := flag.String("run", "", "run ID naming this run's keys in Redis (required)")
	originDelay := flag.Duration("origin-delay", 200*time.Millisecond, "latency of the origin handler")
	flag.Parse()
	if *redisAddr == "" || *runID == "" {
		fmt.Fprintln(os.Stderr, "peer: -redis and -run are required")
		flag.Usage()
		os.Exit(2)
	}

	rdb := redisv8.NewClient(&redisv8.Options{Addr: *redisAddr})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err := rdb.Ping(ctx).Err()
	cancel()
	if err != nil {
		log.Fatalf("peer: Redis at %s: %v", *redisAddr, err)
	}

	if os.Getenv(gin.EnvGinMode) == "" {
		gin.SetMode(gin.ReleaseMode)
	}
	calls := callsKey(*runID)
	count := func(ctx context.Context) (int64, error) { return rdb.Incr(ctx, calls).Result() }
	r := newEngine(ginCache(persist.NewRedisStore(rdb), *runID), origin(*originDelay, count))
	benchserver.Serve("peer (gin-cache)", *listen, r)
}

// callsKey is the Redis counter of origin calls of the run runID, shared by
// every server of the run.
func callsKey(runID string) string { return "flightcache-bench:{" + runID + "}:calls" }

// ginCache returns gin-cache's middleware as its README configures it for
// Redis: keyed by request URI, here under a prefix that keeps runs apart.
func ginCache(store persist.CacheStore, runID string) gin.HandlerFunc {
	return cache.CacheByRequestURI(store, itemTTL, cache.WithPrefixKey("flightcache-bench:{"+runID+"}:gin-cache:"))
}

// newEngine returns the benchmarked application: GET /item/:id through
// cacheMW to originHandler, and GET /healthz uncached.
func newEngine(cacheMW, originHandler gin.HandlerFunc) *gin.Engine {
	r := gin.New()
	r.Use(gin.Recovery())
	r.GET("/item/:id", cacheMW, originHandler)
	r.GET("/healthz", func(gc *gin.Context) { gc.String(http.StatusOK, "ok") })
	return r
}

// origin returns the slow handler both caches sit in front of. It numbers
// its calls with count, waits delay (or until the request ends: 503, which
// neither cache stores) and answers with [body].
func origin(delay time.Duration, count func(context.Context) (int64, error)) gin.HandlerFunc {
	return func(gc *gin.Context) {
		ctx := gc.Request.Context()
		n, err := count(ctx)
		if err != nil {
			gc.String(http.StatusInternalServerError, "count origin call: %v", err)
			return
		}
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C: // the expensive part: a slow query, a remote call
		case <-ctx.Done():
			gc.AbortWithStatus(http.StatusServiceUnavailable)
			return
		}
		gc.Data(http.StatusOK, "text/plain; charset=utf-8", body(n, gc.Request.URL.Path))
	}
}

// body returns "call <n> for <path>" padded with spaces to bodySize bytes
// (cut to bodySize if a path is absurdly long).
func body(n int64, path string) []byte {
	s := fmt.Sprintf("call %d for %s", n, path)
	if len(s) >= bodySize {
		return []byte(s[:bodySize])
	}
	return []byte(s + strings.Repeat(" ", bodySize-len(s)))
}
