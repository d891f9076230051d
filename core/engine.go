package core

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/flightcache/flightcache/core/internal/entry"
	"github.com/flightcache/flightcache/core/internal/testhook"
)

// NoStore, returned as the TTL by the fetch function given to [Cache.Do],
// means the value is for the caller whose fetch produced it alone: it is
// neither stored nor handed to other callers waiting on the same fill,
// each of which runs its own fetch instead. The key is then marked
// uncacheable for [PassTTL]: callers in every process fetch for
// themselves at once, in parallel, instead of queueing behind a lock for a
// value that will not be shared.
const NoStore time.Duration = -1

// PassTTL is how long a key whose fill produced a value that may not be
// shared stays marked uncacheable.
const PassTTL = 5 * time.Second

// Cache fills values once across every process that shares its [Store].
// Create it with [New]; the zero value is not usable. A Cache is safe for
// concurrent use.
type Cache struct {
	store  Store
	cfg    config
	flight singleflight.Group
	stats  Stats
	// refreshing holds the keys whose stale entry a caller in this
	// process is refreshing while the others are served the stale value.
	refreshing sync.Map
	// filling holds the keys this process is filling: callers for them
	// join the fill without looking the key up first: callers arriving
	// once a fill runs cost the store nothing (those arriving together,
	// before one leads, each still look up once).
	filling sync.Map
	local   *localTier // nil unless WithLocalTier
	keys    keyMemo    // store keys of recent cache keys (the HTTP layer's)
	log     *errorLog  // nil unless WithLogger
	// epochKey is the store key of the namespace's tag purge epoch.
	epochKey string
	// unfenced turns fencing off (tests only, to show what it prevents):
	// commits ignore what the fill's lookup read and replace tombstones.
	unfenced bool
	// joined, if set, is called when a caller joins this process's fill
	// in flight without a lookup (tests only, to order goroutines).
	joined func(key string)
	// now is the clock freshness, ages and stale windows are read from;
	// time.Now except in tests (see internal/testhook). Timeouts stay on
	// the real clock.
	now func() time.Time
	// sleep holds a sparse key's early refresh for a duration on now's
	// clock, or until woken (see refreshAhead): sleepOrWake except in
	// tests.
	sleep func(d time.Duration, wake <-chan struct{})
	// sparseHolds counts the early refreshes sleeping so.
	sparseHolds atomic.Int32
}

// Stats counts what a [Cache] did. Every field is updated atomically and
// may be read at any time.
type Stats struct {
	Hits        atomic.Int64 // lookups answered from the store
	LocalHits   atomic.Int64 // lookups answered from the local tier (WithLocalTier), with no store round trip
	Misses      atomic.Int64 // lookups that found nothing
	Fetches     atomic.Int64 // runs of a fetch function (origin calls) in this process
	Collapsed   atomic.Int64 // callers served by another caller's fill in this process
	Waited      atomic.Int64 // fills answered by another process's commit
	Commits     atomic.Int64 // values this process stored
	LostCommits atomic.Int64 // commits that found another process's value in place
	Errors      atomic.Int64 // store, lock and decode errors absorbed (failing open), origin errors hidden by a stale value
	Stale       atomic.Int64 // stale values served while another caller refreshed them, or because a refill failed
	// FencedCommits counts fills whose commit an invalidation since their
	// lookup refused: their value went to their leader only.
	FencedCommits atomic.Int64
	// EarlyRefreshes counts early refreshes ([EarlyRefresh]) this process
	// started: hits that set off a background refill. Most end without an
	// origin call when another process is refreshing the same entry
	// (Fetches counts the calls).
	EarlyRefreshes atomic.Int64
	// HeldRefreshes counts the early refreshes among them that a hit in a
	// sparse key's wider window held until the window proper opened (see
	// EarlyRefresh).
	HeldRefreshes atomic.Int64
	// LocalEvictions counts entries the local tier evicted to stay within
	// its size, LocalResets the times it was emptied because invalidations
	// may have been missed.
	LocalEvictions atomic.Int64
	LocalResets    atomic.Int64

	local atomic.Pointer[localTier] // for Snapshot's LocalBytes
}

// New returns a Cache that fills through store. It does no I/O and panics
// if store is nil or an option is invalid.
func New(store Store, opts ...Option) *Cache {
	if store == nil {
		panic("flightcache: New: nil Store")
	}
	c := &Cache{store: store, cfg: defaultConfig(), now: time.Now, sleep: sleepOrWake}
	for _, o := range opts {
		o.apply(&c.cfg)
	}
	c.epochKey = epochKey(c.cfg.namespace)
	c.log = newErrorLog(c.cfg.logger)
	if c.cfg.breakerFailures > 0 {
		c.store = newBreakerStore(store, c.cfg.breakerFailures, c.cfg.breakerCooldown, func(err error) {
			c.report(context.Background(), OpBreaker, "", err)
		})
	}
	if c.cfg.localTierBytes > 0 {
		c.installLocalTier(store)
	}
	return c
}

// Stats returns the cache's live counters.
func (c *Cache) Stats() *Stats { return &c.stats }

// Do returns the value for key. On a miss it calls fetch, at most once at a
// time for key across every process sharing the store, and stores the
// result with SET NX, so that every caller everywhere gets the value of the
// first commit. fetch returns the value and how long it stays fresh: 0
// means the cache's [TTL], [NoStore] means "this caller only".
//
// fetch runs on a context detached from ctx, bounded by
// [WithFetchTimeout]: a caller whose ctx ends stops waiting (Do returns an
// error wrapping ctx.Err()) without cancelling the fill for others. An
// error from fetch is returned to every caller of that fill and nothing is
// stored; a panic in fetch is re-raised in every caller.
//
// Store failures never fail Do: it falls back to calling fetch and returns
// the value uncached, reporting the failure to the [Observer]. The returned
// slice may be shared with other callers and must not be modified.
func (c *Cache) Do(ctx context.Context, key string, fetch func(ctx context.Context) ([]byte, time.Duration, error)) ([]byte, error) {
	r, err := c.load(ctx, storeKey(c.cfg.namespace, key), flight{
		early:  c.cfg.policy.earlyRefresh,
		jitter: c.cfg.policy.ttlJitter,
		fetch: func(ctx context.Context, _ []byte) (outcome, error) {
			value, ttl, err := fetch(ctx)
			if ttl == NoStore {
				return outcome{value: value, share: shareNone}, err
			}
			return outcome{value: value, ttl: ttl}, err
		},
	})
	if err == nil && r.source == fromAlone {
		c.stats.Fetches.Add(1)
		r.value, _, err = fetch(ctx)
	}
	if r.refresh != nil {
		go r.refresh() // the value is served; the refresh ends within the fetch timeout
	}
	return r.value, err
}

// DoTagged is [Cache.Do] for values that carry tags (surrogate keys):
// fetch returns the value's tags with it, and [Cache.PurgeTags] on any of
// them invalidates the value as [Cache.Purge] on its key would. A value
// with more than [MaxTags] distinct tags, or with a tag that is empty,
// longer than [MaxTagLength] bytes or not printable ASCII without spaces,
// goes to the caller whose fetch produced it and is not stored, because
// a purge could not be relied on to reach it.
//
// A tagged fill costs one more store round trip than an untagged one (it
// reads the purge epoch before fetch runs), and so does each hit on a
// tagged value (it reads its tags' purge versions).
func (c *Cache) DoTagged(ctx context.Context, key string, fetch func(ctx context.Context) (value []byte, tags []string, ttl time.Duration, err error)) ([]byte, error) {
	r, err := c.load(ctx, storeKey(c.cfg.namespace, key), flight{
		tagged: true,
		early:  c.cfg.policy.earlyRefresh,
		jitter: c.cfg.policy.ttlJitter,
		fetch: func(ctx context.Context, _ []byte) (outcome, error) {
			value, tags, ttl, err := fetch(ctx)
			set, ok := tagSet(tags)
			switch {
			case ttl == NoStore:
				return outcome{value: value, share: shareNone}, err
			case !ok:
				return outcome{value: value, share: sharePersonal}, err
			}
			return outcome{value: value, ttl: ttl, tags: set}, err
		},
	})
	if err == nil && r.source == fromAlone {
		c.stats.Fetches.Add(1)
		r.value, _, _, err = fetch(ctx)
	}
	if r.refresh != nil {
		go r.refresh()
	}
	return r.value, err
}

// outcome is what one run of a fill's fetch produced, and who may have it.
type outcome struct {
	value []byte
	// tags are the value's tags, their versions yet to be read at commit,
	// and epoch the purge epoch read before the fetch started.
	tags  []entry.Tag
	epoch fillEpoch
	// inheritTags adds the tags of the stale entry the fetch revalidated.
	inheritTags bool
	ttl         time.Duration // freshness lifetime; 0: the cache's TTL
	keep        time.Duration // how long to keep it stored past ttl (revalidation, stale windows)
	// fetched is how long the fetch took, recorded in the stored entry
	// for early refresh (0: not recorded).
	fetched time.Duration
	share   sharing
	// staleIfError, with share staleOnError, is how far past its
	// freshness the key's stale entry may still stand in for this fetch.
	staleIfError time.Duration
	// delivered says the fetch answered its own caller itself (an HTTP
	// response streamed, or passed through to the client): value is nil,
	// and only that caller's result says so.
	delivered bool
	// note is handed back to the caller that led the fill, never to the
	// callers that joined it (the HTTP layer: the first variant it stored).
	note any
}

// sharing says who may be served a fetch's value.
type sharing uint8

const (
	// shareAll: stored, and served to every caller of the fill.
	shareAll sharing = iota
	// shareNone: for the fetching caller only, neither stored nor shared:
	// the others fetch for themselves, and the key is marked uncacheable
	// for PassTTL, because the value says the key cannot be shared.
	shareNone
	// sharePersonal: like shareNone, without the marker: the value was
	// personal to the fetching caller and says nothing about the key.
	sharePersonal
	// shareLeader: for the fetching caller only, neither stored nor
	// marked; the callers that joined the fill look again, as after a
	// failed fetch (errLeaderFailed) (the HTTP layer: an error status
	// that the leading request may have caused itself, with its headers).
	shareLeader
	// shareCallers: served to every caller of the fill in this process,
	// but neither stored nor marked (the HTTP layer: a route over its key
	// budget still collapses a herd on a new key into one origin call).
	shareCallers
	// staleOnError: the fetch failed. If the key's stale entry is within
	// staleIfError past its freshness, every caller of the fill is served
	// that entry instead; otherwise the outcome stands, an error as an
	// error and a value as shareNone.
	staleOnError
)

// source says how a caller got its result.
type source uint8

const (
	fromStore     source = iota // found by this caller's lookup
	fromFill                    // this caller led the fill
	fromCollapsed               // another caller's fill in this process
	fromWaited                  // another process's fill, waited for
	fromAlone                   // nothing to share: the caller fetches for itself, uncached
	fromStale                   // a stale stored value, served while another caller refreshes it
	fromLocal                   // found by this caller's lookup in the local tier
)

// result is one caller's answer. A result from fromAlone has no value: the
// caller fetches for itself.
type result struct {
	value    []byte
	storedAt time.Time     // when the value was committed; zero if it is not stored
	ttl      time.Duration // freshness lifetime
	shared   bool          // other callers may be served this value
	pass     bool          // the lookup found the key marked uncacheable
	source   source
	// seen is what the lookup read at the key (nil: nothing), lookedAt
	// when it began, invalidated whether it was a tombstone or a purged
	// value. A fill's commit is fenced on seen: it only succeeds if the
	// key still holds it (see commit).
	seen        []byte
	lookedAt    time.Time
	invalidated bool
	// tags are the tags of a tagged value, found current by the lookup.
	tags []entry.Tag
	// leaderOnly says only the caller that led the fill may be served
	// its value; the callers that joined it look again. So it is when the fill's commit was refused because the key
	// was invalidated after its lookup (they may have arrived after the
	// invalidation), and when the outcome was for its leader alone
	// (shareLeader: what one request triggered is not handed to others).
	leaderOnly bool
	// failed says the outcome was for its leader alone because the fill
	// failed in a way that may be the leader's own (shareLeader).
	failed bool
	// validAt is when the value was last known current in the store: the
	// start of the lookup that read it, or the sending of the commit that
	// stored it. A caller that joined a fill after that may have seen an
	// invalidation that followed it, so it looks again instead.
	validAt time.Time
	// local is set for a hit from the local tier: its value decoded
	// once as an HTTP response, for every hit it serves.
	local *localResponse
	// delivered and note come from the outcome of the fill this caller led.
	delivered bool
	note      any
	// fetched is how long the fetch of the value took, as its entry
	// records it (0: not recorded).
	fetched time.Duration
	// refresh, set on a hit due for an early refresh, refills the key in
	// the background; the caller runs it once it has served the value.
	refresh func()
}

// fetchFunc runs one fill: given the key's stale entry, if the store still
// holds one past its freshness (to revalidate), it returns the outcome.
type fetchFunc = func(ctx context.Context, stale []byte) (outcome, error)

// flight describes one caller's way to fill a key.
type flight struct {
	fetch fetchFunc
	// bound means fetch borrows the leading caller's request (an HTTP
	// handler chain and its framework context): once the fetch has
	// started, that caller waits for it even after its context ends, and
	// a fetch whose caller left before it started does not run.
	bound bool
	// solo means no other caller may wait on this caller's fill (its
	// answer may be personal: an HTTP request with credentials): on a
	// miss it fetches by itself, without joining or leading this
	// process's fill or taking the key's lock, and commits only what its
	// outcome says may be shared.
	solo bool
	// ownFailures means a fetch's error or panic belongs to the caller
	// whose fetch failed (an HTTP request's own headers can make its
	// handler fail): the callers that joined it look again instead of
	// receiving it (see errLeaderFailed).
	ownFailures bool
	// staleOK, if set, reports whether a stale stored value may still be
	// served while it is refreshed (stale-while-revalidate). Then one
	// caller per process tries to refresh it, and is the only one to
	// wait: the others, and every caller while another process holds the
	// key's lock, are served the stale value at once.
	staleOK func(stale result) bool
	// tagged says the fetch may return tags: the fill reads the purge
	// epoch before it starts, which its commit is fenced on.
	tagged bool
	// early is the policy's EarlyRefresh factor (0: off): a hit in the
	// last part of its entry's freshness sets off a refill (see
	// refreshDue). earlyOK, if set, says whether a hit's value may be
	// refreshed so; background, if set, is the fetch a refresh runs in
	// place of fetch, answering no caller (the HTTP layer: the request
	// has been answered from the hit).
	early      float64
	earlyOK    func(hit result) bool
	background fetchFunc
	// gap is the average time between the key's requests in this
	// process, for a sparse key's wider refresh window (0: unknown; see
	// refreshWindow).
	gap time.Duration
	// jitter is the policy's TTLJitter fraction (0: none).
	jitter float64
	// times, if set, collects the caller's lookup and fill times (an
	// observed HTTP request, see Events.Request).
	times *requestTimes
}

// errLeaderLeft ends a bound fill whose caller left before it started; its
// waiters retry.
var errLeaderLeft = errors.New("flightcache: leader left before its fill started")

// errLookAgain ends the wait of a caller that joined a fill whose result
// it may not be served: the fill's commit was refused by an invalidation
// that the caller may have arrived after, or the caller joined after the
// result was last known current. It looks the key up again.
var errLookAgain = errors.New("flightcache: look again")

// errLeaderFailed ends the wait of a caller that joined a fill whose
// leader failed in a way that may be its own (flight.ownFailures): an
// error, a panic, or an outcome for the leader alone. The caller looks
// again, once: were it to wait behind every new leader, a client sending
// requests that fail could keep the others waiting as long as it likes.
// After a second such failure it fetches for itself.
var errLeaderFailed = errors.New("flightcache: the leader's fill failed")

// leaderFailuresWaited is how many failed fills a caller waits on before
// it fetches for itself.
const leaderFailuresWaited = 2

// Fill states of a bound flight, for the leader's hand-over.
const (
	flightPending int32 = iota
	flightRunning
	flightAbandoned
)

// load is the fill flow: lookup, then join (singleflight), then fill: lock,
// recheck, fetch, commit and notify, or wait for another process's fill.
func (c *Cache) load(ctx context.Context, key string, f flight) (result, error) {
	failures := 0
	for {
		if c.fillInFlight(key) {
			if c.joined != nil {
				c.joined(key)
			}
			r, err := c.join(ctx, key, f, nil, nil)
			if retry, alone := c.again(err, &failures); retry {
				continue
			} else if alone {
				return result{source: fromAlone}, nil
			}
			return r, err
		}
		var looked time.Time
		if f.times != nil {
			looked = time.Now()
		}
		r, ok := c.lookup(ctx, key)
		if f.times != nil {
			f.times.lookup += time.Since(looked)
		}
		if ok {
			c.stats.Hits.Add(1)
			if c.refreshesEarly(key, r, f.early, f.solo, f.gap) && (f.earlyOK == nil || f.earlyOK(r)) {
				r.refresh = func() { c.refreshAhead(ctx, key, f, r) }
			}
			return r, nil
		}
		c.stats.Misses.Add(1)
		if r.pass {
			return result{source: fromAlone}, nil
		}
		if f.solo {
			return c.fetch(ctx, key, c.fetchOf(key, f), r)
		}
		var err error
		if r.value != nil && f.staleOK != nil && f.staleOK(r) {
			r, err = c.refresh(ctx, key, f, r)
		} else {
			r, err = c.join(ctx, key, f, nil, nil)
		}
		if retry, alone := c.again(err, &failures); retry {
			continue
		} else if alone {
			return result{source: fromAlone}, nil
		}
		return r, err
	}
}

// again says what load does after err from a join: look again (retry), or
// fetch for itself (alone) once the caller waited on leaderFailuresWaited
// failed fills.
func (c *Cache) again(err error, failures *int) (retry, alone bool) {
	switch err {
	case errLeaderLeft, errLookAgain, errLockTaken:
		return true, false
	case errLeaderFailed:
		*failures++
		return *failures < leaderFailuresWaited, *failures >= leaderFailuresWaited
	}
	return false, false
}

// fetchOf is f's fetch, reading the tag purge epoch first when its values
// may carry tags.
func (c *Cache) fetchOf(key string, f flight) fetchFunc {
	fetch := f.fetch
	if f.early > 0 || f.jitter > 0 {
		fetch = c.shaped(fetch, f.early > 0, f.jitter)
	}
	if f.tagged {
		return c.epochFirst(key, fetch)
	}
	return fetch
}

// fillInFlight reports whether this process is filling key, other than
// refreshing a stale entry (whose callers are served that entry instead).
func (c *Cache) fillInFlight(key string) bool {
	if _, ok := c.filling.Load(key); !ok {
		return false
	}
	_, refreshing := c.refreshing.Load(key)
	return !refreshing
}

// refresh serves a stale value while one caller in this process refreshes
// it. That caller leads a fill as usual, except that if another process
// holds the key's lock, it too is served the stale value instead of
// waiting. A refresh that fails serves the stale value as well: the
// caller would have had it had another caller been refreshing.
func (c *Cache) refresh(ctx context.Context, key string, f flight, stale result) (result, error) {
	stale.source = fromStale
	if _, busy := c.refreshing.LoadOrStore(key, struct{}{}); busy {
		c.stats.Stale.Add(1)
		return stale, nil
	}
	defer c.refreshing.Delete(key)
	r, err := c.join(ctx, key, f, &stale, nil) // a panic in the fetch goes on up
	if err == nil || err == errLeaderLeft || err == errLookAgain || err == errLeaderFailed || ctx.Err() != nil {
		return r, err
	}
	c.stats.Stale.Add(1)
	return stale, nil
}

// join joins this process's fill of key, or leads it. stale, if not nil,
// is the stale entry a refresh serves should another process hold the
// key's lock. ahead, if not nil, is the fresh entry an early refresh
// refills (see fillAhead).
func (c *Cache) join(ctx context.Context, key string, f flight, stale, ahead *result) (result, error) {
	// state is touched only by this caller's closure, which singleflight
	// runs if this caller leads, so it tells the leader from the waiters.
	var state atomic.Int32
	joinedAt := time.Now()
	if f.times != nil {
		defer func() { f.times.join += time.Since(joinedAt) }()
	}
	ch := c.flight.DoChan(key, func() (any, error) {
		if !state.CompareAndSwap(flightPending, flightRunning) {
			return result{}, errLeaderLeft
		}
		c.filling.Store(key, struct{}{})
		defer c.filling.Delete(key)
		fctx, done := c.fillStarted(context.WithoutCancel(ctx))
		var r result
		var err error
		if ahead != nil {
			r, err = c.fillAhead(fctx, key, c.fetchOf(key, f), *ahead)
		} else {
			r, err = c.fill(fctx, key, c.fetchOf(key, f), stale)
		}
		if done != nil {
			done(r, err)
		}
		return r, err
	})
	var res singleflight.Result
	select {
	case res = <-ch:
	case <-ctx.Done():
		if !f.bound || state.CompareAndSwap(flightPending, flightAbandoned) {
			return result{}, fmt.Errorf("flightcache: wait for %s: %w", key, ctx.Err())
		}
		res = <-ch // our own bound fill is running: it may not outlive us
	}
	led := state.Load() == flightRunning
	var p *panicError
	if errors.As(res.Err, &p) && (led || !f.ownFailures) {
		panic(p) // the HTTP layer unwraps what net/http needs
	}
	if res.Err != nil {
		if !led && f.ownFailures && res.Err != errLeaderLeft && res.Err != errLookAgain && res.Err != errLockTaken {
			return result{}, errLeaderFailed // the leader's failure is its own
		}
		return result{}, res.Err
	}
	r := res.Val.(result)
	if led {
		return r, nil
	}
	r.delivered, r.note = false, nil // the leader's alone
	if r.leaderOnly && r.failed {
		return result{}, errLeaderFailed
	}
	if r.leaderOnly || !r.validAt.IsZero() && joinedAt.After(r.validAt) {
		// An invalidation this caller may have seen came after the
		// fill's lookup (the commit was refused), or after the value was
		// last known current. Callers that joined earlier asked before
		// either, so the value is theirs.
		return result{}, errLookAgain
	}
	if !r.shared {
		return result{source: fromAlone}, nil
	}
	if r.source == fromStale {
		return r, nil // the fill failed and fell back on the stale entry
	}
	c.stats.Collapsed.Add(1)
	r.source = fromCollapsed
	return r, nil
}

// fill runs one fill for this process, on a context detached from the
// caller's: waiting is bounded by the wait timeout, the fetch by its own.
func (c *Cache) fill(ctx context.Context, key string, fetch fetchFunc, stale *result) (result, error) {
	if c.cfg.noLock {
		// Look again: a fill of this process that ended after our
		// lookup, but before this one started, has already stored it.
		r, ok := c.lookup(ctx, key)
		if ok {
			return r, nil
		}
		return c.fetch(ctx, key, fetch, r)
	}
	lock := c.store.NewLock(key, c.cfg.lockExpiry)
	switch err := c.lock(ctx, key, lock); {
	case err == nil:
		return c.fillLocked(ctx, key, fetch, lock)
	case errors.Is(err, ErrLockHeld) && stale != nil:
		c.stats.Stale.Add(1)
		return *stale, nil // another process is refreshing it
	case errors.Is(err, ErrLockHeld):
		return c.wait(ctx, key, fetch, lock)
	default:
		// The store is unreachable (already reported): fail open.
		return c.fetch(ctx, key, fetch, result{})
	}
}

// fillLocked fills key while holding its lock.
func (c *Cache) fillLocked(ctx context.Context, key string, fetch fetchFunc, lock Lock) (result, error) {
	// The lease is renewed from here to the unlock: the recheck and the
	// commit are store calls that may take a while too.
	stop := c.keepLocked(ctx, key, lock)
	// Look again. Our lookup missed before we held the lock; in between,
	// another process may have taken the lock, committed and released it.
	// Without this recheck that interleaving calls the origin twice.
	r, ok := c.lookup(ctx, key)
	if ok {
		stop()
		c.unlock(ctx, key, lock)
		c.stats.Waited.Add(1)
		r.source = fromWaited
		return r, nil
	}
	r, err := c.fetch(ctx, key, fetch, r)
	stop()
	c.unlock(ctx, key, lock)
	if err != nil || r.source == fromStale || r.storedAt.IsZero() {
		// Nothing was committed, so no commit notification went out: wake
		// the other processes' waiters now so that one of them takes the
		// lock, rather than leaving them to their next poll.
		c.notify(ctx, key)
	}
	return r, err
}

// wait waits for another process's fill of key: until the value appears,
// the lock frees up (the filler failed or died; then this process fills),
// or the wait timeout passes (then it fetches unlocked and lets SET NX
// decide).
func (c *Cache) wait(ctx context.Context, key string, fetch fetchFunc, lock Lock) (res result, err error) {
	ctx, waited, slot := c.waitStarted(ctx)
	how := WokenNone
	if waited != nil {
		defer func() { waited(how, err == nil && res.source == fromWaited) }()
	}
	sctx, cancel := context.WithTimeout(ctx, c.cfg.storeTimeout)
	if slot != nil {
		sctx = context.WithValue(sctx, wakeSlotKey{}, slot)
	}
	woken, unsubscribe, err := c.store.Subscribe(sctx, key)
	cancel()
	if err != nil {
		c.report(ctx, OpSubscribe, key, err)
		woken = nil // poll only
	} else {
		defer unsubscribe()
	}
	deadline := time.NewTimer(c.cfg.waitTimeout)
	defer deadline.Stop()
	poll := time.NewTicker(c.cfg.pollInterval)
	defer poll.Stop()
	var stale result
	for {
		// Subscribed first, then look: a commit that landed between our
		// failed TryLock and Subscribe is found here, and one after it
		// wakes us. The same goes for a filler that gave up and unlocked.
		r, ok := c.lookup(ctx, key)
		if ok {
			c.stats.Waited.Add(1)
			r.source = fromWaited
			return r, nil
		}
		if r.pass {
			// The filler found the value uncacheable: stop queueing.
			return c.fetch(ctx, key, fetch, result{})
		}
		stale = r
		switch err := c.lock(ctx, key, lock); {
		case err == nil:
			return c.fillLocked(ctx, key, fetch, lock)
		case !errors.Is(err, ErrLockHeld):
			return c.fetch(ctx, key, fetch, stale)
		}
		select {
		case <-woken:
			how = WokenNotify
		case <-poll.C:
			how = WokenPoll
		case <-deadline.C:
			how = WokenTimeout
			return c.fetch(ctx, key, fetch, stale)
		}
	}
}

// fetch calls the fetch function and commits the value. stale is the
// key's stale entry, if it has one (its value nil otherwise): the fetch
// may revalidate it, or fall back on it when it fails. A filler holding
// the key's lock keeps it renewed around this call (see fillLocked).
func (c *Cache) fetch(ctx context.Context, key string, fetch fetchFunc, stale result) (result, error) {
	fctx, cancel := context.WithTimeout(ctx, c.cfg.fetchTimeout)
	defer cancel()
	o, err := c.call(fctx, fetch, stale.value)
	if o.share == staleOnError {
		// The stale entry is checked to be in place still: an invalidation
		// since the lookup must not be undone by serving it.
		checked := time.Now()
		if stale.value != nil && !stale.pass && c.now().Sub(stale.storedAt.Add(stale.ttl)) < o.staleIfError && c.holds(ctx, key, stale.seen) {
			stale.validAt = checked
			if err != nil {
				c.report(ctx, OpFetch, key, err)
			}
			c.stats.Stale.Add(1)
			stale.shared, stale.source = true, fromStale
			return stale, nil
		}
		o.share = shareNone
	}
	if err != nil {
		return result{}, err
	}
	mine := result{value: o.value, source: fromFill, delivered: o.delivered, note: o.note}
	switch o.share {
	case shareNone:
		c.markPass(ctx, key)
		return mine, nil
	case sharePersonal:
		return mine, nil
	case shareLeader:
		mine.leaderOnly, mine.failed = true, true
		return mine, nil
	case shareCallers:
		mine.shared, mine.validAt = true, time.Now()
		return mine, nil
	}
	if o.ttl == 0 {
		o.ttl = c.cfg.defaultTTL()
	}
	if o.inheritTags {
		// A revalidated entry keeps the tags it had.
		for _, t := range stale.tags {
			if !slices.ContainsFunc(o.tags, func(u entry.Tag) bool { return u.ID == t.ID }) {
				o.tags = append(o.tags, entry.Tag{ID: t.ID})
			}
		}
		if len(o.tags) > entry.MaxTags {
			return result{value: o.value, shared: true, source: fromFill, note: o.note}, nil
		}
	}
	r := c.commit(ctx, key, o.value, o.ttl, o.keep, o.fetched, tagging{o.tags, o.epoch}, stale)
	r.note = o.note
	return r, nil
}

// fillEpoch is the tag purge epoch a fill read before its fetch started;
// ok is false when it could not be read, and then the fill stores nothing
// tagged.
type fillEpoch struct {
	v  int64
	ok bool
}

// tagging is what a commit of a tagged value needs: its tags, and the
// purge epoch its fill read before fetching.
type tagging struct {
	tags  []entry.Tag
	epoch fillEpoch
}

// epochCtxKey is the context key under which a tagged fill's fetch finds
// its fillEpoch (the HTTP layer commits a URL's first variant itself).
type epochCtxKey struct{}

// epochFirst makes fetch read the tag purge epoch before it starts. A
// tag purge bumps the epoch before it raises its tags' versions, so a
// purge that began after this read leaves its tags with a version above
// it, which the commit checks (see stampTags).
func (c *Cache) epochFirst(key string, fetch fetchFunc) fetchFunc {
	return func(ctx context.Context, stale []byte) (outcome, error) {
		epoch := c.purgeEpoch(ctx, key)
		o, err := fetch(context.WithValue(ctx, epochCtxKey{}, epoch), stale)
		o.epoch = epoch
		return o, err
	}
}

// purgeEpoch reads the namespace's tag purge epoch; a failure is reported.
func (c *Cache) purgeEpoch(ctx context.Context, key string) fillEpoch {
	sctx, cancel := context.WithTimeout(ctx, c.cfg.storeTimeout)
	defer cancel()
	v, err := c.store.TagVersions(sctx, []string{c.epochKey})
	if err != nil {
		c.report(ctx, OpGet, key, err)
		return fillEpoch{}
	}
	return fillEpoch{v: v[0], ok: true}
}

// epochOf returns the purge epoch the tagged fill running on ctx read.
func epochOf(ctx context.Context) fillEpoch {
	e, _ := ctx.Value(epochCtxKey{}).(fillEpoch)
	return e
}

// stampTags records in tags their current purge versions, for a commit
// by a fill that read epoch before it fetched. It refuses (fenced) when a
// tag's version is above epoch: that tag's purge began after the epoch
// read, so the fetch may predate it. A version read before a purge in
// flight raises it is recorded and fails every later hit's check (see
// tagsCurrent), so the purge is kept either way. ok is false, not fenced,
// when the versions or the epoch could not be read.
func (c *Cache) stampTags(ctx, sctx context.Context, key string, tags []entry.Tag, epoch fillEpoch) (ok, fenced bool) {
	if !epoch.ok {
		return false, false
	}
	versions, err := c.store.TagVersions(sctx, c.tagKeys(tags))
	if err != nil {
		c.report(ctx, OpGet, key, err)
		return false, false
	}
	for i, v := range versions {
		if v > epoch.v && !c.unfenced {
			return false, true
		}
		tags[i].Version = v
	}
	return true, false
}

// tagsCurrent reports whether no tag was purged since the versions
// recorded in tags were read.
func (c *Cache) tagsCurrent(ctx context.Context, tags []entry.Tag) (bool, error) {
	return c.tagKeysCurrent(ctx, c.tagKeys(tags), tags)
}

// tagKeysCurrent is tagsCurrent for tags whose keys are keys.
func (c *Cache) tagKeysCurrent(ctx context.Context, keys []string, tags []entry.Tag) (bool, error) {
	versions, err := c.store.TagVersions(ctx, keys)
	if err != nil {
		return false, err
	}
	for i, v := range versions {
		if v != tags[i].Version {
			return false, nil
		}
	}
	return true, nil
}

func (c *Cache) tagKeys(tags []entry.Tag) []string {
	keys := make([]string, len(tags))
	for i, t := range tags {
		keys[i] = tagKey(c.cfg.namespace, t.ID)
	}
	return keys
}

// call runs fetch once, turning a panic into a *panicError for every caller.
func (c *Cache) call(ctx context.Context, fetch fetchFunc, stale []byte) (o outcome, err error) {
	c.stats.Fetches.Add(1)
	if ev := &c.cfg.events; ev.FetchStart != nil || ev.FetchDone != nil {
		if ev.FetchStart != nil {
			ctx = ev.FetchStart(ctx)
		}
		start := time.Now()
		defer func() {
			if ev.FetchDone != nil {
				ev.FetchDone(ctx, FetchEvent{Duration: time.Since(start), Err: err})
			}
		}()
	}
	defer func() {
		if v := recover(); v != nil {
			err = &panicError{value: v, stack: debug.Stack()}
		}
	}()
	return fetch(ctx, stale)
}

// commit stores value at key unless an invalidation fenced the key off
// since seen, the lookup the fill began with. It is conditional on the
// key still holding what that lookup read: SET NX when it read nothing,
// Replace of the bytes read otherwise. Invalidations write bytes no
// lookup can have read before (a tombstone or a purged value, each with a
// random nonce), so a fill that began before an invalidation cannot
// commit after it; its result goes only to its leader, uncommitted.
//
// Between fills the first commit wins: on a lost race commit returns the
// stored value instead of ours, so that every process serves the same
// bytes. A store failure leaves the value uncached.
//
// A tagged value is committed only if none of its tags was purged since
// its fill read the purge epoch (see stampTags), with the versions its
// tags had then.
func (c *Cache) commit(ctx context.Context, key string, value []byte, ttl, keep, fetched time.Duration, tg tagging, seen result) result {
	now := time.UnixMilli(c.now().UnixMilli()) // the precision stored
	mine := result{value: value, storedAt: now, ttl: ttl, shared: true, source: fromFill, fetched: fetched.Truncate(time.Millisecond)}
	uncommitted := func(fenced bool) result {
		mine.storedAt, mine.leaderOnly = time.Time{}, fenced
		if fenced {
			c.committed(ctx, CommitRefused)
		} else {
			c.committed(ctx, CommitFailed)
		}
		if !fenced {
			// The store failed: nothing is promised while it does, and a
			// caller that joined late gets this value rather than another
			// origin call.
			mine.validAt = time.Time{}
		}
		return mine
	}
	if c.unfenced {
		seen = result{}
	}
	if began := seen.lookedAt; !began.IsZero() && time.Since(began) >= c.cfg.fillSpan() {
		// Tombstones outlive fills that keep to the fetch timeout, not
		// this one: an invalidation since its lookup may be gone.
		return uncommitted(true)
	}
	sctx, cancel := context.WithTimeout(ctx, c.cfg.storeTimeout)
	defer cancel()
	sctx = c.propagating(sctx) // for the commit's notification
	mine.validAt = time.Now()
	var enc []byte
	if len(tg.tags) == 0 {
		enc = entry.EncodeFetched(now, ttl, fetched, value)
	} else {
		ok, fenced := c.stampTags(ctx, sctx, key, tg.tags, tg.epoch)
		if !ok {
			if fenced {
				c.stats.FencedCommits.Add(1)
			}
			return uncommitted(fenced)
		}
		enc = entry.EncodeTaggedFetched(now, ttl, fetched, tg.tags, value)
	}
	if seen.seen == nil {
		stored, won, err := c.store.SetNX(sctx, key, enc, ttl+keep)
		if err != nil {
			c.report(ctx, OpCommit, key, err)
			return uncommitted(false)
		}
		if won {
			c.stats.Commits.Add(1)
			c.committed(ctx, CommitWon)
			return mine
		}
		e, err := entry.Decode(stored)
		switch {
		case err == nil && (e.Kind == entry.KindValue || e.Kind == entry.KindTagged && c.tagsCurrentOr(ctx, sctx, key, e.Tags)) && c.fresh(e):
			c.stats.LostCommits.Add(1)
			c.committed(ctx, CommitLost)
			return result{value: e.Value, storedAt: e.StoredAt, ttl: e.TTL, shared: true, source: fromFill, validAt: mine.validAt, tags: e.Tags}
		case err == nil && (e.Kind == entry.KindTombstone || e.Kind == entry.KindPurged) && !c.unfenced:
			c.stats.FencedCommits.Add(1)
			return uncommitted(true) // invalidated since our lookup
		case err != nil:
			c.report(ctx, OpDecode, key, err)
		}
		// Another fill, since our lookup, left something we may replace:
		// an entry we cannot read (corrupt or foreign), a stale entry, or
		// an uncacheable marker.
		seen.seen = stored
	}
	ok, err := c.store.Replace(sctx, key, seen.seen, enc, ttl+keep)
	if err != nil {
		c.report(ctx, OpReplace, key, err)
		return uncommitted(false)
	}
	if ok {
		c.stats.Commits.Add(1)
		c.committed(ctx, CommitWon)
		return mine
	}
	// The key changed since it was read: another fill committed first
	// (serve its value, as SET NX would), or it was invalidated.
	r, ok := c.lookup(ctx, key)
	if ok {
		c.stats.LostCommits.Add(1)
		c.committed(ctx, CommitLost)
		r.source = fromFill
		return r
	}
	if r.invalidated {
		c.stats.FencedCommits.Add(1)
	}
	return uncommitted(r.invalidated)
}

// holds reports whether key still holds seen, the bytes a lookup read,
// and, for a tagged value, whether none of its tags was purged since.
func (c *Cache) holds(ctx context.Context, key string, seen []byte) bool {
	sctx, cancel := context.WithTimeout(ctx, c.cfg.storeTimeout)
	defer cancel()
	b, err := c.store.Get(sctx, key)
	if err != nil && !errors.Is(err, ErrNotFound) {
		c.report(ctx, OpGet, key, err)
	}
	if err != nil || !bytes.Equal(b, seen) {
		return false
	}
	e, err := entry.Decode(b)
	return err != nil || e.Kind != entry.KindTagged || c.tagsCurrentOr(ctx, sctx, key, e.Tags)
}

// tagsCurrentOr is tagsCurrent with a failure reported and taken as a no.
func (c *Cache) tagsCurrentOr(ctx, sctx context.Context, key string, tags []entry.Tag) bool {
	ok, err := c.tagsCurrent(sctx, tags)
	if err != nil {
		c.report(ctx, OpGet, key, err)
	}
	return ok
}

// commitSecondary stores value at key on behalf of a fill of another key
// (the HTTP layer: a URL's first variant, stored by the fill of its
// variant index), with commit's first-commit-wins rule.
// began is when the fill's own lookup began: the fence window runs from
// there, and the key, new to the store, is committed with SET NX.
// tags, if any, are committed with the purge epoch the fill running on
// ctx read.
func (c *Cache) commitSecondary(ctx context.Context, key string, value []byte, ttl, keep time.Duration, tags []entry.Tag, began time.Time) result {
	return c.commit(ctx, key, value, ttl, keep, 0, tagging{tags, epochOf(ctx)}, result{lookedAt: began})
}

// cached returns key's entry if the store holds it fresh, without filling
// it on a miss. It counts nothing: the caller counts what it serves.
func (c *Cache) cached(ctx context.Context, key string) (result, bool) {
	return c.lookup(ctx, key)
}

// invalidate fences key off in the shared store: it writes a tombstone
// in place of the entry, so that no process serves the entry again and no
// fill that began before commits (see commit). soft keeps a value entry
// as a purged one instead, which the HTTP layer may still serve stale
// while one refresh runs. It runs on a context detached from ctx, bounded
// by the store timeout, so that a client leaving cannot cut it short, and
// a failure is both reported and returned.
func (c *Cache) invalidate(ctx context.Context, key string, soft bool) error {
	ctx = context.WithoutCancel(ctx)
	sctx, cancel := context.WithTimeout(ctx, c.cfg.storeTimeout)
	defer cancel()
	err := c.fence(sctx, key, soft)
	if err != nil {
		c.report(ctx, OpInvalidate, key, err)
	}
	return err
}

func (c *Cache) fence(ctx context.Context, key string, soft bool) error {
	tombstoneTTL := 2 * c.cfg.fillSpan()
	for attempt := 0; soft && attempt < 3; attempt++ {
		b, err := c.store.Get(ctx, key)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		e, derr := entry.Decode(b)
		if err != nil || derr != nil || (e.Kind != entry.KindValue && e.Kind != entry.KindPurged) {
			break // nothing to keep stale: a tombstone will do
		}
		// Kept while it may still be served stale, and at least as long
		// as a tombstone, for the fence.
		ttl := max(tombstoneTTL, e.Expires().Sub(c.now())+softPurgeGrace)
		if ok, err := c.store.Invalidate(ctx, key, b, entry.Purged(e), ttl); err != nil || ok {
			return err
		}
		// Changed under us (a commit or another purge): read it again.
	}
	_, err := c.store.Invalidate(ctx, key, nil, entry.EncodeTombstone(c.now()), tombstoneTTL)
	return err
}

// softPurgeGrace is how long past its freshness a soft-purged entry stays
// in the store to be served stale, within the route's
// stale-while-revalidate window.
const softPurgeGrace = time.Hour

// markPass marks key uncacheable for PassTTL, unless it holds an entry.
// A lost marker only costs later callers a wait on the lock, so it is not
// retried.
func (c *Cache) markPass(ctx context.Context, key string) {
	sctx, cancel := context.WithTimeout(ctx, c.cfg.storeTimeout)
	defer cancel()
	now := time.UnixMilli(c.now().UnixMilli())
	if _, _, err := c.store.SetNX(sctx, key, entry.EncodePass(now, PassTTL), PassTTL); err != nil {
		c.report(ctx, OpCommit, key, err)
	}
}

// fresh reports whether an entry is still within its freshness lifetime.
// Entries are kept past it only for revalidation.
func (c *Cache) fresh(e entry.Entry) bool { return c.now().Before(e.Expires()) }

// lookup reads and decodes key's entry; anything but a readable, fresh
// entry is a miss. For a stale one, the returned result holds its value.
// Every result notes what was read, for the fill's fenced commit.
func (c *Cache) lookup(ctx context.Context, key string) (result, bool) {
	if c.local != nil {
		if r, ok := c.local.lookup(key, c.now()); ok {
			c.stats.LocalHits.Add(1)
			return r, true
		}
	}
	return c.read(ctx, key, true)
}

// read is lookup's store part: through the local tier if there is one and
// viaTier is set, else from the shared store.
func (c *Cache) read(ctx context.Context, key string, viaTier bool) (result, bool) {
	start := time.Now()
	tier := c.local // nil: no local tier, or read past it
	if !viaTier {
		tier = nil
	}
	var b []byte
	var err error
	var read localRead // what a tagged entry needs to enter the local tier
	switch {
	case tier != nil:
		b, read, err = tier.read(withDeadline(ctx, start.Add(c.cfg.storeTimeout)), key)
	case c.local != nil:
		b, err = c.local.Store.Get(withDeadline(ctx, start.Add(c.cfg.storeTimeout)), key)
	default:
		b, err = c.store.Get(withDeadline(ctx, start.Add(c.cfg.storeTimeout)), key)
	}
	miss := result{lookedAt: start, validAt: start}
	if err != nil {
		if !errors.Is(err, ErrNotFound) {
			c.report(ctx, OpGet, key, err)
		}
		return miss, false
	}
	miss.seen = b
	e, err := entry.Decode(b)
	if err != nil {
		c.report(ctx, OpDecode, key, err)
		return miss, false
	}
	switch e.Kind {
	case entry.KindPass:
		miss.pass = c.fresh(e)
		return miss, false
	case entry.KindTombstone:
		miss.invalidated = true
		return miss, false
	case entry.KindTagged:
		// A tag purged since the commit invalidates the entry as a
		// tombstone would: a miss (no stale serving: tag purges are
		// hard), whose refill replaces these bytes.
		keys := c.tagKeys(e.Tags)
		var stamps []tagStamp
		if tier != nil {
			// Noted before the versions are read: a tag purge told to
			// the tier after this turns the entry away (see admitTagged).
			stamps = tier.stampTags(keys)
		}
		current, err := c.tagKeysCurrent(withDeadline(ctx, time.Now().Add(c.cfg.storeTimeout)), keys, e.Tags)
		if err != nil {
			c.report(ctx, OpGet, key, err)
			return miss, false
		}
		if !current {
			miss.invalidated = true
			return miss, false
		}
		if tier != nil && c.fresh(e) {
			tier.admitTagged(key, b, e, read, stamps)
		}
	}
	r := result{value: e.Value, storedAt: e.StoredAt, ttl: e.TTL, shared: true, seen: b, lookedAt: start, validAt: start, tags: e.Tags, fetched: e.Fetch}
	if e.Kind == entry.KindPurged {
		// Stale from the purge on, whatever its lifetime said.
		r.ttl, r.invalidated = min(r.ttl, max(0, c.now().Sub(r.storedAt))), true
		return r, false
	}
	// A stale entry is a miss whose value the fill may revalidate.
	return r, c.fresh(e)
}

// lock tries key's lock once; a store failure is reported and returned.
func (c *Cache) lock(ctx context.Context, key string, lock Lock) error {
	sctx, cancel := context.WithTimeout(ctx, c.cfg.storeTimeout)
	defer cancel()
	err := lock.TryLock(sctx)
	switch {
	case err == nil:
		c.lockOutcome(ctx, LockAcquired)
	case errors.Is(err, ErrLockHeld):
		c.lockOutcome(ctx, LockHeld)
	default:
		c.report(ctx, OpLock, key, err) // LockFailed
	}
	return err
}

func (c *Cache) unlock(ctx context.Context, key string, lock Lock) {
	sctx, cancel := context.WithTimeout(ctx, c.cfg.storeTimeout)
	defer cancel()
	if err := lock.Unlock(sctx); err != nil {
		c.report(ctx, OpUnlock, key, err)
	}
}

func (c *Cache) notify(ctx context.Context, key string) {
	sctx, cancel := context.WithTimeout(ctx, c.cfg.storeTimeout)
	defer cancel()
	if err := c.store.Notify(sctx, key); err != nil {
		c.report(ctx, OpNotify, key, err)
	}
}

// keepLocked extends lock every fifth of its expiry until stop is called:
// the lock is a short lease, renewed by this heartbeat while the fill
// runs, so that a filler that dies frees it within one expiry while a
// slow one keeps it. A failed extension is reported; one that finds the
// lock lost ends the extending (not the fetch: the lock only saves origin
// calls, SET NX keeps the answer consistent), any other is retried at the
// next beat, which still falls within the expiry.
func (c *Cache) keepLocked(ctx context.Context, key string, lock Lock) (stop func()) {
	if lock == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		// Five beats per lease: a lease lapses only when four renewals
		// in a row fail or come late (a store slower than its timeout,
		// a starved process), not on one slow round trip.
		t := time.NewTicker(c.cfg.lockExpiry / 5)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				sctx, cancel := context.WithTimeout(ctx, c.cfg.storeTimeout)
				err := lock.Extend(sctx)
				cancel()
				if err != nil {
					c.report(ctx, OpExtend, key, err)
				}
				if errors.Is(err, ErrLockNotHeld) {
					return // lapsed: another filler may hold it now
				}
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// report hands an absorbed store error to the observer. Errors caused by
// the caller's own context ending are not the store's fault and are dropped.
func (c *Cache) report(ctx context.Context, op, key string, err error) {
	if ctx.Err() != nil || errors.Is(err, errBreakerOpen) {
		return
	}
	var ce *Error
	if errors.As(err, &ce) && ce.Op == op {
		err = ce.Err // already described
	}
	c.stats.Errors.Add(1)
	e := &Error{Op: op, Key: key, Err: err}
	if c.cfg.observer != nil {
		c.cfg.observer(e)
	}
	c.reported(ctx, e)
}

// deadlineCtx carries a deadline without arming a timer: the lookup of
// every hit would otherwise start and stop one, which costs a wake-up of
// the runtime's poller thread, about a tenth of a hit on a 2-core machine
// (BenchmarkHit/cached in the adapters). The deadline still bounds the
// lookup where it matters: go-redis with ContextTimeoutEnabled turns it
// into the socket's read and write deadlines, so a stalled Redis costs the
// store timeout, as TestStalledRedisCostsOnlyTheStoreTimeout checks. What it
// does not do is close Done when it passes; a Store that waits on Done
// alone waits on its caller's context, and go-redis's wait for a pooled
// connection is bounded by its PoolTimeout. Fills, commits and locks are
// rarer and keep a real context.WithTimeout.
type deadlineCtx struct {
	context.Context
	deadline time.Time
}

func withDeadline(ctx context.Context, d time.Time) context.Context {
	if pd, ok := ctx.Deadline(); ok && pd.Before(d) {
		return ctx
	}
	return deadlineCtx{ctx, d}
}

func (c deadlineCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func init() {
	testhook.SetClock = func(cache any, now func() time.Time) { cache.(*Cache).now = now }
	testhook.Unfence = func(cache any) { cache.(*Cache).unfenced = true }
	testhook.OnJoin = func(cache any, f func(key string)) { cache.(*Cache).joined = f }
	testhook.SetSleep = func(cache any, sleep func(time.Duration, <-chan struct{})) { cache.(*Cache).sleep = sleep }
}
