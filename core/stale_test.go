package core_test

import (
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

// TestStaleWhileRevalidateFleetWide lets an entry go stale, then sends a
// herd through several caches ("processes") on one store: the origin is
// called once for the refresh, and the herd is served the stale value
// instead of waiting for it.
func TestStaleWhileRevalidateFleetWide(t *testing.T) {
	forEachBackend(t, func(t *testing.T, newStore func() core.Store, _ func(time.Duration), _ redis.UniversalClient) {
		var log errorLog
		cs := caches(t, 3, newStore, namespace(t), core.WithObserver(log.observe))
		clock := testhook.NewClock(time.Now())
		for _, c := range cs {
			testhook.SetClock(c, clock.Now)
		}
		const clients = 60
		var calls, answered atomic.Int64
		handler := func(w http.ResponseWriter, r *http.Request) error {
			n := calls.Add(1)
			if n > 1 {
				// The refresh holds until every other client has been
				// answered: none of them may wait for it.
				deadline := time.Now().Add(10 * time.Second)
				for answered.Load() < clients-1 && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
			}
			w.Header().Set("Cache-Control", "max-age=1, stale-while-revalidate=60")
			fmt.Fprintf(w, "version %d", n)
			return nil
		}
		serve := func(c *core.Cache) (string, string) {
			w := httptest.NewRecorder()
			if err := c.Middleware().Serve(w, httptest.NewRequest("GET", "http://example.com/feed", nil), "", handler); err != nil {
				t.Errorf("Serve: %v", err)
			}
			return w.Body.String(), w.Header().Get("X-Cache")
		}
		serve(cs[0])
		clock.Advance(2 * time.Second) // stale now

		bodies := make([]string, clients)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range clients {
			wg.Go(func() {
				<-start
				bodies[i], _ = serve(cs[i%len(cs)])
				answered.Add(1)
			})
		}
		close(start)
		wg.Wait()
		stale := 0
		for i, b := range bodies {
			switch b {
			case "version 1":
				stale++
			case "version 2":
			default:
				t.Errorf("client %d got %q, want version 1 (stale) or 2", i, b)
			}
		}
		if n := calls.Load(); n != 2 {
			t.Errorf("origin called %d times, want 2: the fill and one refresh for the whole fleet", n)
		}
		var served int64
		for _, c := range cs {
			served += c.Stats().Stale.Load()
		}
		if stale != clients-1 || served != int64(stale) {
			t.Errorf("%d clients got the stale value, Stats().Stale says %d; want both %d: all but the refreshing client, at once", stale, served, clients-1)
		}
		if body, xcache := serve(cs[1]); body != "version 2" || xcache != "HIT" {
			t.Errorf("after the refresh: %q X-Cache %q, want a HIT of version 2", body, xcache)
		}
		if ops := log.ops(); len(ops) > 0 {
			t.Errorf("store errors: %v", ops)
		}
	})
}

// TestStaleIfErrorFleetWide lets an entry go stale, then sends a herd
// through several caches ("processes") on one store while the origin
// fails: every client gets the stale value, none an error or the 503, and
// the failing origin is called about once per process (the refills take
// the key's lock one at a time), not once per client.
func TestStaleIfErrorFleetWide(t *testing.T) {
	forEachBackend(t, func(t *testing.T, newStore func() core.Store, _ func(time.Duration), _ redis.UniversalClient) {
		var log errorLog
		const procs = 3
		cs := caches(t, procs, newStore, namespace(t), core.WithObserver(log.observe))
		clock := testhook.NewClock(time.Now())
		for _, c := range cs {
			testhook.SetClock(c, clock.Now)
		}
		var calls atomic.Int64
		handler := func(w http.ResponseWriter, r *http.Request) error {
			if n := calls.Add(1); n > 1 {
				time.Sleep(200 * time.Millisecond) // a slow failure
				w.WriteHeader(http.StatusBadGateway)
				fmt.Fprintf(w, "down %d", n)
				return nil
			}
			w.Header().Set("Cache-Control", "max-age=1, stale-if-error=60")
			fmt.Fprint(w, "version 1")
			return nil
		}
		serve := func(c *core.Cache) (int, string, string) {
			w := httptest.NewRecorder()
			if err := c.Middleware().Serve(w, httptest.NewRequest("GET", "http://example.com/feed", nil), "", handler); err != nil {
				t.Errorf("Serve: %v", err)
			}
			return w.Code, w.Body.String(), w.Header().Get("X-Cache")
		}
		serve(cs[0])
		clock.Advance(2 * time.Second) // stale now

		const clients = 60
		type got struct {
			status       int
			body, xcache string
		}
		results := make([]got, clients)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range clients {
			wg.Go(func() {
				<-start
				r := &results[i]
				r.status, r.body, r.xcache = serve(cs[i%len(cs)])
			})
		}
		close(start)
		wg.Wait()
		for i, r := range results {
			if r.status != http.StatusOK || r.body != "version 1" || r.xcache != "STALE" {
				t.Errorf("client %d got %d %q X-Cache %q, want the stale version 1", i, r.status, r.body, r.xcache)
			}
		}
		// One failing refill per process, as a rule; a client that a busy
		// machine starts only after its process's refill has ended starts
		// another, hence the slack.
		if n := calls.Load() - 1; n < 1 || n > 2*procs {
			t.Errorf("the failing origin was called %d times for %d clients in %d processes, want 1 to %d", n, clients, procs, 2*procs)
		}
		if ops := log.ops(); len(ops) > 0 {
			t.Errorf("store errors: %v", ops)
		}
	})
}
