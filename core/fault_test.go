package core_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flightcache/flightcache/core"
)

// TestOriginSlowerThanLockExpiry runs a fetch more than three times as long as the
// lock's expiry under a herd in 4 processes: the filler keeps extending the
// lock, so no waiter takes it over and the origin runs once.
func TestOriginSlowerThanLockExpiry(t *testing.T) {
	addr := realRedisAddr(t)
	var log errorLog
	cs := caches(t, 4, redisStores(t, addr), namespace(t), core.WithObserver(log.observe),
		core.WithLockExpiry(time.Second),     // extended every 200 ms: 800 ms of slack for a loaded machine
		core.WithStoreTimeout(2*time.Second)) // generous: the race detector on 2 cores is slow
	var calls atomic.Int64
	fetch := func(ctx context.Context) ([]byte, time.Duration, error) {
		n := calls.Add(1)
		select {
		case <-time.After(3500 * time.Millisecond):
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
		return []byte("value-" + strconv.FormatInt(n, 10)), 0, nil
	}
	got := stampede(t, cs, 50, "slow", fetch)
	if n := calls.Load(); n != 1 {
		t.Errorf("origin called %d times by 4 caches x 50 callers during a 3.5s fetch with a 1s lock, want 1", n)
	}
	if d := distinct(got); len(d) != 1 {
		t.Errorf("callers got %d distinct values %q, want 1", len(d), d)
	}
	if ops := log.ops(); len(ops) > 0 {
		t.Errorf("store errors during the fill (%v): %v", ops, log.errs)
	}
}

// TestOriginErrorReleasesLockAtOnce checks that a fill that fails gives its
// lock back before Do returns, rather than leaving it to expire: the next
// caller, in another process, fetches at once. The lock expiry and wait
// timeout are longer than the test waits, so only the release frees it.
func TestOriginErrorReleasesLockAtOnce(t *testing.T) {
	addr := realRedisAddr(t)
	errOrigin := errors.New("origin down")
	tests := []struct {
		name string
		fail func() // how the first fetch fails
	}{
		{"error", nil},
		{"panic", func() { panic("origin panicked") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := newClient(t, addr)
			newStore := redisStores(t, addr)
			ns := fmt.Sprintf("errlock%d-%d", os.Getpid(), time.Now().UnixNano())
			opts := []core.Option{core.WithNamespace(ns), core.WithStoreTimeout(2 * time.Second),
				core.WithLockExpiry(time.Minute), core.WithWaitTimeout(time.Minute)}
			a, b := core.New(newStore(), opts...), core.New(newStore(), opts...)
			ctx := context.Background()
			t.Cleanup(func() {
				if keys, err := raw.Keys(ctx, ns+":*").Result(); err == nil && len(keys) > 0 {
					raw.Del(ctx, keys...)
				}
			})

			var calls atomic.Int64
			var locksDuring []string
			_, err := doRecover(func() ([]byte, error) {
				return a.Do(ctx, "k", func(ctx context.Context) ([]byte, time.Duration, error) {
					calls.Add(1)
					locksDuring, _ = raw.Keys(ctx, ns+":*:lock").Result()
					if tt.fail != nil {
						tt.fail()
					}
					return nil, 0, errOrigin
				})
			})
			if err == nil {
				t.Fatal("first Do succeeded, want its fetch's failure")
			}
			if len(locksDuring) != 1 {
				t.Fatalf("lock keys during the fetch = %q, want one", locksDuring)
			}
			if locks, err := raw.Keys(ctx, ns+":*:lock").Result(); err != nil || len(locks) != 0 {
				t.Errorf("lock keys right after the failed Do = %q (%v), want none", locks, err)
			}

			ctx5, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			got, err := b.Do(ctx5, "k", func(context.Context) ([]byte, time.Duration, error) {
				calls.Add(1)
				return []byte("ok"), 0, nil
			})
			if err != nil || string(got) != "ok" {
				t.Errorf("second Do = (%q, %v), want (ok, nil) at once", got, err)
			}
			if n := calls.Load(); n != 2 {
				t.Errorf("origin calls = %d, want 2 (the failure is not cached)", n)
			}
		})
	}
}

// doRecover calls f and turns a panic into an error.
func doRecover(f func() ([]byte, error)) (v []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return f()
}

// TestDistinctKeyFloodBoundsMemory fills 20k distinct keys with 1 KiB values
// (about 20 MiB) through a memory store with a 1 MiB budget: the store
// evicts and keeps working, and the flood leaves no goroutines and no
// memory behind.
func TestDistinctKeyFloodBoundsMemory(t *testing.T) {
	const (
		budget    = 1 << 20
		keys      = 20_000
		valueSize = 1 << 10
		workers   = 16
	)
	s := core.NewMemoryStore(budget)
	defer s.Close()
	c := core.New(s)
	goroutines := runtime.NumGoroutine()
	heap := heapAlloc()

	// forEachKey calls Do on every key from workers goroutines and counts
	// the fetches.
	// probe makes every fetch fail, which stores nothing (a NoStore
	// value would leave an uncacheable marker behind).
	errProbe := errors.New("probe")
	forEachKey := func(probe bool) (fetches int64) {
		var next, calls atomic.Int64
		fetch := func(context.Context) ([]byte, time.Duration, error) {
			calls.Add(1)
			if probe {
				return nil, 0, errProbe
			}
			return bytes.Repeat([]byte{'v'}, valueSize), 0, nil
		}
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for i := next.Add(1) - 1; i < keys; i = next.Add(1) - 1 {
					if _, err := c.Do(context.Background(), "key-"+strconv.FormatInt(i, 10), fetch); err != nil && !errors.Is(err, errProbe) {
						t.Errorf("Do(key-%d): %v", i, err)
					}
				}
			})
		}
		wg.Wait()
		return calls.Load()
	}
	if n := forEachKey(false); n != keys {
		t.Fatalf("flood fetched %d times, want %d (one per key)", n, keys)
	}
	grown := heapAlloc() - heap

	// Count the keys still held, without storing anything more.
	held := keys - forEachKey(true)
	t.Logf("after %d keys x %d B through a %d B store: %d keys held, heap grew %d KiB", keys, valueSize, budget, held, grown>>10)
	if held == 0 || held > keys/10 {
		t.Errorf("store holds %d of %d keys of %d B each with a %d B budget, want some, and at most %d", held, keys, valueSize, budget, keys/10)
	}
	if limit := int64(4 * budget); grown > limit {
		t.Errorf("live heap grew by %d B over the flood, want at most %d B (4x the store's budget)", grown, limit)
	}

	// The store still fills and serves.
	o := newOrigin()
	for i := range 2 {
		if got, err := c.Do(context.Background(), "after-flood", o.fetch); err != nil || string(got) != "value-1" {
			t.Errorf("Do(after-flood) #%d = (%q, %v), want value-1", i, got, err)
		}
	}
	if n := o.calls.Load(); n != 1 {
		t.Errorf("origin calls for a fresh key after the flood = %d, want 1", n)
	}

	// The workers and the fills they led are gone; allow the runtime a
	// moment to retire exiting goroutines.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > goroutines+2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > goroutines+2 {
		t.Errorf("goroutines after the flood = %d, want about %d as before it", n, goroutines)
	}
}

// heapAlloc returns the bytes of live heap objects after a collection.
func heapAlloc() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
