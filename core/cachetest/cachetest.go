// Package cachetest holds conformance suites for flightcache stores, run
// like testing/fstest: a store implementation calls [TestStore] from its
// own tests.
package cachetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/flightcache/flightcache/core"
)

// Harness describes the store under test.
type Harness struct {
	// New returns a store for one subtest. Stores returned by New share
	// their data, like two processes on one Redis: the suite checks that
	// SetNX, locks and notifications work across them.
	New func(t *testing.T) core.Store
	// Advance moves the store's clock forward by d: time.Sleep for a real
	// clock, FastForward for miniredis.
	Advance func(d time.Duration)
}

// TestStore checks that the stores made by h behave as [core.Store] and
// [core.Lock] require: first SetNX wins, TTLs, Replace, Invalidate (and
// that it fences off SetNX and Replace conditional on what was read
// before it), locks that expire and answer [core.ErrLockNotHeld] to a
// former holder, and notifications across stores. When the store
// implements [core.InvalidationWatcher], it also checks that a watch is
// told of Invalidate and Replace made through another store, and of
// nothing once stopped. It checks the tag purge counters too: PurgeTags
// and TagVersions across stores, missing counters read as 0, and counters
// that never go down. Its subtests run in parallel, each on keys of its
// own, as a fleet's requests do: a Store must be safe for concurrent use,
// and h.Advance may be called from several subtests at once.
func TestStore(t *testing.T, h Harness) {
	run(t, "GetMissing", func(t *testing.T) {
		s := h.New(t)
		if _, err := s.Get(ctx(t), uniqueKey()); !errors.Is(err, core.ErrNotFound) {
			t.Errorf("Get(missing) error = %v, want ErrNotFound", err)
		}
	})

	run(t, "SetNXFirstWins", func(t *testing.T) {
		a, b := h.New(t), h.New(t)
		k := uniqueKey()
		got, won, err := a.SetNX(ctx(t), k, []byte("first"), time.Minute)
		if err != nil || !won || string(got) != "first" {
			t.Fatalf("first SetNX = (%q, %v, %v), want (first, true, nil)", got, won, err)
		}
		got, won, err = b.SetNX(ctx(t), k, []byte("second"), time.Minute)
		if err != nil || won || string(got) != "first" {
			t.Fatalf("second SetNX = (%q, %v, %v), want (first, false, nil)", got, won, err)
		}
		if v, err := b.Get(ctx(t), k); err != nil || string(v) != "first" {
			t.Errorf("Get after SetNX = (%q, %v), want first", v, err)
		}
	})

	run(t, "SetNXConcurrentOneWinner", func(t *testing.T) {
		stores := []core.Store{h.New(t), h.New(t), h.New(t)}
		k := uniqueKey()
		const n = 60
		var wg sync.WaitGroup
		start := make(chan struct{})
		got := make([][]byte, n)
		wins := make([]bool, n)
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				<-start
				got[i], wins[i], errs[i] = stores[i%len(stores)].SetNX(context.Background(), k, []byte{byte(i)}, time.Minute)
			})
		}
		close(start)
		wg.Wait()
		winners := 0
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("SetNX #%d error: %v", i, errs[i])
			}
			if wins[i] {
				winners++
			}
			if !bytes.Equal(got[i], got[0]) {
				t.Errorf("SetNX #%d returned %x, #0 returned %x: callers disagree", i, got[i], got[0])
			}
		}
		if winners != 1 {
			t.Errorf("%d SetNX calls won, want exactly 1", winners)
		}
	})

	run(t, "TTL", func(t *testing.T) {
		s := h.New(t)
		k := uniqueKey()
		if _, _, err := s.SetNX(ctx(t), k, []byte("v"), 200*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		h.Advance(400 * time.Millisecond)
		if _, err := s.Get(ctx(t), k); !errors.Is(err, core.ErrNotFound) {
			t.Errorf("Get after TTL error = %v, want ErrNotFound", err)
		}
		if _, won, err := s.SetNX(ctx(t), k, []byte("again"), time.Minute); err != nil || !won {
			t.Errorf("SetNX after TTL = (won %v, %v), want a win", won, err)
		}
	})

	run(t, "Replace", func(t *testing.T) {
		s := h.New(t)
		k := uniqueKey()
		if ok, err := s.Replace(ctx(t), k, []byte("x"), []byte("y"), time.Minute); err != nil || ok {
			t.Errorf("Replace(missing) = (%v, %v), want (false, nil)", ok, err)
		}
		if _, _, err := s.SetNX(ctx(t), k, []byte("old"), time.Minute); err != nil {
			t.Fatal(err)
		}
		if ok, err := s.Replace(ctx(t), k, []byte("other"), []byte("new"), time.Minute); err != nil || ok {
			t.Errorf("Replace(mismatch) = (%v, %v), want (false, nil)", ok, err)
		}
		if ok, err := s.Replace(ctx(t), k, []byte("old"), []byte("new"), time.Minute); err != nil || !ok {
			t.Errorf("Replace(match) = (%v, %v), want (true, nil)", ok, err)
		}
		if v, _ := s.Get(ctx(t), k); string(v) != "new" {
			t.Errorf("Get after Replace = %q, want new", v)
		}
	})

	run(t, "Invalidate", func(t *testing.T) {
		a, b := h.New(t), h.New(t)
		k := uniqueKey()
		if ok, err := a.Invalidate(ctx(t), k, nil, []byte("tomb1"), time.Minute); err != nil || !ok {
			t.Errorf("Invalidate(missing) = (%v, %v), want (true, nil)", ok, err)
		}
		if v, err := b.Get(ctx(t), k); err != nil || string(v) != "tomb1" {
			t.Errorf("Get after Invalidate(missing) = (%q, %v), want tomb1", v, err)
		}
		// The fence: a commit conditional on what was read before the
		// invalidation fails after it, both SetNX and Replace.
		if got, won, err := b.SetNX(ctx(t), k, []byte("late"), time.Minute); err != nil || won || string(got) != "tomb1" {
			t.Errorf("SetNX after Invalidate = (%q, %v, %v), want (tomb1, false, nil)", got, won, err)
		}
		if _, err := a.Invalidate(ctx(t), k, nil, []byte("tomb2"), time.Minute); err != nil {
			t.Fatal(err)
		}
		if ok, err := b.Replace(ctx(t), k, []byte("tomb1"), []byte("late"), time.Minute); err != nil || ok {
			t.Errorf("Replace(tomb1) after a second Invalidate = (%v, %v), want (false, nil)", ok, err)
		}
		if ok, err := b.Replace(ctx(t), k, []byte("tomb2"), []byte("new"), time.Minute); err != nil || !ok {
			t.Errorf("Replace(tomb2) = (%v, %v), want (true, nil)", ok, err)
		}
		// Conditional: only in place of exactly old.
		if ok, err := b.Invalidate(ctx(t), k, []byte("other"), []byte("tomb3"), time.Second); err != nil || ok {
			t.Errorf("Invalidate(old mismatch) = (%v, %v), want (false, nil)", ok, err)
		}
		if v, err := a.Get(ctx(t), k); err != nil || string(v) != "new" {
			t.Errorf("Get after a refused Invalidate = (%q, %v), want new", v, err)
		}
		if ok, err := b.Invalidate(ctx(t), uniqueKey(), []byte("new"), []byte("tomb3"), time.Second); err != nil || ok {
			t.Errorf("Invalidate(old given, key missing) = (%v, %v), want (false, nil)", ok, err)
		}
		if ok, err := b.Invalidate(ctx(t), k, []byte("new"), []byte("tomb3"), 3*time.Second); err != nil || !ok {
			t.Errorf("Invalidate(old match) = (%v, %v), want (true, nil)", ok, err)
		}
		if v, err := a.Get(ctx(t), k); err != nil || string(v) != "tomb3" {
			t.Errorf("Get after Invalidate(present) = (%q, %v), want tomb3", v, err)
		}
		h.Advance(3100 * time.Millisecond)
		if _, err := a.Get(ctx(t), k); !errors.Is(err, core.ErrNotFound) {
			t.Errorf("Get after the marker's ttl error = %v, want ErrNotFound", err)
		}
	})

	run(t, "TagVersionsMissing", func(t *testing.T) {
		s := h.New(t)
		keys := []string{uniqueKey(), uniqueKey(), uniqueKey()}
		for _, ks := range [][]string{keys[:1], keys} {
			got, err := s.TagVersions(ctx(t), ks)
			if err != nil || len(got) != len(ks) || slices.ContainsFunc(got, func(v int64) bool { return v != 0 }) {
				t.Errorf("TagVersions(%d missing keys) = (%v, %v), want %d zeros", len(ks), got, err, len(ks))
			}
		}
	})

	run(t, "PurgeTags", func(t *testing.T) {
		a, b := h.New(t), h.New(t)
		epoch, x, y, z := uniqueKey(), uniqueKey(), uniqueKey(), uniqueKey()
		read := func(s core.Store, keys ...string) []int64 {
			t.Helper()
			got, err := s.TagVersions(ctx(t), keys)
			if err != nil {
				t.Fatalf("TagVersions: %v", err)
			}
			return got
		}
		if err := a.PurgeTags(ctx(t), epoch, []string{x, y}); err != nil {
			t.Fatalf("PurgeTags: %v", err)
		}
		// Read through another store, as another process would.
		if got, want := read(b, epoch, x, y, z), []int64{1, 1, 1, 0}; !slices.Equal(got, want) {
			t.Errorf("after purging x and y: TagVersions(epoch, x, y, z) = %v, want %v", got, want)
		}
		if err := b.PurgeTags(ctx(t), epoch, []string{y}); err != nil {
			t.Fatal(err)
		}
		if err := a.PurgeTags(ctx(t), epoch, nil); err != nil {
			t.Fatalf("PurgeTags(no tags): %v", err)
		}
		if got, want := read(a, epoch, x, y, z), []int64{3, 1, 2, 0}; !slices.Equal(got, want) {
			t.Errorf("after purging y, then nothing: TagVersions(epoch, x, y, z) = %v, want %v", got, want)
		}
		if got := read(a, y); !slices.Equal(got, []int64{2}) {
			t.Errorf("TagVersions(y) = %v, want [2]", got)
		}
		// Purge versions never expire.
		h.Advance(400 * time.Millisecond)
		if got, want := read(b, epoch, x, y), []int64{3, 1, 2}; !slices.Equal(got, want) {
			t.Errorf("later: TagVersions(epoch, x, y) = %v, want %v", got, want)
		}
	})

	run(t, "PurgeTagsConcurrentNeverLowers", func(t *testing.T) {
		// Concurrent purges of one tag: whatever their interleaving, the
		// tag ends at least at the epoch of the last purge to return,
		// which is what the fence needs.
		stores := []core.Store{h.New(t), h.New(t), h.New(t)}
		epoch, tag := uniqueKey(), uniqueKey()
		const n = 30
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				<-start
				errs[i] = stores[i%len(stores)].PurgeTags(context.Background(), epoch, []string{tag})
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("PurgeTags #%d: %v", i, err)
			}
		}
		got, err := stores[0].TagVersions(ctx(t), []string{epoch, tag})
		if err != nil || !slices.Equal(got, []int64{n, n}) {
			t.Errorf("after %d concurrent purges: TagVersions(epoch, tag) = (%v, %v), want [%d %d]", n, got, err, n, n)
		}
	})

	run(t, "Lock", func(t *testing.T) {
		a, b := h.New(t), h.New(t)
		k := uniqueKey()
		la, lb := a.NewLock(k, time.Minute), b.NewLock(k, time.Minute)
		if err := la.TryLock(ctx(t)); err != nil {
			t.Fatalf("TryLock on a free lock: %v", err)
		}
		if err := lb.TryLock(ctx(t)); !errors.Is(err, core.ErrLockHeld) {
			t.Fatalf("TryLock on a held lock error = %v, want ErrLockHeld", err)
		}
		if err := la.Extend(ctx(t)); err != nil {
			t.Errorf("Extend by the holder: %v", err)
		}
		if err := la.Unlock(ctx(t)); err != nil {
			t.Fatalf("Unlock by the holder: %v", err)
		}
		if err := lb.TryLock(ctx(t)); err != nil {
			t.Fatalf("TryLock after Unlock: %v", err)
		}
		if err := la.Unlock(ctx(t)); !errors.Is(err, core.ErrLockNotHeld) {
			t.Errorf("Unlock by a former holder error = %v, want ErrLockNotHeld", err)
		}
		if err := la.Extend(ctx(t)); !errors.Is(err, core.ErrLockNotHeld) {
			t.Errorf("Extend by a former holder error = %v, want ErrLockNotHeld", err)
		}
		// The former holder's calls left the new holder's lock alone.
		if err := a.NewLock(k, time.Minute).TryLock(ctx(t)); !errors.Is(err, core.ErrLockHeld) {
			t.Errorf("TryLock after a former holder's Unlock error = %v, want ErrLockHeld", err)
		}
		if err := lb.Unlock(ctx(t)); err != nil {
			t.Errorf("Unlock: %v", err)
		}
		if err := lb.Unlock(ctx(t)); !errors.Is(err, core.ErrLockNotHeld) {
			t.Errorf("second Unlock error = %v, want ErrLockNotHeld", err)
		}
	})

	run(t, "LockExpires", func(t *testing.T) {
		a, b := h.New(t), h.New(t)
		k := uniqueKey()
		la, lb := a.NewLock(k, 200*time.Millisecond), b.NewLock(k, time.Minute)
		if err := la.TryLock(ctx(t)); err != nil {
			t.Fatal(err)
		}
		h.Advance(400 * time.Millisecond)
		if err := lb.TryLock(ctx(t)); err != nil {
			t.Fatalf("TryLock after the holder's expiry: %v", err)
		}
		if err := la.Extend(ctx(t)); !errors.Is(err, core.ErrLockNotHeld) {
			t.Errorf("Extend of an expired, taken-over lock error = %v, want ErrLockNotHeld", err)
		}
		if err := la.Unlock(ctx(t)); !errors.Is(err, core.ErrLockNotHeld) {
			t.Errorf("Unlock of an expired, taken-over lock error = %v, want ErrLockNotHeld", err)
		}
		if err := lb.Extend(ctx(t)); err != nil {
			t.Errorf("Extend by the new holder: %v", err)
		}
		lb.Unlock(ctx(t))
	})

	run(t, "LockExpiresUntaken", func(t *testing.T) {
		s := h.New(t)
		k := uniqueKey()
		l := s.NewLock(k, 200*time.Millisecond)
		if err := l.TryLock(ctx(t)); err != nil {
			t.Fatal(err)
		}
		h.Advance(400 * time.Millisecond)
		if err := l.Extend(ctx(t)); !errors.Is(err, core.ErrLockNotHeld) {
			t.Errorf("Extend of an expired lock error = %v, want ErrLockNotHeld", err)
		}
		if err := l.Unlock(ctx(t)); !errors.Is(err, core.ErrLockNotHeld) {
			t.Errorf("Unlock of an expired lock error = %v, want ErrLockNotHeld", err)
		}
		if err := s.NewLock(k, time.Minute).TryLock(ctx(t)); err != nil {
			t.Errorf("TryLock after the expiry: %v", err)
		}
	})

	run(t, "Notify", func(t *testing.T) {
		a, b := h.New(t), h.New(t)
		k, other := uniqueKey(), uniqueKey()
		ch, cancel, err := a.Subscribe(ctx(t), k)
		if err != nil {
			t.Fatalf("Subscribe: %v", err)
		}
		defer cancel()
		chOther, cancelOther, err := a.Subscribe(ctx(t), other)
		if err != nil {
			t.Fatalf("Subscribe: %v", err)
		}
		defer cancelOther()

		if _, _, err := b.SetNX(ctx(t), k, []byte("v"), time.Minute); err != nil {
			t.Fatal(err)
		}
		waitWoken(t, ch, "SetNX in another store")
		if err := b.Notify(ctx(t), k); err != nil {
			t.Fatal(err)
		}
		waitWoken(t, ch, "Notify in another store")
		select {
		case <-chOther:
			t.Error("a subscriber of another key was woken")
		default:
		}
	})

	run(t, "WatchInvalidations", func(t *testing.T) {
		a, b := h.New(t), h.New(t)
		wa, ok := a.(core.InvalidationWatcher)
		if !ok {
			t.Skip("the store does not implement core.InvalidationWatcher")
		}
		k := uniqueKey()
		watch := newWatchLog()
		stop, err := wa.WatchInvalidations(ctx(t), watch.invalidate, watch.reset)
		if err != nil {
			t.Fatalf("WatchInvalidations: %v", err)
		}
		stopped := false
		defer func() {
			if !stopped {
				stop()
			}
		}()

		if _, _, err := b.SetNX(ctx(t), k, []byte("v1"), time.Minute); err != nil {
			t.Fatal(err)
		}
		if ok, err := b.Replace(ctx(t), k, []byte("v1"), []byte("v2"), time.Minute); err != nil || !ok {
			t.Fatalf("Replace = (%v, %v), want (true, nil)", ok, err)
		}
		watch.wait(t, k, "Replace in another store")
		// An Invalidate returns only once every watch was told, or the
		// watch stopped being current: checked at once, without waiting.
		if _, err := b.Invalidate(ctx(t), k, nil, []byte("tomb"), time.Minute); err != nil {
			t.Fatal(err)
		}
		if told := watch.count(k) > 0; !told {
			if wa.InvalidationsCurrent() {
				t.Error("Invalidate in another store returned before the watch was told, and the watch still reports itself current")
			}
			watch.wait(t, k, "Invalidate in another store")
		}

		// Once stop returns, the watch sees nothing more. A second watch,
		// still running, tells when the next Invalidate has been delivered.
		other := newWatchLog()
		stopOther, err := wa.WatchInvalidations(ctx(t), other.invalidate, other.reset)
		if err != nil {
			t.Fatalf("second WatchInvalidations: %v", err)
		}
		defer stopOther()
		stop()
		stopped = true
		if _, err := b.Invalidate(ctx(t), k, nil, []byte("tomb2"), time.Minute); err != nil {
			t.Fatal(err)
		}
		other.wait(t, k, "Invalidate in another store")
		if n := watch.count(k); n != 0 {
			t.Errorf("a stopped watch saw %d more invalidations of the key, want 0", n)
		}
	})
}

// run runs f as a parallel subtest of t.
func run(t *testing.T, name string, f func(t *testing.T)) {
	t.Run(name, func(t *testing.T) {
		t.Parallel()
		f(t)
	})
}

// watchLog records the invalidations a watch is told about.
type watchLog struct {
	mu   sync.Mutex // guards seen
	seen map[string]int
	ch   chan string // each invalidated key, if there is room
}

func newWatchLog() *watchLog {
	return &watchLog{seen: make(map[string]int), ch: make(chan string, 100)}
}

func (w *watchLog) invalidate(key string) {
	w.mu.Lock()
	w.seen[key]++
	w.mu.Unlock()
	select {
	case w.ch <- key:
	default:
	}
}

// reset is called when invalidations may have been lost; the suite's
// checks do not depend on it.
func (w *watchLog) reset() {}

// count returns how many invalidations of key were seen and forgets them.
func (w *watchLog) count(key string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := w.seen[key]
	delete(w.seen, key)
	return n
}

// wait waits until the watch was told key was invalidated, at most 5s,
// and forgets the invalidations of key seen so far.
func (w *watchLog) wait(t *testing.T, key, what string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	// Other keys' invalidations (tests sharing a Redis) may fill ch, so
	// it is only a hint; the ticker bounds the wait for a dropped one.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for w.count(key) == 0 {
		select {
		case <-w.ch:
		case <-tick.C:
		case <-deadline:
			t.Fatalf("watch not told of the key's invalidation within 5s after %s", what)
		}
	}
}

func waitWoken(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("subscriber not woken within 5s after %s", what)
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return c
}

// uniqueKey returns a key shaped like the cache's, unique to this run, so
// suites can share one Redis with other tests running at the same time.
func uniqueKey() string { return "cachetest:{" + uniqueID() + "}" }

// uniqueID returns 16 random hex digits.
func uniqueID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}
