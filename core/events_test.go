package core_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flightcache/flightcache/core"
)

// requestLog collects the Request events of a cache.
type requestLog struct {
	mu     sync.Mutex
	events []core.RequestEvent
}

func (l *requestLog) add(_ context.Context, e core.RequestEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
}

func (l *requestLog) last(t *testing.T) core.RequestEvent {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.events) == 0 {
		t.Fatal("no Request event")
	}
	return l.events[len(l.events)-1]
}

// TestRequestEventSaysHowItWasServed serves requests that are a miss, a
// hit, a local hit, a bypass for a method and for a response that may not
// be stored, and checks what each Request event says.
func TestRequestEventSaysHowItWasServed(t *testing.T) {
	var log requestLog
	c := core.New(memStore(t), core.WithEvents(core.Events{Request: log.add}), core.WithLocalTier(1<<20))
	m := c.Middleware()
	next := func(w http.ResponseWriter, r *http.Request) error {
		if r.URL.Path == "/private" {
			w.Header().Set("Cache-Control", "private")
		}
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusCreated)
		}
		fmt.Fprint(w, "body")
		return nil
	}
	serve := func(method, target string) core.RequestEvent {
		t.Helper()
		w := httptest.NewRecorder()
		if err := m.Serve(w, httptest.NewRequest(method, target, nil), "/route/{x}", next); err != nil {
			t.Fatal(err)
		}
		return log.last(t)
	}
	for _, tc := range []struct {
		method, target string
		served         core.Served
		bypass         string
		status         int
	}{
		{"GET", "/a", core.ServedMiss, "", 200},
		{"GET", "/a", core.ServedLocalHit, "", 200},
		{"POST", "/a", core.ServedBypass, core.BypassMethod, 201},
		{"GET", "/a", core.ServedMiss, "", 200}, // the POST invalidated it
		{"GET", "/private", core.ServedBypass, core.BypassResponse, 200},
		{"HEAD", "/a", core.ServedHit, "", 200},
	} {
		e := serve(tc.method, tc.target)
		if e.Served != tc.served || e.Bypass != tc.bypass || e.Status != tc.status || e.Route != "/route/{x}" || e.Method != tc.method {
			t.Errorf("%s %s: event %+v, want served %v bypass %q status %d on /route/{x}", tc.method, tc.target, e, tc.served, tc.bypass, tc.status)
		}
	}
}

// TestPropagatedStringReachesTheWaiter fills a key in one cache while a
// second cache on the same store waits for it: the waiter's WaitDone gets
// the filler's Propagate string, carried by the commit notification.
func TestPropagatedStringReachesTheWaiter(t *testing.T) {
	store := memStore(t)
	filler := core.New(store, core.WithEvents(core.Events{
		Propagate: func(context.Context) string { return "00-filler-span" },
	}))
	waiting := make(chan struct{})
	done := make(chan core.WaitEvent, 1)
	held := 0
	waiter := core.New(store, core.WithPollInterval(time.Hour), core.WithEvents(core.Events{
		Lock: func(_ context.Context, o core.LockOutcome) {
			// Held in the fill, then in the wait once subscribed.
			if o == core.LockHeld {
				if held++; held == 2 {
					close(waiting)
				}
			}
		},
		WaitDone: func(_ context.Context, e core.WaitEvent) { done <- e },
	}))
	started, release := make(chan struct{}), make(chan struct{})
	go filler.Do(context.Background(), "k", func(context.Context) ([]byte, time.Duration, error) {
		close(started)
		<-release
		return []byte("v"), 0, nil
	})
	<-started // the filler holds the key's lock: the waiter must wait
	got := make(chan []byte, 1)
	go func() {
		v, _ := waiter.Do(context.Background(), "k", func(context.Context) ([]byte, time.Duration, error) {
			return []byte("waiter's own"), 0, nil
		})
		got <- v
	}()
	<-waiting
	close(release)
	e := <-done
	if v := <-got; string(v) != "v" {
		t.Fatalf("waiter got %q, want the filler's value", v)
	}
	if e.Woken != core.WokenNotify || !e.Served || e.Propagated != "00-filler-span" {
		t.Errorf("WaitDone %+v, want woken by notify, served, Propagated 00-filler-span", e)
	}
}

// brokenStore fails every call.
type brokenStore struct{ core.Store }

var errBroken = errors.New("store down")

func (brokenStore) Get(context.Context, string) ([]byte, error) { return nil, errBroken }
func (brokenStore) SetNX(context.Context, string, []byte, time.Duration) ([]byte, bool, error) {
	return nil, false, errBroken
}

// TestLoggerIsRateLimited sends many absorbed errors to WithLogger's
// logger: it writes at most LogBurst of them per second (the test counts
// the one-second windows it spanned).
func TestLoggerIsRateLimited(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: &buf, mu: &mu}, nil))
	var breaker []core.BreakerState
	c := core.New(brokenStore{memStore(t)}, core.WithoutLock(), core.WithLogger(logger),
		core.WithBreaker(1000, time.Hour), core.WithEvents(core.Events{
			Breaker: func(_, to core.BreakerState) { breaker = append(breaker, to) },
		}))
	start := time.Now()
	const calls = 100 // 2 or 3 failed store calls each: the breaker stays closed
	for range calls {
		c.Do(context.Background(), "k", func(context.Context) ([]byte, time.Duration, error) { return []byte("v"), 0, nil })
	}
	windows := int(time.Since(start)/time.Second) + 1
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	lines := strings.Count(out, "absorbed error")
	if errs := c.Stats().Errors.Load(); errs < calls {
		t.Fatalf("%d errors absorbed, want at least %d", errs, calls)
	}
	if lines == 0 || lines > core.LogBurst*windows {
		t.Errorf("%d error records in %d one-second windows, want 1 to %d", lines, windows, core.LogBurst*windows)
	}
	if len(breaker) != 0 {
		t.Errorf("breaker changed to %v with 1000 failures allowed", breaker)
	}
}

// TestLoggerLogsBreakerChanges opens the breaker: the change is logged
// and reported as a Breaker event.
func TestLoggerLogsBreakerChanges(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: &buf, mu: &mu}, nil))
	var changes []string
	c := core.New(brokenStore{memStore(t)}, core.WithoutLock(), core.WithLogger(logger),
		core.WithBreaker(1, time.Hour), core.WithEvents(core.Events{
			Breaker: func(from, to core.BreakerState) { changes = append(changes, from.String()+"->"+to.String()) },
		}))
	c.Do(context.Background(), "k", func(context.Context) ([]byte, time.Duration, error) { return []byte("v"), 0, nil })
	if len(changes) != 1 || changes[0] != "closed->open" {
		t.Errorf("breaker events %v, want [closed->open]", changes)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(buf.String(), "level=WARN msg=\"flightcache: store circuit breaker open\" from=closed to=open") {
		t.Errorf("log %q lacks the breaker opening", buf.String())
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestStatsSnapshot checks that the snapshot holds the counters' values.
func TestStatsSnapshot(t *testing.T) {
	c := core.New(memStore(t), core.WithLocalTier(1<<20))
	for range 3 {
		c.Do(context.Background(), "k", func(context.Context) ([]byte, time.Duration, error) { return []byte("v"), 0, nil })
	}
	_, size := core.LocalTierSize(c) // runs the tier's pending maintenance
	s := c.Stats().Snapshot()
	if s.Misses != 1 || s.Fetches != 1 || s.Commits != 1 || s.Hits != 2 || s.LocalHits != 2 || s.LocalBytes != int64(size) || size == 0 {
		t.Errorf("snapshot %+v, want 1 miss, fetch and commit, 2 hits from the local tier, which holds %d bytes", s, size)
	}
	if s.Hits != c.Stats().Hits.Load() || s.LocalHits != c.Stats().LocalHits.Load() {
		t.Errorf("snapshot %+v disagrees with the live counters", s)
	}
}

// memStore returns a memory store closed when the test ends.
func memStore(t *testing.T) *core.MemoryStore {
	s := core.NewMemoryStore(0)
	t.Cleanup(func() { s.Close() })
	return s
}
