package repotest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/core/cachetest"
)

// The hit benchmarks put one adapter's cache hit beside two baselines
// measured in the same run, on the same router, request and body:
//
//   - bare: the route's handler with no cache at all, writing the body;
//   - floor: a handler that does what a hit cannot avoid, one raw go-redis
//     GET of the very bytes the cache stored for the route, written out;
//   - cached: the adapter installed for all routes, every request a hit
//     served from Redis;
//   - cached-l1: the same with [core.WithLocalTier], every request a hit
//     served from process memory.
//
// Sub-benchmarks are named path=<variant> (and size=<body> in
// BenchmarkHitBodySize), so that benchstat -col '/path@(floor cached)'
// puts variants side by side as ratios; scripts/bench.sh runs them, and
// docs/bench and BENCHMARKS.md hold a run.

// hitBodySize is the body of the hit benchmarks: a typical small JSON
// document.
const hitBodySize = 2 << 10

// BenchmarkHit measures one cache hit at a time through d against the
// redis-server at addr.
func BenchmarkHit(b *testing.B, d cachetest.Driver, addr string) {
	for _, v := range hitVariants(b, d, addr, hitBodySize) {
		b.Run("path="+v.name, func(b *testing.B) {
			w := newDiscardWriter()
			r := v.request()
			b.SetBytes(hitBodySize)
			b.ReportAllocs()
			v.start()
			for b.Loop() {
				w.reset()
				v.h.ServeHTTP(w, r)
			}
			v.check(b, w, int64(b.N))
		})
	}
}

// BenchmarkHitParallel measures hits from GOMAXPROCS goroutines at once:
// the throughput of the same variants as [BenchmarkHit].
func BenchmarkHitParallel(b *testing.B, d cachetest.Driver, addr string) {
	for _, v := range hitVariants(b, d, addr, hitBodySize) {
		b.Run("path="+v.name, func(b *testing.B) {
			var served atomic.Int64
			var failed atomic.Value
			b.SetBytes(hitBodySize)
			b.ReportAllocs()
			v.start()
			b.RunParallel(func(pb *testing.PB) {
				w := newDiscardWriter()
				r := v.request()
				n := int64(0)
				for pb.Next() {
					w.reset()
					v.h.ServeHTTP(w, r)
					if w.status != http.StatusOK || w.n != hitBodySize {
						failed.Store(fmt.Sprintf("status %d with %d body bytes", w.status, w.n))
					}
					n++
				}
				served.Add(n)
			})
			if f := failed.Load(); f != nil {
				b.Fatalf("%s: a response had %s, want 200 with %d bytes", v.name, f, hitBodySize)
			}
			v.checkCounts(b, served.Load())
		})
	}
}

// BenchmarkHitBodySize measures cached hits of 128 B, 2 KiB and 64 KiB
// bodies: the allocations per hit must not grow with the body.
func BenchmarkHitBodySize(b *testing.B, d cachetest.Driver, addr string) {
	for _, size := range []int{128, 2 << 10, 64 << 10} {
		vs := hitVariants(b, d, addr, size)
		for _, v := range vs {
			if v.name != "cached" {
				continue
			}
			b.Run(fmt.Sprintf("path=%s/size=%s", v.name, sizeName(size)), func(b *testing.B) {
				w := newDiscardWriter()
				r := v.request()
				b.SetBytes(int64(size))
				b.ReportAllocs()
				v.start()
				for b.Loop() {
					w.reset()
					v.h.ServeHTTP(w, r)
				}
				v.check(b, w, int64(b.N))
			})
		}
	}
}

func sizeName(n int) string {
	if n >= 1<<10 {
		return strconv.Itoa(n>>10) + "KiB"
	}
	return strconv.Itoa(n) + "B"
}

// hitVariant is one server of the hit benchmarks, warmed so that every
// request it gets is answered the same way.
type hitVariant struct {
	name    string
	h       http.Handler
	size    int
	cache   *core.Cache // nil for the baselines
	local   bool        // hits must come from the local tier
	hits0   *int64      // the cache's hit count before timing (see start)
	request func() *http.Request
}

// check verifies the last response of a serial run and that the cache
// served all n requests as hits.
func (v hitVariant) check(b *testing.B, w *discardWriter, n int64) {
	b.Helper()
	if w.status != http.StatusOK || w.n != v.size {
		b.Fatalf("%s: last response was %d with %d body bytes, want 200 with %d", v.name, w.status, w.n, v.size)
	}
	v.checkCounts(b, n)
}

// hits returns the number of hits the variant's cache served, counting
// only local-tier hits for the local-tier variant.
func (v hitVariant) hits() int64 {
	if v.local {
		return v.cache.Stats().LocalHits.Load()
	}
	return v.cache.Stats().Hits.Load()
}

// start records the hit count before a timed run; a benchmark function
// may run several times per variant (-count, benchtime probing).
func (v hitVariant) start() {
	if v.cache != nil {
		*v.hits0 = v.hits()
	}
}

func (v hitVariant) checkCounts(b *testing.B, n int64) {
	b.Helper()
	if v.cache == nil {
		return
	}
	s := v.cache.Stats()
	got := v.hits() - *v.hits0
	if got != n || s.Fetches.Load() != 0 {
		b.Fatalf("%s: %d of %d requests were hits and the origin ran %d times, want every request a hit", v.name, got, n, s.Fetches.Load())
	}
}

// hitVariants builds the four servers of the hit benchmarks for a body of
// size bytes, stores the route's response in the Redis at addr under a
// namespace of its own, and warms every server.
func hitVariants(b *testing.B, d cachetest.Driver, addr string, size int) []hitVariant {
	b.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 64})
	b.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	if err := rdb.Ping(ctx).Err(); err != nil {
		b.Fatalf("redis-server at %s: %v", addr, err)
	}
	body := make([]byte, size)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	origin := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}
	ns := "hitbench-" + uniqueID() // this run's alone
	newCache := func(opts ...core.Option) *core.Cache {
		s := core.NewRedisStore(rdb)
		b.Cleanup(func() { s.Close() })
		return core.New(s, append([]core.Option{core.WithNamespace(ns)}, opts...)...)
	}
	cached := func(c *core.Cache) http.Handler {
		return d.New(c, cachetest.Server{Global: []core.PolicyOption{core.TTL(time.Hour)},
			Endpoints: []cachetest.Endpoint{{Path: "/items/:id", Handler: origin}}})
	}
	request := func() *http.Request { return httptest.NewRequest(http.MethodGet, "/items/42", nil) }

	// Fill the entry once and find its key: the namespace is this run's
	// alone, so it holds the route's value and nothing else.
	filler := newCache()
	if w := serve(cached(filler), request()); w.status != http.StatusOK || w.n != size {
		b.Fatalf("filling request answered %d with %d bytes", w.status, w.n)
	}
	keys, err := rdb.Keys(ctx, ns+":*").Result()
	if err != nil || len(keys) != 1 {
		b.Fatalf("keys of namespace %s = %v (%v), want exactly the filled entry", ns, keys, err)
	}
	stored, err := rdb.Get(ctx, keys[0]).Bytes()
	if err != nil || len(stored) <= size {
		b.Fatalf("stored entry: %d bytes, %v", len(stored), err)
	}
	floor := func(w http.ResponseWriter, r *http.Request) {
		v, err := rdb.Get(r.Context(), keys[0]).Bytes()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		// The floor writes the body only; the entry's framing and headers
		// are what a hit must decode on top of it.
		w.Write(v[len(v)-size:])
	}

	hit, l1 := newCache(), newCache(core.WithLocalTier(64<<20))
	vs := []hitVariant{
		{name: "bare", h: d.New(filler, cachetest.Server{Endpoints: []cachetest.Endpoint{{Path: "/items/:id", Handler: origin}}})},
		{name: "floor", h: d.New(filler, cachetest.Server{Endpoints: []cachetest.Endpoint{{Path: "/items/:id", Handler: floor}}})},
		{name: "cached", h: cached(hit), cache: hit},
		{name: "cached-l1", h: cached(l1), cache: l1, local: true},
	}
	for i := range vs {
		v := &vs[i]
		v.size, v.request, v.hits0 = size, request, new(int64)
		// Warm up: connections opened, the local tier filled.
		for range 2 {
			if w := serve(v.h, request()); w.status != http.StatusOK || w.n != size {
				b.Fatalf("%s: warm-up request answered %d with %d bytes", v.name, w.status, w.n)
			}
		}
	}
	return vs
}

func serve(h http.Handler, r *http.Request) *discardWriter {
	w := newDiscardWriter()
	h.ServeHTTP(w, r)
	return w
}

// discardWriter is the cheapest http.ResponseWriter that still records
// what the benchmarks check: the status and the body length.
type discardWriter struct {
	header http.Header
	status int
	n      int
}

func newDiscardWriter() *discardWriter { return &discardWriter{header: make(http.Header)} }

func (w *discardWriter) reset() {
	clear(w.header)
	w.status, w.n = 0, 0
}

func (w *discardWriter) Header() http.Header { return w.header }

func (w *discardWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *discardWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.n += len(p)
	return len(p), nil
}

// TestHitRoundTrips checks through d, against the redis-server at addr,
// that a hit costs exactly one Redis command, a GET, whatever form the
// request takes (GET, HEAD, a conditional request answered 304), and that
// a hit from the local tier costs none.
func TestHitRoundTrips(t *testing.T, d cachetest.Driver, addr string) {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { rdb.Close() })
	var counter CommandLog
	rdb.AddHook(&counter)
	modified := time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)
	var calls atomic.Int64 // origin calls
	origin := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Last-Modified", modified)
		fmt.Fprintf(w, "call %d", calls.Add(1))
	}
	newServer := func(opts ...core.Option) http.Handler {
		s := core.NewRedisStore(rdb)
		t.Cleanup(func() { s.Close() })
		c := core.New(s, append([]core.Option{core.WithNamespace("roundtrips-" + uniqueID())}, opts...)...)
		return d.New(c, cachetest.Server{Global: []core.PolicyOption{core.TTL(time.Hour)},
			Endpoints: []cachetest.Endpoint{{Path: "/r", Handler: origin}}})
	}
	for _, tc := range []struct {
		name     string
		opts     []core.Option
		commands []string // per hit
	}{
		{"redis", nil, []string{"get"}},
		{"local-tier", []core.Option{core.WithLocalTier(1 << 20)}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newServer(tc.opts...)
			miss := roundTrip(h, "GET", "/r")
			roundTrip(h, "GET", "/r") // fills the local tier, if any
			etag := miss.Header().Get("ETag")
			if etag == "" || miss.Header().Get("Last-Modified") != modified {
				t.Fatalf("the stored response has no ETag or lost its Last-Modified: %v", miss.Header())
			}
			for _, req := range []struct {
				method string
				header []string
				status int
			}{
				{"GET", nil, 200},
				{"HEAD", nil, 200},
				{"GET", []string{"If-None-Match", etag}, 304},
				{"GET", []string{"If-Modified-Since", modified}, 304},
			} {
				counter.Reset()
				got := roundTrip(h, req.method, "/r", req.header...)
				if got.Code != req.status || got.Header().Get("X-Cache") != "HIT" {
					t.Errorf("%s %v: %d X-Cache %q, want %d from a HIT", req.method, req.header, got.Code, got.Header().Get("X-Cache"), req.status)
				}
				if cmds := counter.Names(); !slices.Equal(cmds, tc.commands) {
					t.Errorf("%s %v: Redis commands %q, want %q", req.method, req.header, cmds, tc.commands)
				}
			}
			if n := calls.Load(); n != 1 {
				t.Errorf("origin ran %d times, want 1", n)
			}
			calls.Store(0)
		})
	}
}

// roundTrip serves one request through h, with header holding name, value
// pairs, and returns what h answered.
func roundTrip(h http.Handler, method, target string, header ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Add(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// uniqueID returns 16 random hex digits: namespaces of one run's own on a
// Redis that other tests share.
func uniqueID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}
