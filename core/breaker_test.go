package core_test

import (
	"context"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/flightcache/flightcache/core"
)

// callCounter counts the reads and commits that reach a store: every
// request makes at least one read.
type callCounter struct {
	core.Store
	calls atomic.Int64
}

func (s *callCounter) Get(ctx context.Context, key string) ([]byte, error) {
	s.calls.Add(1)
	return s.Store.Get(ctx, key)
}

func (s *callCounter) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) ([]byte, bool, error) {
	s.calls.Add(1)
	return s.Store.SetNX(ctx, key, value, ttl)
}

func TestBreakerStopsCallingADeadStoreAndProbesBack(t *testing.T) {
	srv := startRedisServer(t)
	var log errorLog
	inner := &callCounter{Store: core.NewRedisStore(newClient(t, srv.Addr()))}
	c := core.New(inner, namespace(t), core.WithObserver(log.observe), core.WithBreaker(3, 300*time.Millisecond))
	o := newOrigin()
	ctx := context.Background()

	srv.Stop()
	for range 50 {
		if _, err := c.Do(ctx, "k", o.fetch); err != nil {
			t.Fatalf("Do with Redis down: %v", err)
		}
	}
	if n := inner.calls.Load(); n > 10 {
		t.Errorf("%d store calls for 50 requests with Redis down, want the breaker to stop them after a few", n)
	}
	if n := o.calls.Load(); n != 50 {
		t.Errorf("origin served %d of 50 requests, want all (fail open)", n)
	}
	if ops := strings.Join(log.ops(), ","); !strings.Contains(ops, "breaker") {
		t.Errorf("observer saw %q, want the breaker opening reported", ops)
	}

	srv.Start()
	deadline := time.Now().Add(10 * time.Second)
	for c.Stats().Hits.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the breaker did not let caching resume within 10s of Redis coming back")
		}
		if _, err := c.Do(ctx, "k", o.fetch); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStalledRedisCostsOnlyTheStoreTimeout(t *testing.T) {
	srv := startRedisServer(t)
	var log errorLog
	const timeout = 100 * time.Millisecond
	c := core.New(core.NewRedisStore(newClient(t, srv.Addr())), namespace(t),
		core.WithStoreTimeout(timeout), core.WithObserver(log.observe))
	o := newOrigin()
	ctx := context.Background()
	if _, err := c.Do(ctx, "warm", o.fetch); err != nil { // connect while Redis answers
		t.Fatal(err)
	}

	// Pause the server: connections stay open, nothing answers.
	if err := srv.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer srv.cmd.Process.Signal(syscall.SIGCONT)
	var slowest time.Duration
	for i := range 20 {
		start := time.Now()
		got, err := c.Do(ctx, "stalled", o.fetch)
		if err != nil || len(got) == 0 {
			t.Fatalf("Do #%d with Redis stalled = (%q, %v), want an uncached value", i, got, err)
		}
		slowest = max(slowest, time.Since(start))
	}
	t.Logf("slowest of 20 requests with Redis stalled: %v (store timeout %v)", slowest, timeout)
	// A liveness bound, not a benchmark: without the timeouts one request
	// would wait for go-redis's own 3s read timeout, or forever.
	if slowest > 2*time.Second {
		t.Errorf("a request took %v with Redis stalled, want it bounded by the store timeout", slowest)
	}
	if len(log.ops()) == 0 {
		t.Error("no store errors reported while Redis was stalled")
	}
}
