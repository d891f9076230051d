package core_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/core/internal/testhook"
)

// earlyTTL is the lifetime of the entries in the early refresh tests; the
// refresh window of their (instant) fetches is about the last 100 ms.
const earlyTTL = 10 * time.Second

// versioned is an origin whose nth call returns "version n". Calls after
// the first hold until release is closed, if it is set.
type versioned struct {
	calls   atomic.Int64
	started chan struct{} // closed when the second call starts
	release chan struct{}
	once    sync.Once
}

func newVersioned() *versioned {
	return &versioned{started: make(chan struct{}), release: make(chan struct{})}
}

func (o *versioned) fetch(ctx context.Context) ([]byte, time.Duration, error) {
	n := o.calls.Add(1)
	if n > 1 {
		o.once.Do(func() { close(o.started) })
		select {
		case <-o.release:
		case <-time.After(10 * time.Second):
		}
	}
	return []byte("version " + strconv.FormatInt(n, 10)), 0, nil
}

func earlyRefreshes(cs []*core.Cache) (n int64) {
	for _, c := range cs {
		n += c.Stats().EarlyRefreshes.Load()
	}
	return n
}

// TestEarlyRefreshNobodyWaitsOneCallFleetWide sends a herd through several
// caches ("processes") sharing a store, in the last moments of a hot
// entry's freshness: every caller is served the entry at once while one
// refresh runs for the whole fleet (the refresh's fetch holds until every
// caller has its answer, so a caller that waited for it would get the
// new version), and the refreshed entry replaces the old one everywhere.
// Hits before the refresh window, however many, refresh nothing.
func TestEarlyRefreshNobodyWaitsOneCallFleetWide(t *testing.T) {
	t.Run("shared store", func(t *testing.T) { testEarlyRefreshFleet(t) })
	// The refresh reads the entry past the local tier, which may still
	// hold the one another process has just replaced.
	t.Run("local tiers", func(t *testing.T) { testEarlyRefreshFleet(t, core.WithLocalTier(1<<20)) })
}

func testEarlyRefreshFleet(t *testing.T, opts ...core.Option) {
	forEachBackend(t, func(t *testing.T, newStore func() core.Store, _ func(time.Duration), _ redis.UniversalClient) {
		cs := caches(t, 3, newStore, append([]core.Option{namespace(t), core.TTL(earlyTTL), core.EarlyRefresh(2)}, opts...)...)
		clock := testhook.NewClock(time.Now())
		for _, c := range cs {
			testhook.SetClock(c, clock.Now)
		}
		ctx := context.Background()
		o := newVersioned()
		get := func(c *core.Cache) string {
			v, err := c.Do(ctx, "hot", o.fetch)
			if err != nil {
				t.Errorf("Do: %v", err)
			}
			return string(v)
		}
		get(cs[0])

		// Before the window: no client can set a refresh off.
		clock.Advance(earlyTTL / 2)
		for i := range 300 {
			if v := get(cs[i%len(cs)]); v != "version 1" {
				t.Fatalf("hit %d before the window = %q, want version 1", i, v)
			}
		}
		if n, r := o.calls.Load(), earlyRefreshes(cs); n != 1 || r != 0 {
			t.Fatalf("before the refresh window: %d origin calls and %d early refreshes, want 1 and 0", n, r)
		}

		clock.Advance(earlyTTL/2 - 50*time.Millisecond) // within the window
		const callers = 90
		bodies := make([]string, callers)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range callers {
			wg.Go(func() {
				<-start
				bodies[i] = get(cs[i%len(cs)])
			})
		}
		close(start)
		wg.Wait()
		close(o.release)
		for i, b := range bodies {
			if b != "version 1" {
				t.Errorf("caller %d in the refresh window got %q, want version 1 without waiting", i, b)
			}
		}
		// The refresh commits version 2 in the background.
		waitUntil(t, "every cache to serve the refreshed entry", func() bool {
			for _, c := range cs {
				if v, err := c.Do(ctx, "hot", o.fetch); err != nil || string(v) != "version 2" {
					return false
				}
			}
			return true
		})
		if n := o.calls.Load(); n != 2 {
			t.Errorf("origin called %d times, want 2: the fill and one early refresh for the fleet", n)
		}
		if r := earlyRefreshes(cs); r < 1 {
			t.Errorf("EarlyRefreshes = %d, want at least 1", r)
		}
		// The refreshed entry is fresh for a lifetime from its refresh.
		clock.Advance(earlyTTL - time.Second)
		if v := get(cs[1]); v != "version 2" {
			t.Errorf("after the old entry's expiry: %q, want version 2 (the refreshed entry)", v)
		}
	})
}

// TestPurgeDuringEarlyRefreshWins purges a key while an early refresh of
// it is fetching: the refresh's commit is refused, and every later
// request, in any process, misses and is served a fill that began after
// the purge. With fencing off (testhook.Unfence) the refresh's value
// would be stored over the purge, which the test tells apart.
func TestPurgeDuringEarlyRefreshWins(t *testing.T) {
	for _, tc := range []struct {
		name     string
		soft     bool
		unfenced bool
	}{
		{"hard", false, false},
		{"soft", true, false},
		{"unfenced (what the fence prevents)", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, newStore func() core.Store, _ func(time.Duration), _ redis.UniversalClient) {
				cs := caches(t, 2, newStore, namespace(t), core.TTL(earlyTTL), core.EarlyRefresh(2))
				clock := testhook.NewClock(time.Now())
				for _, c := range cs {
					testhook.SetClock(c, clock.Now)
					if tc.unfenced {
						testhook.Unfence(c)
					}
				}
				ctx := context.Background()
				o := newVersioned()
				if _, err := cs[0].Do(ctx, "hot", o.fetch); err != nil {
					t.Fatal(err)
				}
				clock.Advance(earlyTTL - 50*time.Millisecond)
				if v, err := cs[0].Do(ctx, "hot", o.fetch); err != nil || string(v) != "version 1" {
					t.Fatalf("hit in the window = %q, %v; want version 1", v, err)
				}
				<-o.started // the early refresh is fetching version 2
				var opts []core.PurgeOption
				if tc.soft {
					opts = append(opts, core.Soft())
				}
				if err := cs[1].Purge(ctx, "hot", opts...); err != nil {
					t.Fatal(err)
				}
				close(o.release)
				waitUntil(t, "the early refresh to end", func() bool {
					return cs[0].Stats().FencedCommits.Load()+cs[0].Stats().Commits.Load() >= 2
				})
				for i, c := range cs {
					v, err := c.Do(ctx, "hot", o.fetch)
					switch {
					case err != nil:
						t.Errorf("cache %d after the purge: %v", i, err)
					case tc.unfenced && string(v) != "version 2":
						t.Errorf("unfenced: cache %d served %q, want version 2: the refresh's commit should undo the purge without the fence", i, v)
					case !tc.unfenced && (string(v) == "version 1" || string(v) == "version 2"):
						t.Errorf("cache %d served %q after the purge: the purge was undone (want version 3, filled after it)", i, v)
					}
				}
				if f := cs[0].Stats().FencedCommits.Load(); !tc.unfenced && f != 1 {
					t.Errorf("FencedCommits = %d, want 1 (the early refresh's)", f)
				}
			})
		})
	}
}

// TestEarlyRefreshHTTP refreshes a response through the HTTP layer: the
// request in the window is answered from the stored response (with
// Connection: close, so its client's next request does not queue behind
// the refresh on its connection), the refresh's handler writes nothing to
// that client even when it streams, and the next request gets the
// refreshed response.
func TestEarlyRefreshHTTP(t *testing.T) {
	for _, tier := range []bool{false, true} {
		t.Run(fmt.Sprintf("tier=%v", tier), func(t *testing.T) {
			store := core.NewMemoryStore(0)
			t.Cleanup(func() { store.Close() })
			opts := []core.Option{namespace(t), core.EarlyRefresh(2)}
			if tier {
				// Local-tier hits are served on a path of their own: one due
				// for a refresh must still set it off.
				opts = append(opts, core.WithLocalTier(1<<20))
			}
			c := core.New(store, opts...)
			clock := testhook.NewClock(time.Now())
			testhook.SetClock(c, clock.Now)
			var calls atomic.Int64
			handler := func(w http.ResponseWriter, r *http.Request) error {
				n := calls.Add(1)
				w.Header().Set("Cache-Control", "max-age=10")
				fmt.Fprintf(w, "version %d", n)
				if n == 3 {
					http.NewResponseController(w).Flush() // streamed: not stored, not sent
				}
				return nil
			}
			serve := func() *httptest.ResponseRecorder {
				w := httptest.NewRecorder()
				if err := c.Middleware().Serve(w, httptest.NewRequest("GET", "http://example.com/feed", nil), "", handler); err != nil {
					t.Fatalf("Serve: %v", err)
				}
				return w
			}
			serve()
			clock.Advance(10*time.Second - 50*time.Millisecond)
			w := serve()
			if got := w.Body.String(); got != "version 1" || w.Header().Get("X-Cache") != "HIT" || w.Header().Get("Connection") != "close" {
				t.Errorf("in the window: %q, X-Cache %q, Connection %q; want version 1, HIT, close", got, w.Header().Get("X-Cache"), w.Header().Get("Connection"))
			}
			if n := calls.Load(); n != 2 {
				t.Fatalf("handler ran %d times, want 2: the fill and the refresh", n)
			}
			w = serve()
			if got := w.Body.String(); got != "version 2" || w.Header().Get("Connection") != "" {
				t.Errorf("after the refresh: %q, Connection %q; want version 2 and no Connection", got, w.Header().Get("Connection"))
			}
			clock.Advance(10*time.Second - 50*time.Millisecond)
			w = serve() // sets off a refresh whose handler streams
			if got := w.Body.String(); got != "version 2" {
				t.Errorf("with a streaming refresh: the client got %q, want version 2 alone", got)
			}
			if n := calls.Load(); n != 3 {
				t.Errorf("handler ran %d times, want 3", n)
			}
		})
	}
}

// TestTTLJitterShortensOnly fills many keys at once with TTLJitter: their
// lifetimes spread below the response's max-age, never above it.
func TestTTLJitterShortensOnly(t *testing.T) {
	store := core.NewMemoryStore(0)
	t.Cleanup(func() { store.Close() })
	c := core.New(store, namespace(t), core.TTLJitter(0.5))
	clock := testhook.NewClock(time.Now())
	testhook.SetClock(c, clock.Now)
	rt := c.Middleware()
	handler := func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=100")
		fmt.Fprint(w, r.URL.Path)
		return nil
	}
	seen := map[int]bool{}
	for i := range 40 {
		url := fmt.Sprintf("http://example.com/k%d", i)
		for range 2 {
			w := httptest.NewRecorder()
			if err := rt.Serve(w, httptest.NewRequest("GET", url, nil), "", handler); err != nil {
				t.Fatal(err)
			}
			status := w.Header().Get("Cache-Status")
			_, v, ok := strings.Cut(status, "ttl=")
			if !ok {
				continue // the fill
			}
			ttl, err := strconv.Atoi(strings.SplitN(v, ";", 2)[0])
			if err != nil || ttl < 49 || ttl > 100 {
				t.Errorf("%s: Cache-Status %q, want a ttl between 50 and 100 s", url, status)
			}
			seen[ttl] = true
		}
	}
	if len(seen) < 2 {
		t.Errorf("40 keys filled together got lifetimes %v: want them spread", seen)
	}
}

// TestEarlyRefreshSparseTraffic sends a key a request every 300 ms, each
// to the next of three caches ("processes"), with a lifetime of 2 s and
// an instant origin: the refresh window proper (the last 100 ms) would
// see a request only now and then, and the entry would expire with the
// next request waiting. The caches see the key requested every 900 ms
// and widen its window, and a hit in the wider part holds until the
// window proper opens and refreshes then: every request after the first
// fill is a hit, and each entry is replaced by exactly one origin call
// for the whole fleet. The sleep of the hold advances the fake clock.
func TestEarlyRefreshSparseTraffic(t *testing.T) {
	t.Run("shared store", func(t *testing.T) { testEarlyRefreshSparse(t) })
	t.Run("local tiers", func(t *testing.T) { testEarlyRefreshSparse(t, core.WithLocalTier(1<<20)) })
}

// serveVersioned serves GET http://example.com/sparse through c, whose
// handler answers "version N", N counting its calls in calls.
func serveVersioned(t *testing.T, c *core.Cache, calls *atomic.Int64) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	err := c.Middleware().Serve(w, httptest.NewRequest("GET", "http://example.com/sparse", nil), "", func(w http.ResponseWriter, r *http.Request) error {
		fmt.Fprintf(w, "version %d", calls.Add(1))
		return nil
	})
	if err != nil {
		t.Errorf("Serve: %v", err)
	}
	return w
}

func testEarlyRefreshSparse(t *testing.T, opts ...core.Option) {
	forEachBackend(t, func(t *testing.T, newStore func() core.Store, _ func(time.Duration), _ redis.UniversalClient) {
		const ttl = 2 * time.Second
		cs := caches(t, 3, newStore, append([]core.Option{namespace(t), core.TTL(ttl), core.EarlyRefresh(2)}, opts...)...)
		clock := testhook.NewClock(time.Now())
		for _, c := range cs {
			testhook.SetClock(c, clock.Now)
			testhook.SetSleep(c, func(d time.Duration, _ <-chan struct{}) { clock.Advance(d) })
		}
		var calls atomic.Int64
		serve := func(c *core.Cache) *httptest.ResponseRecorder { return serveVersioned(t, c, &calls) }
		serve(cs[0])
		began := clock.Now()
		last := 1
		for i := 1; clock.Now().Sub(began) < 10*ttl; i++ {
			clock.Advance(300 * time.Millisecond)
			w := serve(cs[i%len(cs)])
			var v int
			if _, err := fmt.Sscanf(w.Body.String(), "version %d", &v); err != nil || w.Header().Get("X-Cache") != "HIT" {
				t.Fatalf("request %d at %v: %q, X-Cache %q, Cache-Status %q; want a hit: it waited for the origin",
					i, clock.Now().Sub(began), w.Body.String(), w.Header().Get("X-Cache"), w.Header().Get("Cache-Status"))
			}
			if v != last && v != last+1 {
				t.Fatalf("request %d: version %d after version %d", i, v, last)
			}
			last = v
		}
		// Every origin call replaced the entry served before it, once:
		// the last one's version may not have been served yet.
		if n := calls.Load(); n < int64(last) || n > int64(last)+1 {
			t.Errorf("%d origin calls for %d versions served: want one call per entry", n, last)
		}
		if last < 9 {
			t.Errorf("%d versions served over 10 lifetimes, want an entry refreshed before each expiry", last)
		}
		var held int64
		for _, c := range cs {
			held += c.Stats().HeldRefreshes.Load()
		}
		if held == 0 {
			t.Errorf("no refresh was held for the window: the test did not exercise the sparse path")
		}
	})
}

// TestEarlyRefreshSparseHoldsOneCallFleetWide lets a hit in a sparse
// key's wider window hold in each of three caches at once: when the
// window proper opens, one of them refreshes the entry for the fleet and
// the others find the lock taken or the entry replaced.
func TestEarlyRefreshSparseHoldsOneCallFleetWide(t *testing.T) {
	forEachBackend(t, func(t *testing.T, newStore func() core.Store, _ func(time.Duration), _ redis.UniversalClient) {
		const ttl = 2 * time.Second
		cs := caches(t, 3, newStore, namespace(t), core.TTL(ttl), core.EarlyRefresh(2))
		clock := testhook.NewClock(time.Now())
		holding := make(chan time.Duration, len(cs))
		release := make(chan struct{})
		for _, c := range cs {
			testhook.SetClock(c, clock.Now)
			testhook.SetSleep(c, func(d time.Duration, _ <-chan struct{}) {
				holding <- d
				<-release
			})
		}
		var calls atomic.Int64
		serve := func(c *core.Cache) *httptest.ResponseRecorder { return serveVersioned(t, c, &calls) }
		// Two requests per cache a second apart: each sees the key
		// requested every second.
		for _, c := range cs {
			serve(c)
		}
		clock.Advance(ttl / 4)
		for _, c := range cs {
			serve(c)
		}
		if n := calls.Load(); n != 1 {
			t.Fatalf("before the windows: %d origin calls, want 1", n)
		}
		clock.Advance(ttl / 2) // 1.5 s: in the wider window, before the last 100 ms
		bodies := make([]string, len(cs))
		var wg sync.WaitGroup
		for i, c := range cs {
			wg.Go(func() { bodies[i] = serve(c).Body.String() })
		}
		served := make(chan struct{})
		go func() { wg.Wait(); close(served) }()
		var longest time.Duration
		for range cs {
			select {
			case d := <-holding:
				longest = max(longest, d)
			case <-served:
				t.Fatal("the hits in the wider window returned without holding a refresh")
			}
		}
		clock.Advance(longest) // the window proper opens
		close(release)
		<-served
		for i, b := range bodies {
			if b != "version 1" {
				t.Errorf("cache %d: %q, want version 1 (served before the hold)", i, b)
			}
		}
		if n := calls.Load(); n != 2 {
			t.Errorf("%d origin calls, want 2: the fill and one refresh for the fleet", n)
		}
		for i, c := range cs {
			if b := serve(c).Body.String(); b != "version 2" {
				t.Errorf("cache %d after the refresh: %q, want version 2", i, b)
			}
		}
	})
}

// TestEarlyRefreshSparseHoldWokenInWindow holds a sparse key's refresh
// and then sends a hit within the window proper to the same cache: the
// hit wakes the held refresh (as it would have set a hot key's off), is
// served the old entry at once, and the refresh replaces the entry with
// one origin call.
func TestEarlyRefreshSparseHoldWokenInWindow(t *testing.T) {
	forEachBackend(t, func(t *testing.T, newStore func() core.Store, _ func(time.Duration), _ redis.UniversalClient) {
		const ttl = 2 * time.Second
		c := core.New(newStore(), namespace(t), core.TTL(ttl), core.EarlyRefresh(2))
		clock := testhook.NewClock(time.Now())
		testhook.SetClock(c, clock.Now)
		holding := make(chan struct{}, 1)
		giveUp := make(chan struct{})
		woke := make(chan bool, 1)
		testhook.SetSleep(c, func(_ time.Duration, wake <-chan struct{}) {
			holding <- struct{}{}
			select {
			case <-wake:
				woke <- true
			case <-giveUp:
				// The hit in the window has returned: its wake, if sent,
				// is in the channel's buffer.
				select {
				case <-wake:
					woke <- true
				default:
					woke <- false
				}
			}
		})
		var calls atomic.Int64
		serve := func() string { return serveVersioned(t, c, &calls).Body.String() }
		serve()
		clock.Advance(ttl / 4)
		serve() // the key is requested every 500 ms
		clock.Advance(ttl / 2)
		held := make(chan string, 1)
		go func() { held <- serve() }() // 1.5 s: in the wider window; holds
		<-holding
		clock.Advance(ttl/4 - 50*time.Millisecond) // within the last 100 ms
		if b := serve(); b != "version 1" {
			t.Errorf("hit in the window proper: %q, want version 1", b)
		}
		close(giveUp)
		if !<-woke {
			t.Error("the hit in the window proper did not wake the held refresh")
		}
		if b := <-held; b != "version 1" {
			t.Errorf("held hit: %q, want version 1", b)
		}
		if n := calls.Load(); n != 2 {
			t.Errorf("%d origin calls, want 2: the fill and the woken refresh", n)
		}
		if b := serve(); b != "version 2" {
			t.Errorf("after the refresh: %q, want version 2", b)
		}
	})
}
