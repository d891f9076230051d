package core_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/core/cachetest"
)

func TestStoreConformance(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			newStore, advance, _ := b.open(t)
			cachetest.TestStore(t, cachetest.Harness{
				New:     func(*testing.T) core.Store { return newStore() },
				Advance: advance,
			})
		})
	}
}

// origin is a fetch function that counts its calls and can be held until
// released.
type origin struct {
	calls   atomic.Int64
	started chan struct{} // receives once per call, if not full
	release chan struct{} // closed to let calls return; nil: return at once
	ttl     time.Duration
	value   func(n int64) string
	err     error
}

func newOrigin() *origin {
	return &origin{started: make(chan struct{}, 1000), value: func(n int64) string { return fmt.Sprintf("value-%d", n) }}
}

func (o *origin) fetch(ctx context.Context) ([]byte, time.Duration, error) {
	n := o.calls.Add(1)
	select {
	case o.started <- struct{}{}:
	default:
	}
	if o.release != nil {
		select {
		case <-o.release:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
	if o.err != nil {
		return nil, 0, o.err
	}
	return []byte(o.value(n)), o.ttl, nil
}

// errorLog is an Observer that keeps what it is given.
type errorLog struct {
	mu   sync.Mutex
	errs []error
}

func (l *errorLog) observe(err error) {
	l.mu.Lock()
	l.errs = append(l.errs, err)
	l.mu.Unlock()
}

func (l *errorLog) ops() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ops []string
	for _, err := range l.errs {
		var ce *core.Error
		if !errors.As(err, &ce) {
			ops = append(ops, "not-*core.Error")
			continue
		}
		ops = append(ops, ce.Op)
	}
	return ops
}

func forEachBackend(t *testing.T, f func(t *testing.T, newStore func() core.Store, advance func(time.Duration), raw redis.UniversalClient)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			newStore, advance, raw := b.open(t)
			f(t, newStore, advance, raw)
		})
	}
}

func TestDoFillsOnceThenHits(t *testing.T) {
	forEachBackend(t, func(t *testing.T, newStore func() core.Store, _ func(time.Duration), _ redis.UniversalClient) {
		c := core.New(newStore(), namespace(t))
		o := newOrigin()
		for i := range 3 {
			got, err := c.Do(context.Background(), "k", o.fetch)
			if err != nil || string(got) != "value-1" {
				t.Fatalf("Do #%d = (%q, %v), want value-1", i, got, err)
			}
		}
		if n := o.calls.Load(); n != 1 {
			t.Errorf("origin called %d times, want 1", n)
		}
		if h := c.Stats().Hits.Load(); h != 2 {
			t.Errorf("Stats().Hits = %d, want 2", h)
		}
		// Another key is another fill.
		if got, _ := c.Do(context.Background(), "other", o.fetch); string(got) != "value-2" {
			t.Errorf("Do(other) = %q, want value-2", got)
		}
	})
}

func TestDoRefillsAfterTTL(t *testing.T) {
	forEachBackend(t, func(t *testing.T, newStore func() core.Store, advance func(time.Duration), _ redis.UniversalClient) {
		c := core.New(newStore(), namespace(t), core.TTL(time.Hour))
		o := newOrigin()
		o.ttl = 200 * time.Millisecond // the fetch's own TTL wins over the default
		c.Do(context.Background(), "k", o.fetch)
		advance(400 * time.Millisecond)
		got, err := c.Do(context.Background(), "k", o.fetch)
		if err != nil || string(got) != "value-2" {
			t.Errorf("Do after TTL = (%q, %v), want a new fill value-2", got, err)
		}
	})
}

func TestDoErrorIsReturnedAndNotCached(t *testing.T) {
	forEachBackend(t, func(t *testing.T, newStore func() core.Store, _ func(time.Duration), _ redis.UniversalClient) {
		c := core.New(newStore(), namespace(t))
		o := newOrigin()
		o.err = errors.New("origin down")
		for i := range 2 {
			if _, err := c.Do(context.Background(), "k", o.fetch); !errors.Is(err, o.err) {
				t.Fatalf("Do #%d error = %v, want the origin's error", i, err)
			}
		}
		if n := o.calls.Load(); n != 2 {
			t.Errorf("origin called %d times, want 2 (errors are not cached)", n)
		}
	})
}

func TestDoPanicReachesEveryCaller(t *testing.T) {
	forEachBackend(t, func(t *testing.T, newStore func() core.Store, _ func(time.Duration), _ redis.UniversalClient) {
		c := core.New(newStore(), namespace(t))
		const n = 20
		var recovered atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range n {
			wg.Go(func() {
				defer func() {
					if v := recover(); v != nil && strings.Contains(fmt.Sprint(v), "origin exploded") {
						recovered.Add(1)
					}
				}()
				<-start
				c.Do(context.Background(), "k", func(context.Context) ([]byte, time.Duration, error) {
					panic("origin exploded")
				})
			})
		}
		close(start)
		wg.Wait()
		if got := recovered.Load(); got != n {
			t.Errorf("%d of %d callers saw the origin's panic, want all", got, n)
		}
	})
}

func TestNoStoreValueIsNotShared(t *testing.T) {
	forEachBackend(t, func(t *testing.T, newStore func() core.Store, _ func(time.Duration), _ redis.UniversalClient) {
		c := core.New(newStore(), namespace(t))
		o := newOrigin()
		o.ttl = core.NoStore
		o.release = make(chan struct{})
		const n = 10
		got := make([]string, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				v, err := c.Do(context.Background(), "private", o.fetch)
				if err != nil {
					t.Errorf("Do: %v", err)
				}
				got[i] = string(v)
			})
		}
		<-o.started
		close(o.release)
		wg.Wait()
		seen := map[string]bool{}
		for _, v := range got {
			if seen[v] {
				t.Errorf("value %q was served to two callers; NoStore values must not be shared", v)
			}
			seen[v] = true
		}
		if v, _ := c.Do(context.Background(), "private", o.fetch); seen[string(v)] {
			t.Errorf("a later Do got %q again: the NoStore value was stored", v)
		}
	})
}

// stampede releases perCache goroutines on each cache at once on one cold
// key and returns the values they got.
func stampede(t *testing.T, caches []*core.Cache, perCache int, key string, fetch func(context.Context) ([]byte, time.Duration, error)) []string {
	t.Helper()
	var wg sync.WaitGroup
	start := make(chan struct{})
	got := make([]string, len(caches)*perCache)
	for i := range got {
		c := caches[i%len(caches)]
		wg.Go(func() {
			<-start
			v, err := c.Do(context.Background(), key, fetch)
			if err != nil {
				t.Errorf("Do: %v", err)
			}
			got[i] = string(v)
		})
	}
	close(start)
	wg.Wait()
	return got
}

func distinct(values []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range values {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// caches returns n caches, each on its own store (its own Redis client),
// all in one namespace: n "processes" of one application. Their store
// timeout is a generous [patientStore] unless opts set another: tests that
// count origin calls must not see a slow round trip under the race
// detector on 2 cores turn into a fail-open second fill.
func caches(t *testing.T, n int, newStore func() core.Store, opts ...core.Option) []*core.Cache {
	out := make([]*core.Cache, n)
	for i := range out {
		out[i] = core.New(newStore(), append([]core.Option{patientStore}, opts...)...)
	}
	return out
}

// patientStore is the store timeout of caches in tests that count origin
// calls or distinct values; the 250 ms default is for production, where a
// store slower than that should be skipped, not waited for.
var patientStore = core.WithStoreTimeout(2 * time.Second)

func TestStampedeFillsOnceFleetWide(t *testing.T) {
	forEachBackend(t, func(t *testing.T, newStore func() core.Store, _ func(time.Duration), _ redis.UniversalClient) {
		var log errorLog
		cs := caches(t, 4, newStore, namespace(t), core.WithObserver(log.observe),
			core.WithStoreTimeout(2*time.Second)) // generous: the race detector on 2 cores is slow
		o := newOrigin()
		o.release = make(chan struct{})
		go func() {
			<-o.started
			time.Sleep(100 * time.Millisecond) // let the herd pile up behind the fill
			close(o.release)
		}()
		got := stampede(t, cs, 200, "cold", o.fetch)
		if n := o.calls.Load(); n != 1 {
			t.Errorf("origin called %d times by 4 caches x 200 callers, want 1", n)
		}
		if d := distinct(got); len(d) != 1 {
			t.Errorf("callers got %d distinct values %q, want 1", len(d), d)
		}
		if ops := log.ops(); len(ops) > 0 {
			t.Errorf("store errors during the stampede: %v", ops)
		}
	})
}

func TestStampedeWithoutLockStillOneValue(t *testing.T) {
	forEachBackend(t, func(t *testing.T, newStore func() core.Store, _ func(time.Duration), _ redis.UniversalClient) {
		cs := caches(t, 4, newStore, namespace(t), core.WithoutLock(), core.WithStoreTimeout(2*time.Second))
		o := newOrigin()
		got := stampede(t, cs, 100, "cold", o.fetch)
		if n := o.calls.Load(); n < 1 || n > 4 {
			t.Errorf("origin called %d times, want 1 to 4 (once per cache at most)", n)
		}
		if d := distinct(got); len(d) != 1 {
			t.Errorf("callers got %d distinct values %q, want the one committed value", len(d), d)
		}
	})
}

func TestLockLostMidFetchStillOneValue(t *testing.T) {
	for _, b := range backends[1:] { // Redis only: the test deletes the lock key
		t.Run(b.name, func(t *testing.T) {
			newStore, _, raw := b.open(t)
			ns := fmt.Sprintf("lost%d", time.Now().UnixNano())
			a := core.New(newStore(), core.WithNamespace(ns), patientStore)
			bc := core.New(newStore(), core.WithNamespace(ns), patientStore)

			slow := newOrigin()
			slow.release = make(chan struct{})
			slow.value = func(int64) string { return "from-a" }
			var wg sync.WaitGroup
			gotA := make([]string, 20)
			for i := range gotA {
				wg.Go(func() {
					v, err := a.Do(context.Background(), "k", slow.fetch)
					if err != nil {
						t.Errorf("a.Do: %v", err)
					}
					gotA[i] = string(v)
				})
			}
			<-slow.started

			// Force the lock to expire while a's fetch runs.
			locks, err := keys(context.Background(), raw, ns+":*:lock")
			if err != nil || len(locks) != 1 {
				t.Fatalf("lock keys = %v, %v; want one", locks, err)
			}
			raw.Del(context.Background(), locks[0])

			fast := newOrigin()
			fast.value = func(int64) string { return "from-b" }
			gotB := stampede(t, []*core.Cache{bc}, 20, "k", fast.fetch)
			close(slow.release)
			wg.Wait()

			if n := slow.calls.Load() + fast.calls.Load(); n != 2 {
				t.Errorf("origin called %d times, want 2 (the lock was lost)", n)
			}
			if d := distinct(append(gotA, gotB...)); len(d) != 1 || d[0] != "from-b" {
				t.Errorf("callers got %q, want only the first commit, from-b", d)
			}
		})
	}
}

func TestLeaderCancelledWaitersStillServed(t *testing.T) {
	forEachBackend(t, func(t *testing.T, newStore func() core.Store, _ func(time.Duration), _ redis.UniversalClient) {
		cs := caches(t, 2, newStore, namespace(t))
		o := newOrigin()
		o.release = make(chan struct{})
		fetch := func(ctx context.Context) ([]byte, time.Duration, error) {
			v, ttl, err := o.fetch(ctx)
			if err == nil && ctx.Err() != nil {
				err = fmt.Errorf("fetch context ended: %w", ctx.Err())
			}
			return v, ttl, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		leaderErr := make(chan error, 1)
		go func() {
			_, err := cs[0].Do(ctx, "k", fetch)
			leaderErr <- err
		}()
		<-o.started

		var wg sync.WaitGroup
		got := make([]string, 20)
		for i := range got {
			wg.Go(func() {
				v, err := cs[i%2].Do(context.Background(), "k", fetch)
				if err != nil {
					t.Errorf("waiter: %v", err)
				}
				got[i] = string(v)
			})
		}
		cancel()
		if err := <-leaderErr; !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled leader's Do error = %v, want context.Canceled", err)
		}
		close(o.release)
		wg.Wait()
		if d := distinct(got); len(d) != 1 || d[0] != "value-1" {
			t.Errorf("waiters got %q, want only value-1", d)
		}
		if n := o.calls.Load(); n != 1 {
			t.Errorf("origin called %d times, want 1", n)
		}
	})
}

// keySpy records the store keys the cache commits to.
type keySpy struct {
	core.Store
	mu   sync.Mutex
	keys []string
}

func (s *keySpy) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) ([]byte, bool, error) {
	s.mu.Lock()
	s.keys = append(s.keys, key)
	s.mu.Unlock()
	return s.Store.SetNX(ctx, key, value, ttl)
}

func TestCorruptEntryIsMissAndReplaced(t *testing.T) {
	forEachBackend(t, func(t *testing.T, newStore func() core.Store, _ func(time.Duration), _ redis.UniversalClient) {
		spy := &keySpy{Store: newStore()}
		var log errorLog
		c := core.New(spy, namespace(t), core.WithObserver(log.observe))
		o := newOrigin()
		c.Do(context.Background(), "k", o.fetch)
		key := spy.keys[0]
		for _, junk := range [][]byte{[]byte("not ours"), []byte("FC\x01\x00short"), {}} {
			spy.Store.Invalidate(context.Background(), key, nil, junk, time.Hour)
			want := fmt.Sprintf("value-%d", o.calls.Load()+1)
			got, err := c.Do(context.Background(), "k", o.fetch)
			if err != nil || string(got) != want {
				t.Fatalf("Do over %q = (%q, %v), want a fresh fill %q", junk, got, err, want)
			}
			if again, _ := c.Do(context.Background(), "k", o.fetch); string(again) != want {
				t.Errorf("Do after replacing %q = %q, want the replacement %q served as a hit", junk, again, want)
			}
		}
		if ops := strings.Join(log.ops(), ","); !strings.Contains(ops, "decode") {
			t.Errorf("observer saw %q, want decode errors reported", ops)
		}
	})
}

func TestRedisDownFailsOpenThenRecovers(t *testing.T) {
	srv := startRedisServer(t)
	var log errorLog
	c := core.New(core.NewRedisStore(newClient(t, srv.Addr())), namespace(t), core.WithObserver(log.observe))
	o := newOrigin()
	ctx := context.Background()
	if got, _ := c.Do(ctx, "before", o.fetch); string(got) != "value-1" {
		t.Fatalf("Do = %q, want value-1", got)
	}

	srv.Stop()
	for i := range 5 {
		got, err := c.Do(ctx, "during", o.fetch)
		if want := fmt.Sprintf("value-%d", i+2); err != nil || string(got) != want {
			t.Fatalf("Do with Redis down = (%q, %v), want uncached %q", got, err, want)
		}
	}
	if len(log.ops()) == 0 {
		t.Error("no errors reported to the observer while Redis was down")
	}

	srv.Start() // same port, empty data
	// The circuit breaker lets a probe through after its cool-down; from
	// then on values are stored again.
	deadline := time.Now().Add(10 * time.Second)
	for c.Stats().Commits.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("caching did not resume within 10s of Redis coming back")
		}
		if _, err := c.Do(ctx, "after", o.fetch); err != nil {
			t.Fatalf("Do after restart: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	calls := o.calls.Load()
	for range 3 {
		if _, err := c.Do(ctx, "after", o.fetch); err != nil {
			t.Fatalf("Do after restart: %v", err)
		}
	}
	if n := o.calls.Load() - calls; n != 0 {
		t.Errorf("origin called %d times for 3 Do calls once caching resumed, want 0 (hits)", n)
	}
}

// noWakeStore drops fill notifications, leaving waiters to poll.
type noWakeStore struct{ core.Store }

func (noWakeStore) Subscribe(context.Context, string) (<-chan struct{}, func(), error) {
	return nil, func() {}, nil
}

func TestWaitersPollWithoutNotifications(t *testing.T) {
	forEachBackend(t, func(t *testing.T, newStore func() core.Store, _ func(time.Duration), _ redis.UniversalClient) {
		var log errorLog
		ns := namespace(t)
		opts := []core.Option{ns, patientStore, core.WithPollInterval(20 * time.Millisecond), core.WithObserver(log.observe)}
		cs := []*core.Cache{core.New(noWakeStore{newStore()}, opts...), core.New(noWakeStore{newStore()}, opts...)}
		o := newOrigin()
		o.release = make(chan struct{})
		go func() {
			<-o.started
			time.Sleep(50 * time.Millisecond)
			close(o.release)
		}()
		got := stampede(t, cs, 10, "k", o.fetch)
		if n := o.calls.Load(); n != 1 {
			t.Errorf("origin called %d times, want 1", n)
		}
		if d := distinct(got); len(d) != 1 {
			t.Errorf("got %d distinct values, want 1", len(d))
		}
		if ops := log.ops(); len(ops) > 0 {
			t.Errorf("store errors while polling: %v", ops)
		}
	})
}

func TestCallerContextEndsWait(t *testing.T) {
	store := core.NewMemoryStore(0)
	defer store.Close()
	c := core.New(store, namespace(t))
	o := newOrigin()
	o.release = make(chan struct{})
	go c.Do(context.Background(), "k", o.fetch)
	<-o.started
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := c.Do(ctx, "k", o.fetch); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Do with an expiring context error = %v, want DeadlineExceeded", err)
	}
	close(o.release)
	// The first fill still completes and is cached.
	deadline := time.Now().Add(5 * time.Second)
	for c.Stats().Commits.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got, _ := c.Do(context.Background(), "k", o.fetch); !bytes.Equal(got, []byte("value-1")) {
		t.Errorf("Do after the abandoned wait = %q, want value-1", got)
	}
}

func TestUncacheableKeyIsNotQueuedBehindTheLock(t *testing.T) {
	forEachBackend(t, func(t *testing.T, newStore func() core.Store, _ func(time.Duration), _ redis.UniversalClient) {
		cs := caches(t, 2, newStore, namespace(t))
		private := func(context.Context) ([]byte, time.Duration, error) {
			return []byte("for one caller"), core.NoStore, nil
		}
		if _, err := cs[0].Do(context.Background(), "k", private); err != nil {
			t.Fatal(err)
		}
		// The key is now marked uncacheable. A slow fetch in one process
		// must not hold up another process's fetch of the same key.
		o := newOrigin()
		o.ttl = core.NoStore
		o.release = make(chan struct{})
		defer close(o.release)
		go cs[0].Do(context.Background(), "k", o.fetch)
		<-o.started
		done := make(chan error, 1)
		go func() {
			_, err := cs[1].Do(context.Background(), "k", private)
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Do: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("a fetch of an uncacheable key waited for another process's fill")
		}
	})
}

// getCounter counts a store's Get calls.
type getCounter struct {
	core.Store
	gets atomic.Int64
}

func (g *getCounter) Get(ctx context.Context, key string) ([]byte, error) {
	g.gets.Add(1)
	return g.Store.Get(ctx, key)
}

// TestColdHerdLooksUpOncePerProcess checks that callers arriving while
// this process fills a key join the fill without a store lookup each.
func TestColdHerdLooksUpOncePerProcess(t *testing.T) {
	store := core.NewMemoryStore(0)
	defer store.Close()
	counter := &getCounter{Store: store}
	c := core.New(counter, namespace(t))
	o := newOrigin()
	o.release = make(chan struct{})
	go c.Do(context.Background(), "k", o.fetch)
	<-o.started
	const herd = 200
	var wg sync.WaitGroup
	parked := make(chan struct{}, herd)
	for range herd {
		ctx := &parkedContext{Context: context.Background(), parked: parked}
		wg.Go(func() { c.Do(ctx, "k", o.fetch) })
	}
	waitParked(t, parked, herd) // the whole herd has joined the fill
	close(o.release)
	wg.Wait()
	// The leader's lookup and its recheck under the lock; none for the
	// callers that joined its fill.
	gets, hits, joined := counter.gets.Load(), c.Stats().Hits.Load(), c.Stats().Collapsed.Load()
	if gets != 2 || hits != 0 || joined != herd {
		t.Errorf("%d callers (%d joined the fill, %d hit after it) made %d store lookups, want all joined and 2 lookups", herd, joined, hits, gets)
	}
	if n := o.calls.Load(); n != 1 {
		t.Errorf("origin called %d times, want 1", n)
	}
}
