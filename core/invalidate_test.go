package core_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/core/internal/testhook"
)

// stallingInvalidations is a store whose Invalidate hangs until its
// context ends, as a Redis that stopped answering does.
type stallingInvalidations struct{ *core.MemoryStore }

func (s stallingInvalidations) Invalidate(ctx context.Context, key string, old, marker []byte, ttl time.Duration) (bool, error) {
	<-ctx.Done()
	return false, ctx.Err()
}

// TestFailedInvalidationIsReported checks that an unsafe request whose
// invalidation times out is reported to the Observer: the timeout is the
// store's, not the client's, so it must not be dropped as "caller gone".
func TestFailedInvalidationIsReported(t *testing.T) {
	var mu sync.Mutex
	var got []*core.Error
	store := core.NewMemoryStore(0)
	t.Cleanup(func() { store.Close() })
	c := core.New(stallingInvalidations{store},
		core.WithStoreTimeout(20*time.Millisecond),
		core.WithObserver(func(err error) {
			var ce *core.Error
			if errors.As(err, &ce) {
				mu.Lock()
				got = append(got, ce)
				mu.Unlock()
			}
		}))
	req := httptest.NewRequest(http.MethodPost, "http://example.com/items/1", nil)
	err := c.Middleware().Serve(httptest.NewRecorder(), req, "", func(w http.ResponseWriter, r *http.Request) error {
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
	if err != nil {
		t.Fatalf("Serve(POST) = %v, want nil: a failed invalidation is the cache's to absorb", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0].Op != core.OpInvalidate || !errors.Is(got[0], context.DeadlineExceeded) {
		t.Errorf("observer got %v, want one %q error wrapping context.DeadlineExceeded", got, core.OpInvalidate)
	}
	if n := c.Stats().Errors.Load(); n != 1 {
		t.Errorf("Stats().Errors = %d, want 1", n)
	}
}

// purgeKinds are the ways an invalidation reaches a key in the tests below.
var purgeKinds = []struct {
	name string
	opts []core.PurgeOption
}{
	{"hard", nil},
	{"soft", []core.PurgeOption{core.Soft()}},
}

// blockedFetch is an origin whose first call returns v1 only once
// released; every later call returns v2 at once.
type blockedFetch struct {
	calls   atomic.Int64
	started chan struct{}
	release chan struct{}
}

func newBlockedFetch() *blockedFetch {
	return &blockedFetch{started: make(chan struct{}), release: make(chan struct{})}
}

func (o *blockedFetch) fetch(ctx context.Context) ([]byte, time.Duration, error) {
	if o.calls.Add(1) == 1 {
		close(o.started)
		select {
		case <-o.release:
		case <-time.After(10 * time.Second):
			return nil, 0, errors.New("never released")
		}
		return []byte("v1"), time.Hour, nil
	}
	return []byte("v2"), time.Hour, nil
}

// goDo runs c.Do in a goroutine and returns its outcome on a channel.
func goDo(c *core.Cache, key string, fetch func(context.Context) ([]byte, time.Duration, error)) <-chan string {
	ch := make(chan string, 1)
	go func() {
		v, err := c.Do(context.Background(), key, fetch)
		if err != nil {
			ch <- "error: " + err.Error()
			return
		}
		ch <- string(v)
	}()
	return ch
}

// TestPurgeFencesFillInFlight is the write-then-read guarantee on the
// engine: a fill whose fetch began before a purge (in another process)
// finishes after it. Its leader, who asked before the purge, gets its
// value; nothing that starts after the purge does, in either process, and
// the value is not stored. With and without the local tier, on every store.
func TestPurgeFencesFillInFlight(t *testing.T) {
	for _, tier := range []bool{false, true} {
		t.Run(fmt.Sprintf("tier=%v", tier), func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, newStore func() core.Store, _ func(time.Duration), _ redis.UniversalClient) {
				for _, kind := range purgeKinds {
					t.Run(kind.name, func(t *testing.T) {
						opts := []core.Option{namespace(t), patientStore}
						if tier {
							opts = append(opts, core.WithLocalTier(1<<20))
						}
						a, b := core.New(newStore(), opts...), core.New(newStore(), opts...)
						joined := onJoin(a)
						// A value both caches have read, so that the local
						// tiers hold it when the purge comes.
						for _, c := range []*core.Cache{a, b} {
							if _, err := c.Do(context.Background(), "old", func(context.Context) ([]byte, time.Duration, error) {
								return []byte("v0"), time.Hour, nil
							}); err != nil {
								t.Fatal(err)
							}
						}
						o := newBlockedFetch()
						leader := goDo(a, "k", o.fetch)
						<-o.started
						for _, key := range []string{"k", "old"} {
							if err := b.Purge(context.Background(), key, kind.opts...); err != nil {
								t.Fatalf("Purge(%q): %v", key, err)
							}
						}
						// Started after the purge returned: in the filling
						// process (which may join the fill in flight) and in
						// the purging one (which waits for it).
						lateA, lateB := goDo(a, "k", o.fetch), goDo(b, "k", o.fetch)
						<-joined // the late Do in A joined the fill in flight
						close(o.release)
						if got := <-leader; got != "v1" {
							t.Errorf("leader, which asked before the purge, got %q, want v1", got)
						}
						for name, ch := range map[string]<-chan string{"A": lateA, "B": lateB} {
							if got := <-ch; got != "v2" {
								t.Errorf("request in %s started after the purge got %q, want v2", name, got)
							}
						}
						for _, c := range []*core.Cache{a, b} {
							if got := do(t, c, "k", o.fetch); got != "v2" {
								t.Errorf("a later Do got %q, want v2: the fenced v1 was stored", got)
							}
						}
						// The purged "old": the purging process drops it at
						// once; the other one once the invalidation reaches it.
						if got := do(t, b, "old", staticFetch("new")); got != "new" {
							t.Errorf("purging process read %q after purging it, want new", got)
						}
						waitFor(t, "the purge of old to reach the other process", func() bool {
							return do(t, a, "old", staticFetch("new")) == "new"
						})
						if n := o.calls.Load(); n != 2 {
							t.Errorf("origin called %d times, want 2 (the fenced fill and one refill)", n)
						}
						if n := a.Stats().FencedCommits.Load(); n != 1 {
							t.Errorf("Stats().FencedCommits = %d, want 1", n)
						}
					})
				}
			})
		})
	}
}

// onJoin returns a channel that receives (if it has room) each time a
// caller joins c's fill in flight without a lookup.
func onJoin(c *core.Cache) <-chan struct{} {
	joined := make(chan struct{}, 1)
	testhook.OnJoin(c, func(string) {
		select {
		case joined <- struct{}{}:
		default:
		}
	})
	return joined
}

func staticFetch(v string) func(context.Context) ([]byte, time.Duration, error) {
	return func(context.Context) ([]byte, time.Duration, error) { return []byte(v), time.Hour, nil }
}

// waitFor polls cond, which depends on a message between processes, for
// up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting 5s for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestPurgeStoreDown checks that a purge the store cannot carry out says
// so, with an error, and reports it to the Observer; and that once Redis
// is back (empty, as a restart without persistence leaves it), a local
// tier that held the value before does not serve it again.
func TestPurgeStoreDown(t *testing.T) {
	srv := startRedisServer(t)
	var log errorLog
	ns := namespace(t)
	newCache := func(opts ...core.Option) *core.Cache {
		store := core.NewRedisStore(newClient(t, srv.Addr()))
		t.Cleanup(func() { store.Close() })
		return core.New(store, append([]core.Option{ns, core.WithObserver(log.observe), core.WithStoreTimeout(200 * time.Millisecond)}, opts...)...)
	}
	c, tiered := newCache(), newCache(core.WithLocalTier(1<<20))
	if got := do(t, tiered, "k", staticFetch("v0")); got != "v0" {
		t.Fatalf("first Do = %q, want v0", got)
	}
	if err := c.Purge(context.Background(), "other"); err != nil {
		t.Fatalf("Purge with Redis up: %v", err)
	}
	srv.Stop()
	for _, kind := range purgeKinds {
		if err := c.Purge(context.Background(), "k", kind.opts...); err == nil {
			t.Errorf("%s Purge with Redis down returned nil, want an error", kind.name)
		}
	}
	if err := c.PurgeURL(context.Background(), "http://example.com/p"); err == nil {
		t.Errorf("PurgeURL with Redis down returned nil, want an error")
	}
	if ops := log.ops(); len(ops) == 0 {
		t.Errorf("observer saw no error for purges against a stopped Redis")
	}
	srv.Start()
	waitFor(t, "a purge to succeed once Redis is back", func() bool {
		return c.Purge(context.Background(), "k") == nil
	})
	// Redis came back empty: the registry of local tiers went with the
	// data, so the purge could not wait for the tiered cache. It stops
	// serving the old value once it hears from Redis again (its
	// subscription comes back and empties its tier), or its lease from
	// before the restart runs out, whichever comes first: within a lease.
	waitFor(t, "the tiered cache to stop serving the value from before the restart", func() bool {
		v, err := tiered.Do(context.Background(), "k", staticFetch("v1"))
		return err == nil && string(v) == "v1"
	})
}
