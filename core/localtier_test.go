package core_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/core/cachetest"
	"github.com/flightcache/flightcache/core/internal/entry"
	"github.com/flightcache/flightcache/core/internal/testhook"
	"github.com/flightcache/flightcache/core/repotest"
)

// tierProc is one "process" of a local-tier test: a cache with its own
// store (and, on Redis, its own client, whose commands are counted).
type tierProc struct {
	c     *core.Cache
	store core.Store            // the shared store, without the cache's layers
	spy   *tierSpy              // what the cache sees as its store
	cmds  *repotest.CommandLog  // nil for the memory store
	rdb   redis.UniversalClient // nil for the memory store
}

// tierBackend makes processes that share one store.
type tierBackend struct {
	name string
	open func(t *testing.T) (newProc func(opts ...core.Option) tierProc)
}

var tierBackends = []tierBackend{
	{"memory", openTierMemory},
	{"redis", openTierRedis},
	{"cluster", openTierCluster},
}

func openTierMemory(t *testing.T) func(opts ...core.Option) tierProc {
	s := core.NewMemoryStore(0)
	t.Cleanup(func() { s.Close() })
	return func(opts ...core.Option) tierProc { return newTierProc(s, nil, nil, opts) }
}

func openTierRedis(t *testing.T) func(opts ...core.Option) tierProc {
	addr := realRedisAddr(t)
	return func(opts ...core.Option) tierProc {
		rdb := newClient(t, addr)
		return newRedisTierProc(t, rdb, opts)
	}
}

func openTierCluster(t *testing.T) func(opts ...core.Option) tierProc {
	addrs := clusterAddrs(t)
	return func(opts ...core.Option) tierProc {
		return newRedisTierProc(t, newClusterClient(t, addrs), opts)
	}
}

func newRedisTierProc(t *testing.T, rdb redis.UniversalClient, opts []core.Option) tierProc {
	cmds := &repotest.CommandLog{}
	rdb.AddHook(cmds)
	s := core.NewRedisStore(rdb)
	t.Cleanup(func() { s.Close() })
	return newTierProc(s, cmds, rdb, opts)
}

func newTierProc(s core.Store, cmds *repotest.CommandLog, rdb redis.UniversalClient, opts []core.Option) tierProc {
	spy := &tierSpy{Store: s}
	return tierProc{c: core.New(spy, opts...), store: s, spy: spy, cmds: cmds, rdb: rdb}
}

func forEachTierBackend(t *testing.T, names []string, f func(t *testing.T, newProc func(opts ...core.Option) tierProc)) {
	for _, b := range tierBackends {
		for _, name := range names {
			if b.name == name {
				t.Run(b.name, func(t *testing.T) { f(t, b.open(t)) })
			}
		}
	}
}

var allTierBackends = []string{"memory", "redis", "cluster"}

// tierSpy records the store keys the cache commits to. Like any store
// wrapper used with WithLocalTier, it forwards InvalidationWatcher.
type tierSpy struct {
	core.Store
	mu   sync.Mutex // guards keys
	keys []string
}

func (s *tierSpy) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) ([]byte, bool, error) {
	s.mu.Lock()
	s.keys = append(s.keys, key)
	s.mu.Unlock()
	return s.Store.SetNX(ctx, key, value, ttl)
}

func (s *tierSpy) WatchInvalidations(ctx context.Context, invalidate func(string), reset func()) (func(), error) {
	return s.Store.(core.InvalidationWatcher).WatchInvalidations(ctx, invalidate, reset)
}

func (s *tierSpy) InvalidationsCurrent() bool {
	return s.Store.(core.InvalidationWatcher).InvalidationsCurrent()
}

func (s *tierSpy) committed() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.keys...)
}

// tierNamespace returns a namespace unique to this test run.
func tierNamespace() core.Option {
	return core.WithNamespace(fmt.Sprintf("l1-%d-%d-%d", os.Getpid(), time.Now().UnixNano(), namespaceSeq.Add(1)))
}

// noFetch is a fetch function for reads that must be answered by the cache.
func noFetch(t *testing.T) func(context.Context) ([]byte, time.Duration, error) {
	return func(context.Context) ([]byte, time.Duration, error) {
		t.Error("fetch called for a read the cache should answer")
		return nil, 0, errors.New("unexpected fetch")
	}
}

func do(t *testing.T, c *core.Cache, key string, fetch func(context.Context) ([]byte, time.Duration, error)) string {
	t.Helper()
	v, err := c.Do(context.Background(), key, fetch)
	if err != nil {
		t.Fatalf("Do(%q): %v", key, err)
	}
	return string(v)
}

func TestLocalTierHitMakesNoRedisCommand(t *testing.T) {
	forEachTierBackend(t, []string{"redis", "cluster"}, func(t *testing.T, newProc func(opts ...core.Option) tierProc) {
		ns := tierNamespace()
		a, b := newProc(ns, core.WithLocalTier(1<<20)), newProc(ns, core.WithLocalTier(1<<20))
		o := newOrigin()
		if got := do(t, a.c, "k", o.fetch); got != "value-1" {
			t.Fatalf("fill = %q, want value-1", got)
		}
		before := a.cmds.Count("")
		if got := do(t, a.c, "k", noFetch(t)); got != "value-1" {
			t.Errorf("hit after the fill = %q, want value-1", got)
		}
		if n := a.cmds.Count("") - before; n != 0 {
			t.Errorf("hit in the filling process sent %d Redis commands, want 0", n)
		}

		// Another process reads the shared store once, then its own tier.
		before = b.cmds.Count("")
		if got := do(t, b.c, "k", noFetch(t)); got != "value-1" {
			t.Errorf("first read in another process = %q, want value-1", got)
		}
		if n := b.cmds.Count("") - before; n == 0 {
			t.Error("first read in another process sent no Redis command; it has no local copy yet")
		}
		before = b.cmds.Count("")
		if got := do(t, b.c, "k", noFetch(t)); got != "value-1" {
			t.Errorf("second read in another process = %q, want value-1", got)
		}
		if n := b.cmds.Count("") - before; n != 0 {
			t.Errorf("second read in another process sent %d Redis commands, want 0", n)
		}
		for name, p := range map[string]tierProc{"filler": a, "reader": b} {
			if h := p.c.Stats().LocalHits.Load(); h != 1 {
				t.Errorf("%s: Stats().LocalHits = %d, want 1", name, h)
			}
		}
		if n := o.calls.Load(); n != 1 {
			t.Errorf("origin called %d times, want 1", n)
		}
	})
}

func TestLocalTierExpiresWithSharedFreshness(t *testing.T) {
	forEachTierBackend(t, allTierBackends, func(t *testing.T, newProc func(opts ...core.Option) tierProc) {
		ns := tierNamespace()
		a, b := newProc(ns, core.WithLocalTier(1<<20)), newProc(ns, core.WithLocalTier(1<<20))
		clock := testhook.NewClock(time.Now())
		testhook.SetClock(a.c, clock.Now)
		testhook.SetClock(b.c, clock.Now)
		const fresh = 1500 * time.Millisecond
		o := newOrigin()
		o.ttl = fresh
		do(t, a.c, "k", o.fetch)

		// B copies the entry halfway through its freshness: the copy must
		// end with the shared entry's freshness, not a full lifetime later.
		clock.Advance(fresh / 2)
		if got := do(t, b.c, "k", noFetch(t)); got != "value-1" {
			t.Fatalf("read halfway = %q, want value-1", got)
		}
		hits := b.c.Stats().LocalHits.Load()
		if got := do(t, b.c, "k", noFetch(t)); got != "value-1" {
			t.Fatalf("second read halfway = %q, want value-1", got)
		}
		if b.c.Stats().LocalHits.Load() != hits+1 {
			t.Fatal("second read halfway was not served by the local tier")
		}

		clock.Advance(fresh/2 + 100*time.Millisecond)
		hits = b.c.Stats().LocalHits.Load()
		if got := do(t, b.c, "k", o.fetch); got != "value-2" {
			t.Errorf("read after the shared entry's freshness = %q, want value-2 (refilled)", got)
		}
		if b.c.Stats().LocalHits.Load() != hits {
			t.Error("read after the shared entry's freshness was served by the local tier")
		}
	})
}

// serveItem serves one request for /item through p's cache.
func serveItem(t *testing.T, p tierProc, method string, next func(http.ResponseWriter, *http.Request) error) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(method, "http://example.test/item", nil)
	if err := p.c.Middleware().Serve(rec, req, "", next); err != nil {
		t.Fatalf("%s /item: %v", method, err)
	}
	return rec
}

func TestLocalTierDeleteInvalidatesEveryProcess(t *testing.T) {
	forEachTierBackend(t, allTierBackends, func(t *testing.T, newProc func(opts ...core.Option) tierProc) {
		ns := tierNamespace()
		a, b := newProc(ns, core.WithLocalTier(1<<20)), newProc(ns, core.WithLocalTier(1<<20))
		var versions atomic.Int64
		handler := func(w http.ResponseWriter, r *http.Request) error {
			if r.Method == http.MethodPost {
				w.WriteHeader(http.StatusNoContent)
				return nil
			}
			fmt.Fprintf(w, "v%d", versions.Add(1))
			return nil
		}
		if got := serveItem(t, a, "GET", handler).Body.String(); got != "v1" {
			t.Fatalf("GET in A = %q, want v1", got)
		}
		serveItem(t, b, "GET", handler)
		rec := serveItem(t, b, "GET", handler)
		if got, status := rec.Body.String(), rec.Header().Get("Cache-Status"); got != "v1" || !strings.Contains(status, "detail=l1") {
			t.Fatalf("second GET in B = %q with Cache-Status %q, want v1 with detail=l1", got, status)
		}

		serveItem(t, a, "POST", handler) // 204: deletes the stored entry
		if got := serveItem(t, a, "GET", handler).Body.String(); got != "v2" {
			t.Errorf("GET in A after its POST = %q, want v2", got)
		}
		// The POST's invalidation reached B before the 204 went out.
		if got := serveItem(t, b, "GET", handler).Body.String(); got != "v2" {
			t.Errorf("GET in B after A's POST = %q, want v2", got)
		}
	})
}

func TestLocalTierReplaceInvalidatesEveryProcess(t *testing.T) {
	forEachTierBackend(t, allTierBackends, func(t *testing.T, newProc func(opts ...core.Option) tierProc) {
		ns := tierNamespace()
		a, b := newProc(ns, core.WithLocalTier(1<<20)), newProc(ns, core.WithLocalTier(1<<20))
		other := newProc(ns) // a third process, changing entries directly
		// Several keys, so that on a cluster they live on several masters:
		// the invalidations are then published on other nodes than the one
		// B's subscription is connected to.
		const n = 8
		for i := range n {
			key := fmt.Sprintf("k%d", i)
			do(t, a.c, key, func(context.Context) ([]byte, time.Duration, error) { return []byte("old"), time.Hour, nil })
			do(t, b.c, key, noFetch(t))
			do(t, b.c, key, noFetch(t))
		}
		if h := b.c.Stats().LocalHits.Load(); h != n {
			t.Fatalf("B's local hits = %d, want %d", h, n)
		}
		keys := a.spy.committed()
		if len(keys) != n {
			t.Fatalf("A committed %d keys, want %d", len(keys), n)
		}
		if cc, ok := other.rdb.(*redis.ClusterClient); ok {
			masters := map[string]bool{}
			for _, k := range keys {
				node, err := cc.MasterForKey(context.Background(), k)
				if err != nil {
					t.Fatal(err)
				}
				masters[node.Options().Addr] = true
			}
			if len(masters) < 2 {
				t.Fatalf("%d keys on %d masters, want several", n, len(masters))
			}
		}

		ctx := context.Background()
		for i, k := range keys {
			old, err := other.store.Get(ctx, k)
			if err != nil {
				t.Fatalf("Get(%s): %v", k, err)
			}
			now := time.UnixMilli(time.Now().UnixMilli())
			ok, err := other.store.Replace(ctx, k, old, entry.Encode(now, time.Hour, []byte(fmt.Sprintf("new%d", i))), time.Hour)
			if err != nil || !ok {
				t.Fatalf("Replace(%s) = %v, %v; want true", k, ok, err)
			}
		}
		for i := range n {
			key, want := fmt.Sprintf("k%d", i), fmt.Sprintf("new%d", i)
			waitUntil(t, "B's local copy of "+key+" to be replaced", func() bool {
				return do(t, b.c, key, noFetch(t)) == want
			})
		}
	})
}

func TestLocalTierEmptiedWhenSubscriptionComesBack(t *testing.T) {
	addr := realRedisAddr(t)
	name := fmt.Sprintf("fc-l1-%d-%d", os.Getpid(), time.Now().UnixNano())
	rdb := redis.NewClient(&redis.Options{Addr: addr, ClientName: name, ContextTimeoutEnabled: true})
	t.Cleanup(func() { rdb.Close() })
	p := newRedisTierProc(t, rdb, []core.Option{tierNamespace(), core.WithLocalTier(1 << 20)})
	fill := func(context.Context) ([]byte, time.Duration, error) { return []byte("v"), time.Hour, nil }
	do(t, p.c, "k", fill)
	do(t, p.c, "k", noFetch(t))
	if h := p.c.Stats().LocalHits.Load(); h != 1 {
		t.Fatalf("LocalHits = %d, want 1", h)
	}

	// Kill this process's subscription connection (found by its client
	// name), as a network failure would; go-redis reconnects and
	// resubscribes by itself. Nothing was invalidated, and the entry is
	// fresh for an hour: only the resubscription can empty the tier.
	admin := newClient(t, addr)
	ctx := context.Background()
	list, err := admin.ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	var id string
	for line := range strings.Lines(list) {
		if strings.Contains(line, " name="+name+" ") && strings.Contains(line, " psub=2 ") {
			id = strings.TrimPrefix(strings.Fields(line)[0], "id=")
		}
	}
	if id == "" {
		t.Fatalf("no subscription connection named %s in CLIENT LIST:\n%s", name, list)
	}
	if err := admin.Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err != nil {
		t.Fatalf("CLIENT KILL ID %s: %v", id, err)
	}
	waitUntil(t, "the local tier to be emptied on resubscription", func() bool {
		hits := p.c.Stats().LocalHits.Load()
		do(t, p.c, "k", noFetch(t))
		return p.c.Stats().LocalHits.Load() == hits
	})
	// The tier watches again and serves again.
	waitUntil(t, "the local tier to serve again", func() bool {
		hits := p.c.Stats().LocalHits.Load()
		do(t, p.c, "k", noFetch(t))
		return p.c.Stats().LocalHits.Load() == hits+1
	})
}

func TestLocalTierBoundedByBytes(t *testing.T) {
	const budget, size = 64 << 10, 4 << 10
	s := core.NewMemoryStore(0)
	defer s.Close()
	c := core.New(s, tierNamespace(), core.WithLocalTier(budget))
	for i := range 64 {
		do(t, c, fmt.Sprintf("k%d", i), func(context.Context) ([]byte, time.Duration, error) {
			return make([]byte, size), time.Hour, nil
		})
	}
	entries, bytes := core.LocalTierSize(c)
	if bytes > budget || entries > budget/size {
		t.Errorf("local tier holds %d entries, %d bytes; want at most %d entries, %d bytes", entries, bytes, budget/size, budget)
	}
	if entries == 0 {
		t.Error("local tier holds nothing")
	}

	// A value larger than the whole budget is never served locally.
	big := func(context.Context) ([]byte, time.Duration, error) { return make([]byte, 2*budget), time.Hour, nil }
	do(t, c, "big", big)
	core.LocalTierSize(c)
	hits := c.Stats().LocalHits.Load()
	do(t, c, "big", noFetch(t))
	if c.Stats().LocalHits.Load() != hits {
		t.Error("a value larger than the budget was served by the local tier")
	}
}

func TestLocalTierNeverKeepsPassMarkersOrCorruptEntries(t *testing.T) {
	forEachTierBackend(t, []string{"redis"}, func(t *testing.T, newProc func(opts ...core.Option) tierProc) {
		ns := tierNamespace()
		a, b := newProc(ns, core.WithLocalTier(1<<20)), newProc(ns, core.WithLocalTier(1<<20))

		// Uncacheable: every read after the first finds the pass marker in
		// the shared store and fetches for itself.
		o := newOrigin()
		o.ttl = core.NoStore
		for range 3 {
			do(t, a.c, "pass", o.fetch)
		}
		if n := o.calls.Load(); n != 3 {
			t.Errorf("origin called %d times for an uncacheable key, want 3", n)
		}

		// Corrupt: B reads bytes that do not decode; each read goes to Redis.
		do(t, a.c, "bad", func(context.Context) ([]byte, time.Duration, error) { return []byte("good"), time.Hour, nil })
		key := a.spy.committed()[len(a.spy.committed())-1]
		if err := a.rdb.Set(context.Background(), key, "not an entry", time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		failing := func(context.Context) ([]byte, time.Duration, error) { return nil, 0, errors.New("origin down") }
		for i := range 2 {
			gets := b.cmds.Count("get")
			if _, err := b.c.Do(context.Background(), "bad", failing); err == nil {
				t.Fatalf("read #%d of a corrupt entry with a failing origin succeeded", i)
			}
			if b.cmds.Count("get") == gets {
				t.Errorf("read #%d of a corrupt entry sent no GET: it was kept locally", i)
			}
		}
		for name, p := range map[string]tierProc{"A": a, "B": b} {
			if h := p.c.Stats().LocalHits.Load(); h != 0 {
				t.Errorf("%s: Stats().LocalHits = %d, want 0", name, h)
			}
		}
	})
}

func TestLocalTierStaleEntryIsRevalidated(t *testing.T) {
	forEachTierBackend(t, allTierBackends, func(t *testing.T, newProc func(opts ...core.Option) tierProc) {
		p := newProc(tierNamespace(), core.WithLocalTier(1<<20))
		clock := testhook.NewClock(time.Now())
		testhook.SetClock(p.c, clock.Now)
		var conditional atomic.Int64
		handler := func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("ETag", `"v1"`)
			w.Header().Set("Cache-Control", "max-age=1")
			if r.Header.Get("If-None-Match") == `"v1"` {
				conditional.Add(1)
				w.WriteHeader(http.StatusNotModified)
				return nil
			}
			fmt.Fprint(w, "body")
			return nil
		}
		serveItem(t, p, "GET", handler)
		if status := serveItem(t, p, "GET", handler).Header().Get("Cache-Status"); !strings.Contains(status, "detail=l1") {
			t.Fatalf("second GET: Cache-Status %q, want detail=l1", status)
		}
		// Stale now, but kept in the shared store for revalidation: the
		// next request must revalidate it with the handler, not be served
		// the local copy.
		clock.Advance(2 * time.Second)
		rec := serveItem(t, p, "GET", handler)
		if got := rec.Body.String(); rec.Code != http.StatusOK || got != "body" {
			t.Errorf("GET after staleness = %d %q, want 200 body", rec.Code, got)
		}
		if n := conditional.Load(); n != 1 {
			t.Errorf("handler asked conditionally %d times, want 1 (revalidation)", n)
		}
	})
}

func TestLocalTierStoreConformance(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			newStore, advance, _ := b.open(t)
			cachetest.TestStore(t, cachetest.Harness{
				New:     func(*testing.T) core.Store { return core.NewLocalTierStore(newStore(), 1<<20) },
				Advance: advance,
			})
		})
	}
}

// noWatchStore hides its store's InvalidationWatcher.
type noWatchStore struct{ core.Store }

func TestWithLocalTierPanics(t *testing.T) {
	s := core.NewMemoryStore(1 << 20)
	defer s.Close()
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"zero size", func() { core.WithLocalTier(0) }},
		{"store without invalidations", func() {
			core.New(noWatchStore{s}, core.WithLocalTier(1<<20))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			tc.f()
		})
	}
}

// TestLocalTierWatchEndsWithItsCache checks that a store does not keep a
// cache with a local tier alive: once the cache is unreachable, its watch
// of the store's invalidations is removed.
func TestLocalTierWatchEndsWithItsCache(t *testing.T) {
	s := core.NewMemoryStore(0)
	defer s.Close()
	func() {
		c := core.New(s, tierNamespace(), core.WithLocalTier(1<<20))
		do(t, c, "k", func(context.Context) ([]byte, time.Duration, error) { return []byte("v"), time.Hour, nil })
		if n := core.WatchCount(s); n != 1 {
			t.Fatalf("watches registered = %d, want 1", n)
		}
	}()
	waitUntil(t, "the unreachable cache's watch to be removed", func() bool {
		runtime.GC()
		return core.WatchCount(s) == 0
	})
}

// TestLocalTierConvergesUnderConcurrentInvalidation races reads in one
// process against deletes and refills in another: a value read before an
// invalidation must never be kept after it, or the reader would serve it
// for the rest of its hour of freshness. Once the writes stop, the reader
// must come to serve what the shared store holds.
func TestLocalTierConvergesUnderConcurrentInvalidation(t *testing.T) {
	forEachTierBackend(t, []string{"memory", "redis"}, func(t *testing.T, newProc func(opts ...core.Option) tierProc) {
		ns := tierNamespace()
		a, b := newProc(ns, core.WithLocalTier(1<<20)), newProc(ns, core.WithLocalTier(1<<20))
		var versions atomic.Int64
		handler := func(w http.ResponseWriter, r *http.Request) error {
			if r.Method == http.MethodPost {
				w.WriteHeader(http.StatusNoContent)
				return nil
			}
			w.Header().Set("Cache-Control", "max-age=3600")
			fmt.Fprintf(w, "v%d", versions.Add(1))
			return nil
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var failed atomic.Bool
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					req := httptest.NewRequest("GET", "http://example.test/item", nil)
					if err := b.c.Middleware().Serve(httptest.NewRecorder(), req, "", handler); err != nil {
						failed.Store(true)
					}
				}
			})
		}
		for range 50 {
			serveItem(t, a, "POST", handler)
			serveItem(t, a, "GET", handler)
		}
		close(stop)
		wg.Wait()
		if failed.Load() {
			t.Fatal("a concurrent read failed")
		}
		want := serveItem(t, newProc(ns), "GET", handler).Body.String() // what the shared store holds
		waitUntil(t, "B to serve the shared store's value "+want, func() bool {
			return serveItem(t, b, "GET", handler).Body.String() == want
		})
		// The race may leave B no quiet moment to use its tier; once the
		// writes have stopped, its reads must come from the tier again.
		before := b.c.Stats().LocalHits.Load()
		waitUntil(t, "B's local tier to serve its reads again", func() bool {
			got := serveItem(t, b, "GET", handler).Body.String()
			if got != want {
				t.Fatalf("B served %q after converging on %q", got, want)
			}
			return b.c.Stats().LocalHits.Load() > before
		})
	})
}

// racyStore runs a hook after each Get has read its value and before it
// returns it: the seam for an invalidation that lands between a read and
// the local tier's insert.
type racyStore struct {
	core.Store
	afterGet func(key string)
}

func (s *racyStore) Get(ctx context.Context, key string) ([]byte, error) {
	b, err := s.Store.Get(ctx, key)
	if s.afterGet != nil {
		s.afterGet(key)
	}
	return b, err
}

func (s *racyStore) WatchInvalidations(ctx context.Context, invalidate func(string), reset func()) (func(), error) {
	return s.Store.(core.InvalidationWatcher).WatchInvalidations(ctx, invalidate, reset)
}

func (s *racyStore) InvalidationsCurrent() bool {
	return s.Store.(core.InvalidationWatcher).InvalidationsCurrent()
}

func TestLocalTierDropsValueInvalidatedWhileRead(t *testing.T) {
	shared := core.NewMemoryStore(0)
	defer shared.Close()
	ns := tierNamespace()
	racy := &racyStore{Store: shared}
	c := core.New(racy, ns, core.WithLocalTier(1<<20))
	filler := core.New(shared, ns)
	do(t, filler, "k", func(context.Context) ([]byte, time.Duration, error) { return []byte("old"), time.Hour, nil })

	// The read gets "old"; before the tier can keep it, another cache
	// deletes the entry and the invalidation arrives.
	racy.afterGet = func(key string) {
		racy.afterGet = nil
		if _, err := shared.Invalidate(context.Background(), key, nil, []byte("gone"), time.Minute); err != nil {
			t.Error(err)
		}
	}
	if got := do(t, c, "k", noFetch(t)); got != "old" {
		t.Fatalf("read racing the delete = %q, want old (read before it)", got)
	}
	got := do(t, c, "k", func(context.Context) ([]byte, time.Duration, error) { return []byte("new"), time.Hour, nil })
	if got != "new" || c.Stats().LocalHits.Load() != 0 {
		t.Errorf("read after the delete = %q with %d local hits, want new, 0: the invalidated value was kept", got, c.Stats().LocalHits.Load())
	}
}

// TestLocalTierSharedResponseServedConcurrently serves one local-tier
// entry, whose decoded response every hit shares, to many goroutines at
// once with different request headers: plain, HEAD, conditional (304 and
// 200), ranges and credentials. Every answer must be byte for byte the
// one the same request got alone, and each goroutine then scribbles over
// the header values it was given, in place, as code running after the
// cache may: were the shared response handed out rather than copied, the
// race detector would see it, and later answers would carry the scribbles.
func TestLocalTierSharedResponseServedConcurrently(t *testing.T) {
	forEachTierBackend(t, []string{"memory", "redis"}, func(t *testing.T, newProc func(opts ...core.Option) tierProc) {
		p := newProc(tierNamespace(), core.WithLocalTier(1<<20))
		body := make([]byte, 4096)
		for i := range body {
			body[i] = byte('a' + i%26)
		}
		lastModified := time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)
		var shared, personal atomic.Int64 // origin calls without and with credentials
		handler := func(w http.ResponseWriter, r *http.Request) error {
			if r.Header.Get("Authorization") != "" {
				personal.Add(1)
				w.Header().Set("Cache-Control", "private")
				w.Write([]byte("personal"))
				return nil
			}
			shared.Add(1)
			h := w.Header()
			h.Set("Content-Type", "text/plain")
			h.Set("Cache-Control", "max-age=3600") // not for requests with credentials
			h.Set("Etag", `"v1"`)
			h.Set("Last-Modified", lastModified)
			h["X-Multi"] = []string{"a", "b", "c"}
			w.Write(body)
			return nil
		}
		kinds := []struct {
			name   string
			method string
			header http.Header
			status int
		}{
			{"get", "GET", nil, 200},
			{"head", "HEAD", nil, 200},
			{"if-none-match", "GET", http.Header{"If-None-Match": {`"v1"`}}, 304},
			{"if-none-match-other", "GET", http.Header{"If-None-Match": {`"v0"`}}, 200},
			{"if-modified-since", "GET", http.Header{"If-Modified-Since": {lastModified}}, 304},
			{"range", "GET", http.Header{"Range": {"bytes=100-199"}}, 206},
			{"range-suffix", "GET", http.Header{"Range": {"bytes=-10"}}, 206},
			{"credentials", "GET", http.Header{"Authorization": {"Bearer x"}}, 200},
		}
		serve := func(i int) *httptest.ResponseRecorder {
			k := kinds[i]
			r := httptest.NewRequest(k.method, "http://example.test/item", nil)
			for name, vs := range k.header {
				r.Header[name] = vs
			}
			w := httptest.NewRecorder()
			if err := p.c.Middleware().Serve(w, r, "", handler); err != nil {
				t.Errorf("%s: Serve: %v", k.name, err)
			}
			return w
		}
		// answer is what a client can see of a response, less the fields
		// that change with the clock (Age, and the ttl in Cache-Status).
		answer := func(w *httptest.ResponseRecorder) string {
			h := w.Result().Header.Clone()
			h.Del("Age")
			if v := h.Get("Cache-Status"); strings.Contains(v, "detail=l1") {
				h.Set("Cache-Status", "l1")
			}
			var b strings.Builder
			fmt.Fprintf(&b, "%d\n", w.Code)
			h.Write(&b)
			b.Write(w.Body.Bytes())
			return b.String()
		}
		serve(0) // fills
		want := make([]string, len(kinds))
		for i, k := range kinds {
			w := serve(i)
			if w.Code != k.status {
				t.Fatalf("%s: status %d, want %d", k.name, w.Code, k.status)
			}
			if k.name != "credentials" && !strings.Contains(w.Header().Get("Cache-Status"), "detail=l1") {
				t.Fatalf("%s: Cache-Status %q, want a local-tier hit", k.name, w.Header().Get("Cache-Status"))
			}
			want[i] = answer(w)
		}
		if !strings.Contains(want[0], "\nX-Multi: a\r\nX-Multi: b\r\nX-Multi: c\r\n") {
			t.Fatalf("stored response lost its multi-valued field:\n%s", want[0])
		}
		var wg sync.WaitGroup
		const goroutines, rounds = 16, 100
		mismatches := make(chan string, goroutines)
		for g := range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := range rounds {
					i := (g + n) % len(kinds)
					w := serve(i)
					if got := answer(w); got != want[i] {
						mismatches <- fmt.Sprintf("%s: got\n%s\nwant\n%s", kinds[i].name, got, want[i])
						return
					}
					for _, vs := range w.Header() {
						for j := range vs {
							vs[j] = "scribbled"
						}
					}
				}
			}()
		}
		wg.Wait()
		close(mismatches)
		for m := range mismatches {
			t.Error(m)
		}
		if got := shared.Load(); got != 1 {
			t.Errorf("origin calls without credentials = %d, want 1 (the fill)", got)
		}
		if got, want := personal.Load(), int64(1+goroutines*rounds/len(kinds)); got != want {
			t.Errorf("origin calls with credentials = %d, want %d (every one)", got, want)
		}
	})
}

// TestLocalTierHTTPHitsKeepTheTierBound serves many responses, three
// times each, through a small tier: the later requests are local-tier
// hits, which the key memo then remembers (see memoEntry). Whatever the
// memo remembers, the bytes otter evicted must be freed: the heap grows
// by about the tier's budget, not by everything that passed through it
// (16 MiB; 18 MiB grown when the memo held the bytes). And the hits stay
// exact: every body is its own URL's.
func TestLocalTierHTTPHitsKeepTheTierBound(t *testing.T) {
	const budget, size, urls = 1 << 20, 8 << 10, 2048       // 16 MiB passes through a 1 MiB tier
	s := core.NewRedisStore(newClient(t, realRedisAddr(t))) // the bodies live in redis-server
	defer s.Close()
	c := core.New(s, tierNamespace(), core.WithLocalTier(budget))
	body := func(i int) []byte {
		b := make([]byte, size)
		copy(b, fmt.Sprintf("url %d;", i))
		return b
	}
	before := heapAlloc()
	for i := range urls {
		for range 3 {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest("GET", fmt.Sprintf("http://example.test/big/%d", i), nil)
			err := c.Middleware().Serve(rec, req, "", func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Cache-Control", "max-age=3600")
				_, err := w.Write(body(i))
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("url %d;", i); !strings.HasPrefix(rec.Body.String(), want) {
				t.Fatalf("/big/%d served %.12q, want it to start with %q", i, rec.Body.String(), want)
			}
		}
	}
	if c.Stats().LocalHits.Load() == 0 {
		t.Fatal("no local-tier hit: the test did not exercise the tier")
	}
	core.LocalTierSize(c)
	// The tier may hold its budget, with some slack, no more.
	grown := heapAlloc() - before
	if limit := int64(4 * budget); grown > limit {
		t.Errorf("heap grew by %d bytes after %d responses of %d bytes through a %d-byte tier; want at most %d", grown, urls, size, budget, limit)
	}
	runtime.KeepAlive(c)
}
