package core_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flightcache/flightcache/core"
	"github.com/flightcache/flightcache/core/internal/testhook"
)

// serveHTTP sends one request through c's middleware to h.
func serveHTTP(t *testing.T, c *core.Cache, method, target string, h http.HandlerFunc, opts ...core.PolicyOption) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	r := httptest.NewRequest(method, target, nil)
	err := c.Middleware(opts...).Serve(w, r, "", func(w http.ResponseWriter, r *http.Request) error {
		h(w, r)
		return nil
	})
	if err != nil {
		t.Errorf("Serve(%s %s): %v", method, target, err)
	}
	return w
}

// goServe is serveHTTP in a goroutine; the body comes back on the channel.
func goServe(t *testing.T, c *core.Cache, method, target string, h http.HandlerFunc) <-chan string {
	ch := make(chan string, 1)
	go func() {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(method, target, nil)
		err := c.Middleware().Serve(w, r, "", func(w http.ResponseWriter, r *http.Request) error {
			h(w, r)
			return nil
		})
		if err != nil {
			ch <- "error: " + err.Error()
			return
		}
		ch <- w.Body.String()
	}()
	return ch
}

// blockedHandler answers its first GET with v1 once released, every later
// GET with v2 at once, both fresh for an hour; writes answer 204.
type blockedHandler struct {
	gets    atomic.Int64
	started chan struct{}
	release chan struct{}
}

func newBlockedHandler() *blockedHandler {
	return &blockedHandler{started: make(chan struct{}), release: make(chan struct{})}
}

func (h *blockedHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.Header().Set("Cache-Control", "max-age=3600")
	if h.gets.Add(1) == 1 {
		close(h.started)
		select {
		case <-h.release:
		case <-time.After(10 * time.Second):
		}
		fmt.Fprint(w, "v1")
		return
	}
	fmt.Fprint(w, "v2")
}

// TestHTTPWriteFencesFillInFlight is the write-then-read guarantee through
// the HTTP layer: a GET's fill in process A began before a write (a
// PurgeURL, or an unsafe request through process B's middleware) and
// ends after it. Requests that start after the write, in A (which may
// join the fill) or B, get the new version, and the old one is not stored.
func TestHTTPWriteFencesFillInFlight(t *testing.T) {
	writes := []struct {
		name  string
		write func(t *testing.T, b *core.Cache, h http.HandlerFunc)
	}{
		{"purge-url", func(t *testing.T, b *core.Cache, _ http.HandlerFunc) {
			if err := b.PurgeURL(context.Background(), "http://example.com/p?id=1"); err != nil {
				t.Fatal(err)
			}
		}},
		{"soft-purge-url", func(t *testing.T, b *core.Cache, _ http.HandlerFunc) {
			if err := b.PurgeURL(context.Background(), "http://example.com/p?id=1", core.Soft()); err != nil {
				t.Fatal(err)
			}
		}},
		{"unsafe-request", func(t *testing.T, b *core.Cache, h http.HandlerFunc) {
			if w := serveHTTP(t, b, http.MethodPost, "http://example.com/p?id=1", h); w.Code != http.StatusNoContent {
				t.Fatalf("POST = %d, want 204", w.Code)
			}
		}},
	}
	for _, tier := range []bool{false, true} {
		t.Run(fmt.Sprintf("tier=%v", tier), func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, newStore func() core.Store, _ func(time.Duration), _ redis.UniversalClient) {
				for _, wr := range writes {
					t.Run(wr.name, func(t *testing.T) {
						opts := []core.Option{namespace(t), patientStore}
						if tier {
							opts = append(opts, core.WithLocalTier(1<<20))
						}
						a, b := core.New(newStore(), opts...), core.New(newStore(), opts...)
						joined := onJoin(a)
						h := newBlockedHandler()
						const target = "http://example.com/p?id=1"
						leader := goServe(t, a, http.MethodGet, target, h.ServeHTTP)
						<-h.started
						wr.write(t, b, h.ServeHTTP)
						lateA := goServe(t, a, http.MethodGet, target, h.ServeHTTP)
						lateB := goServe(t, b, http.MethodGet, target, h.ServeHTTP)
						<-joined // the late GET in A joined the fill in flight
						close(h.release)
						if got := <-leader; got != "v1" {
							t.Errorf("leader, which asked before the write, got %q, want v1", got)
						}
						for name, ch := range map[string]<-chan string{"A": lateA, "B": lateB} {
							if got := <-ch; got != "v2" {
								t.Errorf("GET in %s started after the write got %q, want v2", name, got)
							}
						}
						for _, c := range []*core.Cache{a, b} {
							if got := serveHTTP(t, c, http.MethodGet, target, h.ServeHTTP).Body.String(); got != "v2" {
								t.Errorf("a later GET got %q, want v2: the fenced v1 was stored", got)
							}
						}
						if n := h.gets.Load(); n != 2 {
							t.Errorf("handler ran %d GETs, want 2 (the fenced fill and one refill)", n)
						}
					})
				}
			})
		})
	}
}

// hookedWriter calls before when the handler's status is about to go out.
type hookedWriter struct {
	*httptest.ResponseRecorder
	before func()
}

func (w *hookedWriter) WriteHeader(code int) {
	w.before()
	w.ResponseRecorder.WriteHeader(code)
}

// TestUnsafeRequestInvalidatesBeforeItsStatus checks that by the time a
// client can see an unsafe request's 2xx, the URL's stored response is
// gone for every process: a GET made from inside WriteHeader, through
// another cache, is not served the old response.
func TestUnsafeRequestInvalidatesBeforeItsStatus(t *testing.T) {
	store := core.NewMemoryStore(0)
	t.Cleanup(func() { store.Close() })
	ns := namespace(t)
	a, b := core.New(store, ns), core.New(store, ns)
	version := "v0"
	h := func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w.Header().Set("Cache-Control", "max-age=3600")
			fmt.Fprint(w, version)
			return
		}
		version = "v1" // the change, before the response
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, "saved")
	}
	const target = "http://example.com/doc"
	if got := serveHTTP(t, a, http.MethodGet, target, h).Body.String(); got != "v0" {
		t.Fatalf("GET = %q, want v0", got)
	}
	var seen string
	w := &hookedWriter{ResponseRecorder: httptest.NewRecorder(), before: func() {
		seen = serveHTTP(t, b, http.MethodGet, target, h).Body.String()
	}}
	r := httptest.NewRequest(http.MethodPut, target, nil)
	if err := a.Middleware().Serve(w, r, "", func(w http.ResponseWriter, r *http.Request) error { h(w, r); return nil }); err != nil {
		t.Fatal(err)
	}
	if seen != "v1" {
		t.Errorf("GET while the PUT's 200 went out got %q, want v1", seen)
	}
}

// TestSoftPurgeServesStaleWhileOneRefreshRuns checks a soft purge: on a
// route with stale-while-revalidate, the purged response is served STALE
// at once while a refresh runs, then the new one; on a route without it,
// the next request waits for the new one.
func TestSoftPurgeServesStaleWhileOneRefreshRuns(t *testing.T) {
	for _, swr := range []bool{true, false} {
		t.Run(fmt.Sprintf("swr=%v", swr), func(t *testing.T) {
			store := core.NewMemoryStore(0)
			t.Cleanup(func() { store.Close() })
			var opts []core.PolicyOption
			if swr {
				opts = append(opts, core.StaleWhileRevalidate(time.Minute))
			}
			c := core.New(store, namespace(t))
			var version atomic.Int64
			refreshing, release := make(chan struct{}, 1), make(chan struct{})
			h := func(w http.ResponseWriter, r *http.Request) {
				v := version.Load()
				if v > 0 {
					refreshing <- struct{}{}
					<-release
				}
				w.Header().Set("Cache-Control", "max-age=3600")
				fmt.Fprintf(w, "v%d", v)
			}
			const target = "http://example.com/feed"
			serveHTTP(t, c, http.MethodGet, target, h, opts...)
			version.Store(1)
			if err := c.PurgeURL(context.Background(), target, core.Soft()); err != nil {
				t.Fatal(err)
			}
			if !swr {
				got := make(chan string, 1)
				go func() { got <- serveHTTP(t, c, http.MethodGet, target, h, opts...).Body.String() }()
				<-refreshing
				close(release)
				if g := <-got; g != "v1" {
					t.Errorf("GET after a soft purge without stale-while-revalidate = %q, want v1", g)
				}
				return
			}
			first := make(chan *httptest.ResponseRecorder, 1)
			go func() { first <- serveHTTP(t, c, http.MethodGet, target, h, opts...) }()
			<-refreshing // the refresh runs, holding the first request
			w := serveHTTP(t, c, http.MethodGet, target, h, opts...)
			if w.Body.String() != "v0" || w.Header().Get("X-Cache") != "STALE" {
				t.Errorf("GET during the refresh = %q (X-Cache %q), want v0 STALE", w.Body.String(), w.Header().Get("X-Cache"))
			}
			close(release)
			if w := <-first; w.Body.String() != "v1" && w.Body.String() != "v0" {
				t.Errorf("refreshing GET = %q, want v1 (or v0 served stale)", w.Body.String())
			}
			if got := serveHTTP(t, c, http.MethodGet, target, h, opts...).Body.String(); got != "v1" {
				t.Errorf("GET after the refresh = %q, want v1", got)
			}
		})
	}
}

// TestStaleIfErrorRefreshDoesNotOutliveADelete checks that a request that
// joins a failing refresh after a DELETE of its URL is not served the
// deleted response as stale-if-error.
func TestStaleIfErrorRefreshDoesNotOutliveADelete(t *testing.T) {
	store := core.NewMemoryStore(0)
	t.Cleanup(func() { store.Close() })
	clock := testhook.NewClock(time.Now())
	ns := namespace(t)
	a, b := core.New(store, ns), core.New(store, ns)
	testhook.SetClock(a, clock.Now)
	testhook.SetClock(b, clock.Now)
	joined := onJoin(a)
	var down atomic.Bool
	started, release := make(chan struct{}, 1), make(chan struct{})
	h := func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodDelete:
			w.WriteHeader(http.StatusNoContent)
		case down.Load():
			select {
			case started <- struct{}{}:
				<-release
			default:
			}
			http.Error(w, "origin down", http.StatusServiceUnavailable)
		default:
			w.Header().Set("Cache-Control", "max-age=1, stale-if-error=600")
			fmt.Fprint(w, "deleted-doc")
		}
	}
	const target = "http://example.com/doc"
	serveHTTP(t, a, http.MethodGet, target, h)
	clock.Advance(2 * time.Second)
	down.Store(true)
	leader := goServe(t, a, http.MethodGet, target, h)
	<-started
	if w := serveHTTP(t, b, http.MethodDelete, target, h); w.Code != http.StatusNoContent {
		t.Fatalf("DELETE = %d", w.Code)
	}
	late := goServe(t, a, http.MethodGet, target, h)
	<-joined // the late request joined the failing refresh
	close(release)
	<-leader
	if got := <-late; strings.Contains(got, "deleted-doc") {
		t.Errorf("GET started after the DELETE got %q, the deleted response served stale", got)
	}
}

// countingContext counts every call to Done: a request calls it each time
// it starts waiting on a fill.
type countingContext struct {
	context.Context
	waits *atomic.Int64
}

func (c countingContext) Done() <-chan struct{} {
	c.waits.Add(1)
	return c.Context.Done()
}

// TestWaitersStopWaitingOnFailingLeaders checks the bound on what a client
// whose requests fail can make others wait for: a request that joined two
// fills whose leaders failed (here with 500s) runs its own handler, instead
// of waiting behind every new failing leader one after another.
func TestWaitersStopWaitingOnFailingLeaders(t *testing.T) {
	store := core.NewMemoryStore(0)
	t.Cleanup(func() { store.Close() })
	c := core.New(store, namespace(t))
	mw := c.Middleware()
	var calls, running, most atomic.Int64
	release1, release2, bothAlone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var bothOnce sync.Once
	handler := func(w http.ResponseWriter, r *http.Request) error {
		n := calls.Add(1)
		now := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); now > m && !most.CompareAndSwap(m, now); m = most.Load() {
		}
		switch n {
		case 1:
			<-release1
		case 2:
			<-release2
		default:
			// The last two requests: alone, they run side by side; one
			// leading a fill the other waits on, they never would.
			if now >= 2 {
				bothOnce.Do(func() { close(bothAlone) })
			}
			select {
			case <-bothAlone:
			case <-time.After(3 * time.Second):
			}
		}
		http.Error(w, "failed", http.StatusInternalServerError)
		return nil
	}
	var waits atomic.Int64
	var wg sync.WaitGroup
	codes := make([]int, 4)
	for i := range 4 {
		if i == 1 {
			waitFor(t, "the first fill to start", func() bool { return calls.Load() == 1 })
		}
		wg.Go(func() {
			w := httptest.NewRecorder()
			r := httptest.NewRequestWithContext(countingContext{context.Background(), &waits}, "GET", "http://example.com/p", nil)
			mw.Serve(w, r, "", handler)
			codes[i] = w.Code
		})
	}
	waitFor(t, "all four requests to wait on the first fill", func() bool { return waits.Load() == 4 })
	close(release1)
	// The three waiters look again: one leads the second fill, two join it.
	waitFor(t, "the second fill and its two waiters", func() bool { return calls.Load() == 2 && waits.Load() == 7 })
	close(release2)
	wg.Wait()
	for i, code := range codes {
		if code != http.StatusInternalServerError {
			t.Errorf("request %d got %d, want its own 500", i, code)
		}
	}
	if n := calls.Load(); n != 4 {
		t.Errorf("handler ran %d times, want 4 (each request its own answer)", n)
	}
	if m := most.Load(); m != 2 {
		t.Errorf("at most %d handler runs at once, want 2: after two failed fills the last two requests run their own", m)
	}
}
