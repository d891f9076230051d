package core

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"time"
)

// Early refresh ([EarlyRefresh]) and TTL jitter ([TTLJitter]): the fill
// path's answers to hot keys expiring under load.
//
// An early refresh is a fill like any other (singleflight in the process,
// the key's lock across the fleet, a commit fenced on the bytes it
// replaces), started by a hit instead of a miss, and run after that hit
// has been served. What bounds it:
//
//   - when: only within the entry's refresh window, the last part of its
//     freshness (see refreshDue), never its first half, whatever clients
//     send or how many of them there are;
//   - how often: once at a time per key in a process (the refreshing mark,
//     kept a poll interval past an attempt that found the lock taken), and
//     once per entry across the fleet: under the lock it reads the entry
//     again and refreshes only the very entry the hit was served, so that
//     the processes that were served the old entry find it already
//     replaced;
//   - what it may undo: nothing. Its commit replaces the bytes it read
//     under the lock; a purge or invalidation since has changed them, so
//     the commit is refused, as a stale-while-revalidate refresh's is.

// refreshLeadFloor is added to an entry's refresh window: the lock, the
// second read and the commit, and a little time for a hit to arrive once
// the window opens.
const refreshLeadFloor = 100 * time.Millisecond

// refreshLead is how long before its expiry an entry fresh for ttl, whose
// fetch took fetched, may be refreshed early with the factor beta: beta
// times fetched, plus refreshLeadFloor, and at most half of ttl.
func refreshLead(ttl, fetched time.Duration, beta float64) time.Duration {
	lead := time.Duration(beta*float64(fetched)) + refreshLeadFloor
	return min(lead, ttl/2)
}

// A sparse key's window (refreshWindow). The refresh window above is
// short, to keep a hot key's origin calls near one per lifetime; a key
// whose requests are further apart than it may see none inside it, and
// then expires with requests waiting. So a hit on a key this process sees
// requested less often than refreshRequests times per window opens a
// wider one, holding that many of its requests on average (the gap
// between them is a moving average kept in the key memo, see
// memoKeys.arrived), and at most the second half of the entry's
// freshness, or the fetch timeout more than the window. A hit in the
// wider part is served, and then holds its handler chain until a hit in
// this process falls within the window proper (which would have set a
// hot key's refresh off) or, if none does, until the last fetch time and
// refreshLeadFloor before expiry, and refreshes the entry then: a sparse
// key's refresh comes no earlier than a hot key's, so its origin calls
// per lifetime are not raised either.
//
// What a client can do to it: requests make the gap shorter, never
// longer, so sending more narrows the window back to the one above (what
// every key had without the estimate); a key's estimate is its own (a
// memo slot taken over starts afresh, with the window above); every hold
// is of a request that was served, one per key and process at a time,
// ends within the fetch timeout, and no more than maxRefreshHolds run in
// a process (past that, the window above). The one refresh per entry
// across the fleet is unchanged: held refreshes of other processes find
// the lock taken or the entry replaced. The estimate is per process: with
// P processes behind a balancer each sees 1/P of a key's requests, so the
// wider window is wider than the fleet needs, which costs holds (and
// lock attempts, one per process), not origin calls.
const (
	refreshRequests = 8   // requests a sparse key's window holds on average
	maxRefreshHolds = 256 // held refreshes at a time in one process
)

// refreshWindow is the refresh window of an entry fresh for ttl, whose
// fetch took fetched, for the factor beta and a key requested every gap
// on average (0: unknown): the window proper (refreshLead), or the wider
// one of a sparse key.
func (c *Cache) refreshWindow(ttl, fetched time.Duration, beta float64, gap time.Duration) time.Duration {
	lead := refreshLead(ttl, fetched, beta)
	if gap <= lead/refreshRequests {
		return lead // hot enough, or unknown
	}
	wide := min(refreshRequests*gap, ttl/2, lead+c.cfg.fetchTimeout)
	return max(lead, wide)
}

// refreshDue reports whether a hit on r falls within its refresh window,
// that of a key requested every gap on average (0: unknown), and whether
// within the window proper (see refreshWindow).
func (c *Cache) refreshDue(r result, beta float64, gap time.Duration) (due, proper bool) {
	if r.storedAt.IsZero() {
		return false, false // not a stored entry: nothing to refresh
	}
	now, expires := c.now(), r.storedAt.Add(r.ttl)
	if !now.Before(expires.Add(-refreshLead(r.ttl, r.fetched, beta))) {
		return true, true
	}
	// Within a sparse key's wider window only while holds are free.
	return gap > 0 && c.sparseHolds.Load() < maxRefreshHolds &&
		!now.Before(expires.Add(-c.refreshWindow(r.ttl, r.fetched, beta, gap))), false
}

// refreshesEarly reports whether a hit on r at key sets off an early
// refresh with the factor beta (0: off): within the window (for a key
// requested every gap on average; 0: unknown), not for a solo
// (credentialed) caller, and not while this process is refreshing the
// key already. A hit within the window proper wakes a refresh of the key
// held in this process (see refreshAhead). The engine's lookup and the
// HTTP layer's local-tier fast path both ask it.
func (c *Cache) refreshesEarly(key string, r result, beta float64, solo bool, gap time.Duration) bool {
	if beta <= 0 || solo {
		return false
	}
	due, proper := c.refreshDue(r, beta, gap)
	if !due {
		return false
	}
	v, busy := c.refreshing.Load(key)
	if wake, held := v.(chan struct{}); busy && held && proper {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	return !busy
}

// refreshAhead refills key, whose entry hit was just served, on a context
// detached from ctx. It runs once at a time per key in this process; the
// caller that served hit runs it, and it ends within the fetch timeout
// (twice that for a hit in a sparse key's wider window, which first holds,
// see refreshWindow). A panic in the fetch
// is reported, not raised: the caller's answer has gone out already.
func (c *Cache) refreshAhead(ctx context.Context, key string, f flight, hit result) {
	// A hit in the window proper wakes a held refresh through wake.
	wake := make(chan struct{}, 1)
	if _, busy := c.refreshing.LoadOrStore(key, wake); busy {
		return
	}
	held := false
	defer func() {
		if held {
			// Another process holds the lock: it is refreshing the entry,
			// or filling it. Hits here keep being served meanwhile; they
			// try again a poll interval on, not on every hit.
			time.AfterFunc(c.cfg.pollInterval, func() { c.refreshing.Delete(key) })
		} else {
			c.refreshing.Delete(key)
		}
		if v := recover(); v != nil {
			c.report(ctx, OpFetch, key, fmt.Errorf("flightcache: early refresh of %s panicked: %v\n%s", key, v, debug.Stack()))
		}
	}()
	lead := refreshLead(hit.ttl, hit.fetched, f.early)
	if d := hit.storedAt.Add(hit.ttl - lead).Sub(c.now()); d > 0 {
		// A sparse key's hit before the window proper: hold until a hit
		// in this process falls within it, as a hot key's would set the
		// refresh off, so that a sparse key is refreshed no earlier than
		// a hot one; or, when none comes, until the fetch time and the
		// floor before expiry, the latest moment a refresh as fast as
		// the last fetch still ends in time. (The window opening itself
		// would refresh earlier than a hot key, on average by the time
		// to its first request in the window: in the expiry bench, 1.17
		// origin calls per key per TTL instead of 1.10.) Another
		// process's refresh meanwhile is found below (the entry
		// replaced), and ends this one without an origin call; so does
		// a purge.
		latest := hit.storedAt.Add(hit.ttl - min(hit.fetched+refreshLeadFloor, lead))
		c.sparseHolds.Add(1)
		c.sleep(min(latest.Sub(c.now()), c.cfg.fetchTimeout), wake)
		c.sparseHolds.Add(-1)
		c.stats.HeldRefreshes.Add(1)
	}
	c.stats.EarlyRefreshes.Add(1)
	if f.background != nil {
		f.fetch = f.background
	}
	ctx = context.WithoutCancel(ctx)
	_, err := c.join(ctx, key, f, nil, &hit)
	held = err == errLockTaken
}

// errLockTaken ends an early refresh that found the key's lock held. As
// after errLookAgain, callers that joined it look the key up again.
var errLockTaken = errors.New("flightcache: the key's lock is taken")

// fillAhead refreshes key's entry hit before it expires: under the key's
// lock, it reads the entry again from the shared store and, if it is
// still the one hit was served from, fetches and commits in its place. A
// lock held elsewhere or an entry replaced meanwhile ends it without an
// origin call, with errLookAgain: callers that joined this fill (they
// missed once the entry expired) look again.
func (c *Cache) fillAhead(ctx context.Context, key string, fetch fetchFunc, hit result) (result, error) {
	var lock Lock
	if !c.cfg.noLock {
		lock = c.store.NewLock(key, c.cfg.lockExpiry)
		if err := c.lock(ctx, key, lock); err != nil {
			return result{}, errLockTaken // or the store failed: no refresh either way
		}
	}
	// Read past the local tier, which may still hold the entry another
	// process has just replaced (its broadcast on the way): the lock
	// holder before us may have refreshed it, and committed before
	// unlocking.
	stop := c.keepLocked(ctx, key, lock) // from here to the unlock
	release := func() {
		stop()
		if lock != nil {
			c.unlock(ctx, key, lock)
		}
	}
	r, _ := c.read(ctx, key, false)
	if !sameEntry(r, hit) {
		release()
		return result{}, errLookAgain
	}
	// The commit replaces r.seen, the bytes just read: an invalidation
	// since (a purge, a write through the cache) has changed them, and
	// refuses it.
	res, err := c.fetch(ctx, key, fetch, r)
	release()
	if err != nil || res.source == fromStale || res.storedAt.IsZero() {
		c.notify(ctx, key) // nothing committed: wake waiters elsewhere
	}
	return res, err
}

// sleepOrWake returns after d, or once wake receives: [Cache]'s default
// hold of a sparse key's refresh (see refreshAhead).
func sleepOrWake(d time.Duration, wake <-chan struct{}) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-wake:
	}
}

// sameEntry reports whether r, read from the store, is the entry hit was
// served from: the same bytes, or (for a hit from the local tier, which
// keeps no bytes) the same commit, and neither invalidated nor replaced.
func sameEntry(r, hit result) bool {
	switch {
	case r.value == nil || r.invalidated:
		return false
	case hit.seen != nil:
		return bytes.Equal(r.seen, hit.seen)
	}
	return r.storedAt.Equal(hit.storedAt) && r.ttl == hit.ttl
}

// shaped wraps fetch for a flight with early refresh or TTL jitter: it
// records how long the fetch took (early), and shortens the freshness
// lifetime of its value by a random part of up to jitter of it.
func (c *Cache) shaped(fetch fetchFunc, early bool, jitter float64) fetchFunc {
	return func(ctx context.Context, stale []byte) (outcome, error) {
		began := time.Now()
		o, err := fetch(ctx, stale)
		if o.share != shareAll || o.delivered {
			return o, err
		}
		if o.ttl == 0 {
			o.ttl = c.cfg.defaultTTL()
		}
		if jitter > 0 {
			o.ttl = jittered(o.ttl, jitter)
		}
		if early {
			o.fetched = time.Since(began)
			// Kept a while past its freshness, so that a refresh that
			// overruns it still finds the bytes it replaces.
			o.keep = max(o.keep, min(o.ttl, c.cfg.fillSpan()))
		}
		return o, err
	}
}

// jittered shortens ttl by a random part of up to fraction of it, to the
// millisecond the store keeps, and never below 1 ms.
func jittered(ttl time.Duration, fraction float64) time.Duration {
	cut := time.Duration(rand.Float64() * fraction * float64(ttl))
	return max(time.Millisecond, (ttl - cut).Truncate(time.Millisecond))
}
