package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chenyahui/gin-cache/persist"
	"github.com/gin-gonic/gin"
	redisv8 "github.com/go-redis/redis/v8"
	"github.com/redis/go-redis/v9"

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/core/repotest"
	"github.com/flightcache/flightcache/ginmw"
)

func init() { gin.SetMode(gin.ReleaseMode) }

// redisAddr returns the redis-server the test command started
// (repotest.RedisAddr): without one the test fails, unless -short.
func redisAddr(t testing.TB) string {
	t.Helper()
	return repotest.RedisAddr(t)
}

var runSeq atomic.Int64

// newRunID returns a run ID unique to this test run, so that runs sharing
// one redis-server never see each other's keys.
func newRunID() string {
	return fmt.Sprintf("peer-%d-%d-%d", os.Getpid(), time.Now().UnixNano(), runSeq.Add(1))
}

// peer is one "process" of a compared cache: a gin engine with its own
// Redis client.
type peer struct {
	name string
	// open returns an engine serving the benchmarked app through the
	// cache, with its own client of the Redis at addr; engines opened with
	// one runID share cache entries, as processes of one fleet do.
	open func(t testing.TB, addr, runID string, originHandler gin.HandlerFunc) *gin.Engine
}

var peers = []peer{
	{"gin-cache", openGinCache},
	{"flightcache", openFlightcache},
}

func openGinCache(t testing.TB, addr, runID string, originHandler gin.HandlerFunc) *gin.Engine {
	rdb := redisv8.NewClient(&redisv8.Options{Addr: addr})
	t.Cleanup(func() { rdb.Close() })
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("Redis at %s: %v", addr, err)
	}
	return newEngine(ginCache(persist.NewRedisStore(rdb), runID), originHandler)
}

func openFlightcache(t testing.TB, addr, runID string, originHandler gin.HandlerFunc) *gin.Engine {
	rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { rdb.Close() })
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("Redis at %s: %v", addr, err)
	}
	store := core.NewRedisStore(rdb)
	t.Cleanup(func() { store.Close() })
	// A patient store timeout: the herd test counts origin calls, and a
	// Redis call timed out on a loaded machine fails open to the origin.
	c := core.New(store, core.WithNamespace("flightcache-bench-"+runID),
		core.TTL(itemTTL), core.WithStoreTimeout(2*time.Second))
	return newEngine(ginmw.Cache(c), originHandler)
}

// discardWriter is the [http.ResponseWriter] both caches write hits to in
// the benchmarks: it keeps the header map and counts the body bytes.
type discardWriter struct {
	header http.Header
	status int
	n      int
}

func newDiscardWriter() *discardWriter { return &discardWriter{header: http.Header{}} }

func (w *discardWriter) Header() http.Header         { return w.header }
func (w *discardWriter) WriteHeader(code int)        { w.status = code }
func (w *discardWriter) Write(b []byte) (int, error) { w.n += len(b); return len(b), nil }

// reset makes w ready for the next response.
func (w *discardWriter) reset() {
	clear(w.header)
	w.status, w.n = 0, 0
}

// hotEngine opens p on addr, fills /item/1 and checks that the next request
// is a hit: the origin is not called again and the body is the same.
func hotEngine(b *testing.B, p peer) http.Handler {
	var calls atomic.Int64
	count := func(context.Context) (int64, error) { return calls.Add(1), nil }
	h := p.open(b, redisAddr(b), newRunID(), origin(0, count))
	first := httptest.NewRecorder()
	h.ServeHTTP(first, newItemRequest("/item/1"))
	second := httptest.NewRecorder()
	h.ServeHTTP(second, newItemRequest("/item/1"))
	if first.Code != http.StatusOK || second.Code != http.StatusOK {
		b.Fatalf("%s: statuses %d, %d, want 200, 200", p.name, first.Code, second.Code)
	}
	if n := calls.Load(); n != 1 {
		b.Fatalf("%s: origin called %d times for a fill and a hit, want 1", p.name, n)
	}
	if got, want := second.Body.String(), string(body(1, "/item/1")); got != want {
		b.Fatalf("%s: second response %q, want the first origin call's body", p.name, got)
	}
	if xc := second.Header().Get("X-Cache"); p.name == "flightcache" && xc != "HIT" {
		b.Fatalf("%s: second response X-Cache %q, want HIT", p.name, xc)
	}
	return h
}

// newItemRequest returns a server request for path, with the same Host
// and RequestURI for every caller.
func newItemRequest(path string) *http.Request {
	return httptest.NewRequest(http.MethodGet, "http://bench.example"+path, nil)
}

// serveHit serves one request and fails the benchmark unless it was
// answered 200 with the 2 KiB body.
func serveHit(b *testing.B, h http.Handler, w *discardWriter, req *http.Request) {
	w.reset()
	h.ServeHTTP(w, req)
	if w.status != http.StatusOK || w.n != bodySize {
		b.Fatalf("hit: status %d, %d bytes, want 200, %d", w.status, w.n, bodySize)
	}
}

// hotRedisKey stores a 2 KiB value in the Redis at FLIGHTCACHE_REDIS_ADDR
// and returns a client and the key: the floor both caches' hits stand on,
// one GET of the response's size.
func hotRedisKey(b *testing.B) (*redis.Client, string) {
	addr := redisAddr(b)
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	b.Cleanup(func() { rdb.Close() })
	key := "flightcache-bench:{" + newRunID() + "}:raw"
	if err := rdb.Set(context.Background(), key, body(1, "/item/1"), itemTTL).Err(); err != nil {
		b.Fatalf("Redis at %s: %v", addr, err)
	}
	return rdb, key
}

// getHot reads key and fails the benchmark unless it holds the 2 KiB value.
func getHot(b *testing.B, rdb *redis.Client, key string) bool {
	v, err := rdb.Get(context.Background(), key).Bytes()
	if err != nil || len(v) != bodySize {
		b.Errorf("GET %s: %d bytes, %v; want %d bytes", key, len(v), err, bodySize)
		return false
	}
	return true
}

// BenchmarkPeerHit compares a cache hit through gin-cache's Redis store with
// one through flightcache's: the same gin route, body, writer and Redis.
// redis-get is their floor: one bare GET of a value of the body's size.
func BenchmarkPeerHit(b *testing.B) {
	b.Run("lib=redis-get", func(b *testing.B) {
		rdb, key := hotRedisKey(b)
		b.ReportAllocs()
		for b.Loop() {
			if !getHot(b, rdb, key) {
				return
			}
		}
	})
	for _, p := range peers {
		b.Run("lib="+p.name, func(b *testing.B) {
			h := hotEngine(b, p)
			w, req := newDiscardWriter(), newItemRequest("/item/1")
			b.ReportAllocs()
			for b.Loop() {
				serveHit(b, h, w, req)
			}
		})
	}
}

// BenchmarkPeerHitParallel is BenchmarkPeerHit with GOMAXPROCS goroutines
// requesting the one hot key.
func BenchmarkPeerHitParallel(b *testing.B) {
	b.Run("lib=redis-get", func(b *testing.B) {
		rdb, key := hotRedisKey(b)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if !getHot(b, rdb, key) {
					return
				}
			}
		})
	})
	for _, p := range peers {
		b.Run("lib="+p.name, func(b *testing.B) {
			h := hotEngine(b, p)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				w, req := newDiscardWriter(), newItemRequest("/item/1")
				for pb.Next() {
					w.reset()
					h.ServeHTTP(w, req)
					if w.status != http.StatusOK || w.n != bodySize {
						b.Errorf("hit: status %d, %d bytes, want 200, %d", w.status, w.n, bodySize)
						return
					}
				}
			})
		})
	}
}

// TestColdKeyHerd sends 50 concurrent requests for one cold key to each of
// 4 engines ("processes", each with its own Redis client) sharing one
// Redis, with a 200 ms origin, and counts origin calls and the distinct
// bodies clients got. flightcache must make one call and serve one body;
// gin-cache's counts are logged, not asserted (its singleflight is per
// process, so it typically makes one call per process, and which body a
// process serves depends on timing).
func TestColdKeyHerd(t *testing.T) {
	const procs, callers, delay = 4, 50, 200 * time.Millisecond
	addr := redisAddr(t)
	for _, p := range peers {
		t.Run(p.name, func(t *testing.T) {
			var calls atomic.Int64
			count := func(context.Context) (int64, error) { return calls.Add(1), nil }
			runID := newRunID()
			engines := make([]http.Handler, procs)
			for i := range engines {
				engines[i] = p.open(t, addr, runID, origin(delay, count))
				warmUp(t, engines[i], fmt.Sprintf("/item/warm-%d", i))
			}
			calls.Store(0)

			recs := make([]*httptest.ResponseRecorder, procs*callers)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for j := range recs {
				recs[j] = httptest.NewRecorder()
				wg.Go(func() {
					<-start
					engines[j%procs].ServeHTTP(recs[j], newItemRequest("/item/cold"))
				})
			}
			close(start)
			wg.Wait()

			bodies := map[string]int{}
			for j, rec := range recs {
				got := rec.Body.String()
				if rec.Code != http.StatusOK || len(got) != bodySize || !strings.HasPrefix(got, "call ") {
					t.Fatalf("request %d: status %d, body %.40q (%d bytes), want 200 and a %d-byte origin body",
						j, rec.Code, got, len(got), bodySize)
				}
				bodies[got]++
			}
			// What every process serves once the herd is over: the entry
			// the store kept.
			after := map[string]bool{}
			for _, h := range engines {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, newItemRequest("/item/cold"))
				after[rec.Body.String()] = true
			}
			stale := 0
			for b, n := range bodies {
				if !after[b] {
					stale += n
				}
			}
			t.Logf("%s: %d processes x %d callers on a cold key: origin calls %d, distinct bodies %d, "+
				"clients whose body differs from the one stored afterwards %d, distinct bodies served afterwards %d",
				p.name, procs, callers, calls.Load(), len(bodies), stale, len(after))
			if calls.Load() < 1 {
				t.Errorf("%s: origin calls %d, want at least 1", p.name, calls.Load())
			}
			if p.name == "flightcache" {
				if n := calls.Load(); n != 1 {
					t.Errorf("flightcache: origin calls %d, want 1", n)
				}
				if len(bodies) != 1 || stale != 0 || len(after) != 1 {
					t.Errorf("flightcache: %d distinct bodies, %d clients with a body other than the stored one, "+
						"%d bodies served afterwards; want 1, 0, 1", len(bodies), stale, len(after))
				}
			}
		})
	}
}

// warmUp fills path through h from 20 concurrent requests, so that the
// engine's Redis connections (and flightcache's subscription) are open
// before the measured herd, as in a process that has been running.
func warmUp(t *testing.T, h http.Handler, path string) {
	t.Helper()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 20 {
		wg.Go(func() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, newItemRequest(path))
			if rec.Code != http.StatusOK {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("warm-up of %s: %d requests failed", path, n)
	}
}
