package core

import "fmt"

// Error describes a store, lock or decoding failure that the cache absorbed
// while failing open, a change of the store circuit breaker's state, or an
// origin failure it hid by serving a stale entry ([OpFetch], see
// [StaleIfError]). The cache hands it to the [Observer]; callers of
// [Cache.Do] and clients of the HTTP middleware never see it. Use
// errors.As with a *Error target.
type Error struct {
	Op  string // what failed: one of the Op constants, such as [OpGet]
	Key string // the hashed store key, never the caller's raw key; "" for OpBreaker and OpWatch
	Err error
}

// Values of [Error.Op]: the step of the cache that failed.
const (
	// OpGet is a failed read of a key from the store (Store.Get), or of
	// the tag purge versions a tagged fill or hit reads (Store.TagVersions).
	OpGet = "get"
	// OpCommit is a failed write of a fill's value, or of the marker that
	// makes a key uncacheable for a while, to the store (Store.SetNX); the
	// fill's callers were served the value uncached.
	OpCommit = "commit"
	// OpReplace is a failed replacement (Store.Replace) of what a fill
	// found at its key instead of a fresh value: an entry that did not
	// decode, a stale entry or an uncacheable marker.
	OpReplace = "replace"
	// OpInvalidate is a failed invalidation (Store.Invalidate) of stored
	// entries: a purge ([Cache.Purge], [Cache.PurgeURL]), the URL of an
	// unsafe request that succeeded, or an unreadable or outdated variant
	// index; or a failed tag purge ([Cache.PurgeTags], Store.PurgeTags),
	// whose Key is then the namespace's purge epoch key. Until they expire, the old entries may still be served.
	OpInvalidate = "invalidate"
	// OpLock is a failure to reach the store to take a fill lock
	// (Lock.TryLock); a lock held by another filler is not reported.
	OpLock = "lock"
	// OpExtend is a failed extension of a fill lock while its fetch ran
	// (Lock.Extend), including a lock found expired or taken over
	// ([ErrLockNotHeld]). The fetch goes on.
	OpExtend = "extend"
	// OpUnlock is a failed release of a fill lock (Lock.Unlock),
	// including a lock found expired or taken over ([ErrLockNotHeld]).
	OpUnlock = "unlock"
	// OpSubscribe is a failure to subscribe to a key's fill notifications
	// (Store.Subscribe) before waiting for another process's fill.
	OpSubscribe = "subscribe"
	// OpNotify is a failure to wake the waiters of a key (Store.Notify).
	OpNotify = "notify"
	// OpWatch is a failure to start watching the store's invalidations
	// for the local tier ([InvalidationWatcher]); the tier serves nothing
	// until a later attempt succeeds.
	OpWatch = "watch"
	// OpDecode is a stored entry or variant index that did not decode; it
	// counts as a miss.
	OpDecode = "decode"
	// OpFetch is an error of the fetch function (or HTTP handler) that the
	// cache hid by serving a stale entry in its place ([StaleIfError]);
	// Err is that error. A 5xx answer served stale the same way is not
	// reported.
	OpFetch = "fetch"
	// OpBreaker is a change of the store circuit breaker's state
	// ([WithBreaker]), such as "circuit closed -> open"; Key is empty.
	OpBreaker = "breaker"
)

func (e *Error) Error() string {
	if e.Key == "" {
		return fmt.Sprintf("flightcache: %s: %v", e.Op, e.Err)
	}
	return fmt.Sprintf("flightcache: %s %s: %v", e.Op, e.Key, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// panicError carries a fetch function's panic to every caller of the fill,
// each of which re-panics with the original value.
type panicError struct {
	value any
	stack []byte
}

func (p *panicError) Error() string {
	return fmt.Sprintf("flightcache: fetch panicked: %v\n\n%s", p.value, p.stack)
}
