// Command gin is a small gin service with a slow endpoint cached by
// flightcache. Run several instances against one Redis and each product is
// still rendered once per TTL across all of them:
//
//	go run ./examples/gin -listen 127.0.0.1:8080 -redis 127.0.0.1:6379
//	curl -i http://127.0.0.1:8080/products/1   # X-Cache: MISS, slow
//	curl -i http://127.0.0.1:8080/products/1   # X-Cache: HIT, fast
package main

import (
	"flag"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/examples/internal/app"
	"github.com/flightcache/flightcache/ginmw"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve on")
	redisAddr := flag.String("redis", "", "Redis host:port or URL (default $REDIS_URL; none: in-process store)")
	delay := flag.Duration("delay", 300*time.Millisecond, "latency of the slow product endpoint")
	ttl := flag.Duration("ttl", time.Minute, "how long products stay cached")
	name := flag.String("name", "", "instance name shown in responses (default: the listen address)")
	namespace := flag.String("namespace", "example-gin", "cache key namespace in Redis")
	noCache := flag.Bool("no-cache", false, "serve without flightcache (the baseline for load tests)")
	flag.Parse()
	if *name == "" {
		*name = *listen
	}

	if os.Getenv(gin.EnvGinMode) == "" {
		gin.SetMode(gin.ReleaseMode)
	}
	r := gin.New()
	// The logger sits before the cache, so it logs hits with the status
	// they were replayed with; Recovery turns an origin panic into a 500
	// for every request that waited on it.
	r.Use(gin.Logger(), gin.Recovery())
	var c *core.Cache
	if !*noCache {
		var closeStore func()
		c, closeStore = app.NewCache("gin "+*name, *redisAddr, core.WithNamespace(*namespace))
		defer closeStore()
		r.Use(ginmw.Cache(c, core.PerRoute(map[string][]core.PolicyOption{
			"/products/:id": {core.TTL(*ttl), core.IgnoreQuery("utm_source", "utm_medium")},
			"/stats":        {core.NoCache()},
			"/admin/*":      {core.NoCache()},
		})))
	}

	var originCalls atomic.Int64
	r.GET("/products/:id", func(gc *gin.Context) {
		n := originCalls.Add(1)
		select {
		case <-time.After(*delay): // the expensive part: a slow query, a remote call
		case <-gc.Request.Context().Done():
			gc.AbortWithStatus(http.StatusServiceUnavailable)
			return
		}
		if id, err := strconv.Atoi(gc.Param("id")); err != nil || id <= 0 {
			gc.JSON(http.StatusNotFound, gin.H{"error": "no such product"}) // a 404 is not cached
			return
		}
		gc.JSON(http.StatusOK, gin.H{
			"id": gc.Param("id"), "rendered_by": *name, "origin_call": n,
			"rendered_at": time.Now().Format(time.RFC3339Nano),
		})
	})
	r.GET("/admin/health", func(gc *gin.Context) {
		gc.JSON(http.StatusOK, gin.H{"status": "ok", "instance": *name})
	})
	r.GET("/stats", func(gc *gin.Context) {
		if c == nil {
			gc.JSON(http.StatusOK, gin.H{"origin_calls": originCalls.Load()})
			return
		}
		gc.JSON(http.StatusOK, app.Stats(c, originCalls.Load()))
	})

	app.Serve("gin "+*name, *listen, "/products/1", app.Instrument("gin", r))
}
