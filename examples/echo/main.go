// Command echo is a small echo v4 service with a slow endpoint cached by
// flightcache. Run several instances on one Redis, behind one host name
// (the Host header is part of the cache key), and each article is still
// rendered once per TTL across all of them:
//
//	go run ./examples/echo -listen 127.0.0.1:8081 -redis 127.0.0.1:6379
//	curl -i http://127.0.0.1:8081/articles/hello   # X-Cache: MISS, slow
//	curl -i http://127.0.0.1:8081/articles/hello   # X-Cache: HIT, fast
package main

import (
	"flag"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/echomw"
	"github.com/flightcache/flightcache/examples/internal/app"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8081", "address to serve on")
	redisAddr := flag.String("redis", "", "Redis host:port or URL (default $REDIS_URL; none: in-process store)")
	delay := flag.Duration("delay", 300*time.Millisecond, "latency of the slow article endpoint")
	ttl := flag.Duration("ttl", time.Minute, "how long articles stay cached")
	name := flag.String("name", "", "instance name shown in responses (default: the listen address)")
	namespace := flag.String("namespace", "example-echo", "cache key namespace in Redis")
	flag.Parse()
	if *name == "" {
		*name = *listen
	}

	c, closeStore := app.NewCache("echo "+*name, *redisAddr, core.WithNamespace(*namespace))
	defer closeStore()

	e := echo.New()
	e.Use(middleware.Recover())
	e.Use(echomw.CacheWithConfig(echomw.Config{
		// Health checks skip the cache altogether: no lookup, no header.
		Skipper: func(ec echo.Context) bool { return ec.Path() == "/healthz" },
		Cache:   c,
		Options: []core.PolicyOption{core.PerRoute(map[string][]core.PolicyOption{
			"/articles/:slug": {core.TTL(*ttl), core.IgnoreQuery("utm_source", "utm_medium")},
			"/stats":          {core.NoCache()},
		})},
	}))

	var originCalls atomic.Int64
	e.GET("/articles/:slug", func(ec echo.Context) error {
		n := originCalls.Add(1)
		select {
		case <-time.After(*delay): // the expensive part: a slow query, a remote call
		case <-ec.Request().Context().Done():
			return ec.Request().Context().Err()
		}
		if ec.Param("slug") == "missing" {
			return echo.NewHTTPError(http.StatusNotFound, "no such article") // errors are never cached
		}
		return ec.JSON(http.StatusOK, map[string]any{
			"slug": ec.Param("slug"), "rendered_by": *name, "origin_call": n,
			"rendered_at": time.Now().Format(time.RFC3339Nano),
		})
	})
	e.GET("/healthz", func(ec echo.Context) error {
		return ec.String(http.StatusOK, "ok\n")
	})
	e.GET("/stats", func(ec echo.Context) error {
		return ec.JSON(http.StatusOK, app.Stats(c, originCalls.Load()))
	})

	// An echo instance is an http.Handler; serving it directly keeps the
	// same graceful shutdown as the other examples.
	app.Serve("echo "+*name, *listen, "/articles/hello", app.Instrument("echo", e))
}
