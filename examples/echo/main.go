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
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/echomw"
	"github.com/flightcache/flightcache/examples/internal/backend"
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

	store, desc, closeStore, err := backend.Open(*redisAddr)
	if err != nil {
		log.Fatal(err)
	}
	defer closeStore()
	fmt.Fprintf(os.Stderr, "echo %s: caching in %s\n", *name, desc)
	c := core.New(store, core.WithNamespace(*namespace), core.WithObserver(func(err error) {
		log.Printf("cache (serving uncached): %v", err)
	}))

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Server.ReadHeaderTimeout = 5 * time.Second
	e.Use(middleware.Recover())
	e.Use(echomw.CacheWithConfig(echomw.Config{
		// Health checks skip the cache altogether: no lookup, no header.
		Skipper: func(ec echo.Context) bool { return ec.Path() == "/healthz" },
		Cache:   c,
		Options: []core.RouteOption{core.Routes(map[string][]core.RouteOption{
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
		s := c.Stats()
		return ec.JSON(http.StatusOK, map[string]int64{
			"origin_calls": originCalls.Load(), "hits": s.Hits.Load(), "misses": s.Misses.Load(),
			"fetches": s.Fetches.Load(), "collapsed": s.Collapsed.Load(), "waited": s.Waited.Load(),
			"commits": s.Commits.Load(), "lost_commits": s.LostCommits.Load(), "errors": s.Errors.Load(),
		})
	})

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	e.Listener = ln
	served := make(chan error, 1)
	go func() { served <- e.Start(*listen) }()
	fmt.Fprintf(os.Stderr, "echo %s: listening on http://%s/articles/hello\n", *name, *listen)
	select {
	case err := <-served:
		log.Fatal(err)
	case <-ctx.Done():
	}
	// Start returns as soon as Shutdown begins; stay until the requests in
	// flight, slow fills included, have their answers. A second signal
	// kills the process.
	stop()
	fmt.Fprintf(os.Stderr, "echo %s: shutting down\n", *name)
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Shutdown(shutdown); err != nil {
		log.Printf("shutdown: %v", err)
	}
}
