// Package app holds what the example programs share: the store they
// cache in (Redis when one is given, the in-process memory store
// otherwise), their cache counters, and serving with a graceful shutdown.
package app

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flightcache/flightcache/core"
)

// Open returns a store on the Redis at addr ("host:port" or a redis:// URL;
// "" reads REDIS_URL), or the embedded memory store when neither is set,
// together with a description and a function releasing it.
func Open(addr string) (core.Store, string, func(), error) {
	if addr == "" {
		addr = os.Getenv("REDIS_URL")
	}
	if addr == "" {
		s := core.NewMemoryStore(0)
		return s, "in-process memory store (no -redis or REDIS_URL given)", func() { s.Close() }, nil
	}
	opt := &redis.Options{Addr: addr}
	if strings.Contains(addr, "://") {
		var err error
		if opt, err = redis.ParseURL(addr); err != nil {
			return nil, "", nil, fmt.Errorf("parse Redis URL: %w", err)
		}
	}
	// The cache bounds every Redis call with a short context timeout;
	// go-redis honours it only with this option.
	opt.ContextTimeoutEnabled = true
	rdb := redis.NewClient(opt)
	s := core.NewRedisStore(rdb)
	return s, "Redis at " + opt.Addr, func() { s.Close(); rdb.Close() }, nil
}

// NewCache opens the store (see [Open]) and returns a cache on it that logs
// the errors it absorbs and reports its events to OpenTelemetry (see
// [Instrument]), and a function releasing the store and flushing traces.
// who names the program in what it prints.
func NewCache(who, redisAddr string, opts ...core.Option) (*core.Cache, func()) {
	store, desc, closeStore, err := Open(redisAddr)
	if err != nil {
		log.Fatal(err)
	}
	return NewCacheOn(who, store, desc, opts...), func() { closeStore(); telemetry().shutdown() }
}

// NewCacheOn returns a cache on store, described by desc, that logs the
// errors it absorbs and reports its events, as [NewCache] does.
func NewCacheOn(who string, store core.Store, desc string, opts ...core.Option) *core.Cache {
	fmt.Fprintf(os.Stderr, "%s: caching in %s\n", who, desc)
	opts = append(opts, core.WithObserver(func(err error) {
		var ce *core.Error
		errors.As(err, &ce)
		switch {
		case ce != nil && ce.Op == core.OpBreaker:
			log.Printf("cache: %v", err) // the breaker opened or closed
		case ce != nil && ce.Op == core.OpFetch:
			log.Printf("cache (served stale instead): %v", err)
		default:
			log.Printf("cache (serving uncached): %v", err)
		}
	}))
	tel := telemetry().tel
	c := core.New(store, append(opts, core.WithEvents(tel.Events()))...)
	tel.Observe(c)
	return c
}

// Stats returns the cache's counters and the program's origin calls, as
// the examples' stats endpoints show them.
func Stats(c *core.Cache, originCalls int64) map[string]int64 {
	s := c.Stats()
	return map[string]int64{
		"origin_calls": originCalls, "hits": s.Hits.Load(), "misses": s.Misses.Load(),
		"fetches": s.Fetches.Load(), "collapsed": s.Collapsed.Load(), "waited": s.Waited.Load(),
		"commits": s.Commits.Load(), "lost_commits": s.LostCommits.Load(), "errors": s.Errors.Load(),
	}
}

// Serve serves h on listen until SIGINT or SIGTERM, then waits (up to 10
// seconds) for requests in flight, slow fills included, before returning,
// so that the store is closed only after them.
func Serve(who, listen, path string, h http.Handler) {
	srv := &http.Server{Addr: listen, Handler: h, ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	fmt.Fprintf(os.Stderr, "%s: listening on http://%s%s\n", who, listen, path)
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
	<-drained
}
