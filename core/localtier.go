package core

import (
	"context"
	"hash/maphash"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/maypok86/otter/v2"

	"github.com/flightcache/flightcache/core/internal/entry"
)

// InvalidationWatcher is implemented by a [Store] that can tell every
// process sharing it when a key's value was deleted or replaced. The local
// tier ([WithLocalTier]) needs it to drop its copies: [New] panics if the
// store given with that option does not implement it. [RedisStore] and
// [MemoryStore] do; a wrapper around either must forward it.
type InvalidationWatcher interface {
	// WatchInvalidations calls invalidate(key) after [Store.Invalidate]
	// invalidated key, or [Store.Replace] replaced its value, in any process
	// sharing the store, this one included. It calls reset when
	// invalidations may have been missed — the store's connection broke
	// and was restored, or the store was closed — so that everything
	// learned before must be dropped. It returns once watching has begun:
	// an Invalidate or Replace that completes afterwards is seen. stop ends the
	// watch; callbacks may still arrive while it returns. The callbacks
	// must be quick: they run on the store's delivery goroutine.
	WatchInvalidations(ctx context.Context, invalidate func(key string), reset func()) (stop func(), err error)

	// InvalidationsCurrent reports whether this process's watches have
	// been told of every [Store.Invalidate] that has returned, in any
	// process. While it reports false, a local tier serves nothing from
	// its own memory and reads the shared store instead. A store whose
	// invalidations reach every watch before Invalidate returns (all in
	// one process) always reports true.
	InvalidationsCurrent() bool
}

// The local tier is a [Store] decorator that [New] installs in front of
// the shared store (and its circuit breaker) when [WithLocalTier] is
// given. The design, and why:
//
//   - Decorator, not engine code: the engine keeps talking to one Store, and
//     every path that changes a shared entry (the engine's Invalidate, the
//     engine's Replace of corrupt entries and of revalidated responses) goes
//     through the decorator without knowing about it. The hooks are fast
//     paths that read a hit straight from the tier, already decoded: one
//     in the engine's lookup, before paying for a store-call context, and
//     one in the HTTP layer ([Middleware.Serve]), before a fill is set up,
//     which serves the entry's value decoded once as an HTTP response and
//     shared, read-only, by every hit on it (localResponse).
//   - What enters: only what the shared store returned to this process — a
//     Get or a SetNX (won, or the winner's value read back) — and only when
//     it decodes to a fresh value entry. Pass markers, stale entries (kept
//     in the shared store for revalidation) and bytes that do not decode
//     never enter, so they are always read from the shared store.
//   - How long: until the entry's own freshness ends (stored-at plus
//     lifetime, as recorded in the entry), as an otter per-entry expiry,
//     and at most as many bytes as the option says (otter weigher).
//   - Invalidation: the store broadcasts Invalidate and Replace to every process
//     ([InvalidationWatcher]; the Redis store publishes on a per-key
//     channel in the same transaction as the change, and the process's one
//     pattern subscription delivers it). An Invalidate returns only once
//     every process's tier was told, or stopped serving from memory: a
//     tier serves only while its store reports its watch current
//     ([InvalidationWatcher.InvalidationsCurrent]; for Redis, a lease the
//     process renews through its own subscription, see [RedisStore]).
//     A value read before an
//     invalidation must not be inserted after it: every read notes a
//     version (a per-stripe counter bumped by each invalidation, plus an
//     epoch bumped by each reset) before going to the shared store, and the
//     insert checks it under otter's lock of the key's bucket (see insert).
//   - The HTTP hit path serves a hot URL's entry from the key memo,
//     without asking otter, while the same version stands (see
//     memoEntry).
//   - Nothing enters before the watch is confirmed, and after a reset (a
//     subscription that broke and came back, or a closed store) the tier is
//     emptied and the watch registered again before anything enters anew.
type localTier struct {
	Store                       // the shared store, behind the breaker if any
	source  InvalidationWatcher // the shared store itself, for its broadcasts
	entries *otter.Cache[string, localEntry]
	clock   *notedClock // otter's
	report  func(ctx context.Context, err error)
	guard   func(f func() error) error // the circuit breaker's, if any
	now     func() time.Time           // the cache's clock
	// onChange, if set (before the tier is used), hears of evictions and
	// resets.
	onChange func(LocalTierEvent)

	seed     maphash.Seed
	stripes  [localStripes]atomic.Uint64 // invalidations seen, by key stripe
	epoch    atomic.Uint64               // resets seen
	watching atomic.Bool                 // a watch is registered and confirmed

	mu      sync.Mutex // guards unwatch, cleanup and retryAt; held while a watch starts
	unwatch func()     // ends the current watch; nil when not watching
	cleanup runtime.Cleanup
	retryAt time.Time // no new watch attempt before this, after one failed
}

var _ Store = (*localTier)(nil)

// localStripes is how many version counters the keys share. More stripes
// mean fewer reads turned away by another key's invalidation.
const localStripes = 256

// localEntryOverhead is what an entry costs beyond its key and bytes: the
// entry struct and otter's node, roughly.
const localEntryOverhead = 128

// watchRetry is how long the tier waits after a failed watch attempt
// before trying again; meanwhile nothing enters the tier.
const watchRetry = time.Second

// localEntry is one entry of the local tier, kept decoded.
type localEntry struct {
	enc  []byte      // the bytes as stored
	e    entry.Entry // decoded; e.Value aliases enc
	tags []tagStamp  // a tagged entry's tags, as the tier had seen them when it was read
	// expires is e.Expires(), worked out once.
	expires time.Time
	// resp is e.Value decoded as an HTTP response, on the first hit that
	// serves it as one: every later hit serves the same decoded response.
	resp *localResponse
}

// localResponse is the HTTP response of a local-tier entry, decoded once
// and then shared by every hit on the entry, in any goroutine: it is
// never modified (see storedResponse).
type localResponse struct {
	value   []byte // the entry's value
	decoded atomic.Pointer[storedResponse]
	// gone is set when otter drops or replaces the entry, whatever the
	// cause: a memoEntry of it is then no longer served, and memo, the
	// key memo's record holding one, lets go of it (see forget).
	gone atomic.Bool
	memo atomic.Pointer[memoKeys]
}

// forget marks lr dropped from otter and clears the key memo's hold on
// it. Together with remember, whichever of the two runs second sees the
// other's write: a memoEntry never outlives its entry in otter for
// longer than those two steps, so the memo keeps no bytes the tier's
// bound no longer counts.
func (lr *localResponse) forget() {
	lr.gone.Store(true)
	if mk := lr.memo.Load(); mk != nil {
		if m := mk.local.Load(); m != nil && m.resp == lr {
			mk.local.CompareAndSwap(m, nil)
		}
	}
}

// remember makes m, an entry of lr, mk's memoEntry.
func (lr *localResponse) remember(mk *memoKeys, m *memoEntry) {
	lr.memo.Store(mk)
	mk.local.Store(m)
	if lr.gone.Load() {
		mk.local.CompareAndSwap(m, nil)
	}
}

// response returns the value decoded as a stored response. Hits that
// race on the first decode each decode it, and one result is kept: they
// are equal.
func (lr *localResponse) response() (*storedResponse, error) {
	if sr := lr.decoded.Load(); sr != nil {
		return sr, nil
	}
	sr, err := sharedStoredResponse(lr.value)
	if err != nil {
		return nil, err
	}
	if !lr.decoded.CompareAndSwap(nil, sr) {
		sr = lr.decoded.Load()
	}
	return sr, nil
}

// tagStamp is one tag of a tagged entry: the version stripe its key
// falls in, and the stripe's count when the entry was read. A tag purge
// invalidates the tag's key, which moves the count: the entry is then
// no longer served.
type tagStamp struct {
	stripe *atomic.Uint64
	seen   uint64
}

// localRead is what a read of the shared store noted for the tier: the
// key's version before the read, and whether the value may enter.
type localRead struct {
	seen  uint64
	admit bool
}

// newLocalTier returns shared fronted by a tier of at most maxBytes.
// source is the store that broadcasts invalidations; shared may wrap it.
func newLocalTier(shared Store, source InvalidationWatcher, maxBytes int64, now func() time.Time, report func(ctx context.Context, err error)) *localTier {
	guard := func(f func() error) error { return f() }
	if b, ok := shared.(*breakerStore); ok {
		// While the breaker is open, starting a watch fails at once
		// instead of waiting out a store timeout.
		guard = b.guard
	}
	clock := &notedClock{}
	clock.note(now())
	var l *localTier
	l = &localTier{
		clock:  clock,
		Store:  shared,
		source: source,
		now:    now,
		report: report,
		guard:  guard,
		seed:   maphash.MakeSeed(),
		entries: otter.Must(&otter.Options[string, localEntry]{
			MaximumWeight: uint64(maxBytes),
			Weigher: func(key string, v localEntry) uint32 {
				return uint32(min(len(key)+len(v.enc)+localEntryOverhead, 1<<32-1))
			},
			ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[string, localEntry]) time.Duration {
				// In the clock's own terms: otter adds this to its reading.
				return time.Duration(e.Value.expires.UnixNano() - clock.NowNano())
			}),
			Clock: clock,
			// Under otter's bucket lock: counting only.
			OnAtomicDeletion: func(e otter.DeletionEvent[string, localEntry]) {
				e.Value.resp.forget()
				if e.Cause == otter.CauseOverflow && l.onChange != nil {
					l.onChange(LocalTierEvent{Evicted: 1})
				}
			},
		}),
	}
	return l
}

// notedClock is otter's clock: the time the tier last noted, at a
// lookup or an insert, instead of a reading of the system clock on every
// otter call (a hit reads the clock once, for its own freshness check).
// It may lag, by at most a millisecond at a lookup or an insert, and by
// longer while the tier is idle, which is safe: otter then keeps an entry
// past its freshness a little, and every lookup checks freshness itself
// on the precise time anyway; and at an insert, where otter turns the
// entry's remaining lifetime into its expiry, the clock has just been
// noted. It has no ticks: they only drive otter's periodic clean-up
// goroutine, which a Cache (it has no Close) could not stop; expired
// entries are removed by the maintenance that writes trigger, within the
// byte budget meanwhile.
type notedClock struct{ nanos atomic.Int64 }

func (c *notedClock) NowNano() int64                    { return c.nanos.Load() }
func (*notedClock) Tick(time.Duration) <-chan time.Time { return nil }

// note sets the clock to now if it is a millisecond or more off: hits in
// the same millisecond do not all write the one shared word.
func (c *notedClock) note(now time.Time) {
	n := now.UnixNano()
	if d := n - c.nanos.Load(); d >= int64(time.Millisecond) || d <= -int64(time.Millisecond) {
		c.nanos.Store(n)
	}
}

// servable reports whether v may be served at now: fresh, and none of
// its tags purged since it was read.
func (l *localTier) servable(v localEntry, now time.Time) bool {
	if !now.Before(v.expires) {
		return false
	}
	for _, t := range v.tags {
		if t.stripe.Load() != t.seen {
			return false
		}
	}
	return true
}

// lookup returns key's entry if the tier holds it and may serve it at now.
func (l *localTier) lookup(key string, now time.Time) (result, bool) {
	if !l.invalidationsCurrent(now) {
		return result{}, false
	}
	l.clock.note(now)
	v, ok := l.entries.GetIfPresent(key)
	if !ok || !l.servable(v, now) {
		return result{}, false
	}
	return v.result(v.resp), true
}

// memoEntry is a local-tier entry held by the key memo (memoKeys.local)
// for the HTTP hit path, which then serves it without an otter lookup
// (about a fifth of a local-tier hit's cost, with otter's read buffer
// and the maintenance it schedules). It is served only while
//
//   - the key's version (invalidations of its stripe, and resets) is the
//     one read before otter returned the entry: an invalidation or reset
//     since, told before it is acknowledged, turns it away exactly as it
//     removes the entry from otter;
//   - otter still holds the entry (resp.gone unset): an eviction or a
//     replacement turns it away too;
//   - it is servable, as any entry (fresh, tags not purged), and the
//     source's watches are current.
//
// The memo lets go of it when otter drops the entry (localResponse.forget),
// so the tier's bound holds.
type memoEntry struct {
	resp    *localResponse
	v       localEntry // without its bytes: the fields servable and result read
	stripe  *atomic.Uint64
	version uint64
}

// memoTouch is one in how many hits served through the memo also read
// the entry from otter, so that otter's frequency estimate still sees
// hot keys as hot when it chooses what to evict.
const memoTouch = 32

// lookupMemo is lookup for the key recorded by mk, through mk's memoEntry
// while it stands.
func (l *localTier) lookupMemo(mk *memoKeys, now time.Time) (result, bool) {
	if !l.invalidationsCurrent(now) {
		return result{}, false
	}
	if m := mk.local.Load(); m != nil && l.epoch.Load()+m.stripe.Load() == m.version {
		if lr := m.resp; !lr.gone.Load() && l.servable(m.v, now) {
			if rand.Uint32()%memoTouch == 0 {
				l.clock.note(now)
				l.entries.GetIfPresent(mk.skey)
			}
			return m.v.result(lr), true
		}
	}
	stripe := l.stripe(mk.skey)
	version := l.epoch.Load() + stripe.Load() // before the read: see memoEntry
	l.clock.note(now)
	v, ok := l.entries.GetIfPresent(mk.skey)
	if !ok || !l.servable(v, now) {
		return result{}, false
	}
	m := &memoEntry{resp: v.resp, v: v, stripe: stripe, version: version}
	m.v.enc, m.v.resp, m.v.e.Value, m.v.e.Nonce = nil, nil, nil, nil // lr.value holds them
	v.resp.remember(mk, m)
	return v.result(v.resp), true
}

// result is the lookup result of v, whose decoded response is lr.
func (v *localEntry) result(lr *localResponse) result {
	return result{value: lr.value, storedAt: v.e.StoredAt, ttl: v.e.TTL, shared: true, source: fromLocal, tags: v.e.Tags, fetched: v.e.Fetch, local: lr}
}

// invalidationsCurrent is the source's InvalidationsCurrent, answered
// for now when the source can use a time already read: on the hit path
// that saves a second reading of the clock.
func (l *localTier) invalidationsCurrent(now time.Time) bool {
	if at, ok := l.source.(currentAt); ok {
		if current, ok := at.invalidationsCurrentAt(now); ok {
			return current
		}
	}
	return l.source.InvalidationsCurrent()
}

// currentAt is implemented by a source whose InvalidationsCurrent reads
// the monotonic clock: invalidationsCurrentAt answers for a reading taken
// by the caller, and ok is false when now carries no monotonic reading
// (a test's clock), which it cannot use.
type currentAt interface {
	invalidationsCurrentAt(now time.Time) (current, ok bool)
}

// Get implements [Store]: from the tier if it holds key, else from the
// shared store, keeping a fresh value for next time.
func (l *localTier) Get(ctx context.Context, key string) ([]byte, error) {
	b, _, err := l.read(ctx, key)
	return b, err
}

// read is Get, also returning what the read noted, for a tagged entry
// the cache admits once it found its tags current (admitTagged).
func (l *localTier) read(ctx context.Context, key string) ([]byte, localRead, error) {
	if l.source.InvalidationsCurrent() {
		now := l.now()
		l.clock.note(now)
		if v, ok := l.entries.GetIfPresent(key); ok && l.servable(v, now) {
			return v.enc, localRead{}, nil
		}
	}
	seen, admit := l.begin(ctx, key)
	b, err := l.Store.Get(ctx, key)
	if err == nil && admit {
		l.admit(key, b, seen)
	}
	return b, localRead{seen: seen, admit: admit}, err
}

// stampTags notes the versions of the tag keys of an entry just read,
// before its tags' purge versions are read from the store.
func (l *localTier) stampTags(tagKeys []string) []tagStamp {
	stamps := make([]tagStamp, len(tagKeys))
	for i, k := range tagKeys {
		s := l.stripe(k)
		stamps[i] = tagStamp{stripe: s, seen: s.Load()}
	}
	return stamps
}

// admitTagged keeps the tagged entry e (encoded as b) at key, read as
// read noted, whose tags the cache found current after stamping them:
// unless the key or one of its tags was invalidated, or the tier reset,
// since. A tag purge told to the tier afterwards moves a stamped stripe:
// the entry is then no longer served (servable).
func (l *localTier) admitTagged(key string, b []byte, e entry.Entry, read localRead, stamps []tagStamp) {
	now := l.now()
	if !read.admit || !now.Before(e.Expires()) {
		return
	}
	v := localEntry{enc: b, e: e, tags: stamps, expires: e.Expires(), resp: &localResponse{value: e.Value}}
	l.clock.note(now)
	l.insert(key, v, read.seen)
	// A tag purge told meanwhile undoes it too (a lookup checks the
	// stamps as well).
	if !l.servable(v, now) {
		l.entries.Invalidate(key)
	}
}

// SetNX implements [Store], keeping the value the key holds afterwards
// (ours or the winner's) if it is fresh. The tier keeps value itself: the
// Cache never modifies it.
func (l *localTier) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) ([]byte, bool, error) {
	seen, admit := l.begin(ctx, key)
	stored, won, err := l.Store.SetNX(ctx, key, value, ttl)
	if err == nil && admit {
		l.admit(key, stored, seen)
	}
	return stored, won, err
}

// Replace implements [Store]. The store tells the other processes; this
// one drops its copy after the shared change, so that no read from before
// the change can put the old value back (see admit).
func (l *localTier) Replace(ctx context.Context, key string, old, value []byte, ttl time.Duration) (bool, error) {
	ok, err := l.Store.Replace(ctx, key, old, value, ttl)
	l.invalidate(key)
	return ok, err
}

// Invalidate implements [Store], dropping this process's copy like Replace.
func (l *localTier) Invalidate(ctx context.Context, key string, old, marker []byte, ttl time.Duration) (bool, error) {
	ok, err := l.Store.Invalidate(ctx, key, old, marker, ttl)
	l.invalidate(key)
	return ok, err
}

// PurgeTags implements [Store], dropping this process's copies of the
// entries carrying the tags like Invalidate.
func (l *localTier) PurgeTags(ctx context.Context, epochKey string, tagKeys []string) error {
	err := l.Store.PurgeTags(ctx, epochKey, tagKeys)
	for _, k := range tagKeys {
		l.invalidate(k)
	}
	return err
}

// begin prepares a read of key from the shared store: it returns the
// version to compare at insert time, and whether the value may enter at
// all (a watch is confirmed).
func (l *localTier) begin(ctx context.Context, key string) (seen uint64, admit bool) {
	// The version is read before watching is checked: a reset clears
	// watching before bumping the epoch, so a read that saw watching set
	// either predates the reset's bump (and its insert is undone) or
	// follows a watch registered again.
	for range 2 {
		seen = l.version(key)
		if l.watching.Load() {
			return seen, true
		}
		if !l.watch(ctx) {
			return 0, false
		}
	}
	return 0, false
}

// version is the count of invalidations and resets that can concern key.
// Both counters only grow, so their sum moves whenever either does.
func (l *localTier) version(key string) uint64 {
	return l.epoch.Load() + l.stripe(key).Load()
}

func (l *localTier) stripe(key string) *atomic.Uint64 {
	return &l.stripes[maphash.String(l.seed, key)%localStripes]
}

// admit keeps b at key if it is a fresh value entry and no invalidation
// of key was seen since the read began at version seen.
func (l *localTier) admit(key string, b []byte, seen uint64) {
	e, err := entry.Decode(b)
	now := l.now()
	if err != nil || e.Kind != entry.KindValue || !now.Before(e.Expires()) {
		return
	}
	l.clock.note(now)
	l.insert(key, localEntry{enc: b, e: e, expires: e.Expires(), resp: &localResponse{value: e.Value}}, seen)
}

// insert keeps v at key unless an invalidation or reset was seen since
// the read of v began at version seen. The check and the insert are one
// step under otter's lock of the key's bucket, which invalidate takes
// after bumping the version: an invalidation either comes first, and v
// never becomes visible, or deletes v itself before it is acknowledged.
// (Inserting first and undoing after would show v to the lookups in
// between, after the invalidation was told.) A reset, which empties the
// whole tier rather than the key's bucket, is caught by the check after:
// meanwhile the tier serves nothing, the store's lease being suspended.
func (l *localTier) insert(key string, v localEntry, seen uint64) {
	l.entries.Compute(key, func(old localEntry, found bool) (localEntry, otter.ComputeOp) {
		if l.version(key) != seen {
			return old, otter.CancelOp
		}
		return v, otter.WriteOp
	})
	if l.version(key) != seen {
		l.entries.Invalidate(key)
	}
}

// invalidate drops key, and turns away inserts of values read before now.
func (l *localTier) invalidate(key string) {
	l.stripe(key).Add(1)
	l.entries.Invalidate(key)
}

// reset drops everything: invalidations may have been missed. The watch
// is registered again before anything enters anew.
func (l *localTier) reset() {
	l.mu.Lock()
	l.watching.Store(false)
	l.epoch.Add(1)
	unwatch := l.unwatch
	l.unwatch = nil
	l.cleanup.Stop()
	l.mu.Unlock()
	if unwatch != nil {
		unwatch()
	}
	l.entries.InvalidateAll()
	if l.onChange != nil {
		l.onChange(LocalTierEvent{Reset: true})
	}
}

// watch registers the tier with the store's invalidation broadcasts and
// reports whether it is watching. Only one caller at a time tries; the
// others go on without the tier meanwhile rather than queue behind a
// store call.
func (l *localTier) watch(ctx context.Context) bool {
	if !l.mu.TryLock() {
		return false
	}
	defer l.mu.Unlock()
	if l.watching.Load() {
		return true
	}
	if time.Now().Before(l.retryAt) {
		return false
	}
	// The store holds these callbacks for as long as it lives, so they
	// reach the tier through a weak pointer: a Cache that is no longer
	// used is collected with its tier, and the cleanup ends the watch.
	wl := weak.Make(l)
	var unwatch func()
	err := l.guard(func() (err error) {
		unwatch, err = l.source.WatchInvalidations(ctx,
			func(key string) {
				if l := wl.Value(); l != nil {
					l.invalidate(key)
				}
			},
			func() {
				if l := wl.Value(); l != nil {
					l.reset()
				}
			})
		return err
	})
	if err != nil {
		l.retryAt = time.Now().Add(watchRetry)
		l.report(ctx, err)
		return false
	}
	l.unwatch = unwatch
	l.cleanup = runtime.AddCleanup(l, func(unwatch func()) { unwatch() }, unwatch)
	l.watching.Store(true)
	return true
}

// invalidationWatchers is the registry behind a store's
// [InvalidationWatcher]. The zero value is ready to use.
type invalidationWatchers struct {
	mu  sync.Mutex // guards set
	set map[*invalidationWatch]struct{}
}

type invalidationWatch struct {
	invalidate func(key string)
	reset      func()
}

// add registers a watch; stop removes it.
func (ws *invalidationWatchers) add(invalidate func(key string), reset func()) (stop func()) {
	w := &invalidationWatch{invalidate: invalidate, reset: reset}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.set == nil {
		ws.set = make(map[*invalidationWatch]struct{})
	}
	ws.set[w] = struct{}{}
	return func() {
		ws.mu.Lock()
		defer ws.mu.Unlock()
		delete(ws.set, w)
	}
}

// snapshot returns the registered watches; callbacks run outside the lock,
// so that they may stop their own watch.
func (ws *invalidationWatchers) snapshot() []*invalidationWatch {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	out := make([]*invalidationWatch, 0, len(ws.set))
	for w := range ws.set {
		out = append(out, w)
	}
	return out
}

// invalidate tells every watch that key changed.
func (ws *invalidationWatchers) invalidate(key string) {
	for _, w := range ws.snapshot() {
		w.invalidate(key)
	}
}

// reset tells every watch that invalidations may have been missed.
func (ws *invalidationWatchers) reset() {
	for _, w := range ws.snapshot() {
		w.reset()
	}
}

// installLocalTier puts the local tier in front of the cache's store
// (shared, the store given to New, broadcasts the invalidations).
func (c *Cache) installLocalTier(shared Store) {
	source, ok := shared.(InvalidationWatcher)
	if !ok {
		panic("flightcache: WithLocalTier: the store does not implement InvalidationWatcher, so other processes' changes could not reach the local tier")
	}
	c.local = newLocalTier(c.store, source, c.cfg.localTierBytes, func() time.Time { return c.now() }, func(ctx context.Context, err error) {
		c.report(ctx, OpWatch, "", err)
	})
	c.local.onChange = c.localTierChanged
	c.stats.local.Store(c.local)
	c.store = c.local
}
