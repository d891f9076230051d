package core

import (
	"errors"
	"fmt"
)

// Error describes a store, lock or decoding failure that the cache absorbed
// while failing open, or an origin failure it hid by serving a stale entry
// (op "fetch", see [StaleIfError]). The cache hands it to the [Observer]; callers of
// [Cache.Do] never see it. Use errors.As with a *Error target.
type Error struct {
	Op  string // "get", "commit", "replace", "lock", "extend", "unlock", "subscribe", "notify", "watch", "decode" or "fetch"
	Key string // the hashed store key, never the caller's raw key
	Err error
}

func (e *Error) Error() string {
	if e.Key == "" {
		return fmt.Sprintf("flightcache: %s: %v", e.Op, e.Err)
	}
	return fmt.Sprintf("flightcache: %s %s: %v", e.Op, e.Key, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// The operations an [Error] names.
const (
	OpGet        = "get"        // a lookup
	OpDecode     = "decode"     // a stored entry that could not be read
	OpCommit     = "commit"     // storing a filled value or an uncacheable marker
	OpReplace    = "replace"    // replacing a stale, corrupt or foreign entry
	OpLock       = "lock"       // taking a fill lock
	OpExtend     = "extend"     // extending a held fill lock
	OpUnlock     = "unlock"     // releasing a fill lock
	OpSubscribe  = "subscribe"  // subscribing to a key's fill notifications
	OpNotify     = "notify"     // waking another process's waiters
	OpWatch      = "watch"      // starting the local tier's invalidation watch
	OpInvalidate = "invalidate" // deleting or fencing a key after a write
	OpBreaker    = "breaker"    // the circuit breaker opened or closed
	OpFetch      = "fetch"      // an origin failure hidden by a stale entry
)

// panicError carries a fetch function's panic to every caller of the fill,
// each of which re-panics with the original value.
type panicError struct {
	value any
	stack []byte
}

func (p *panicError) Error() string {
	return fmt.Sprintf("flightcache: fetch panicked: %v\n\n%s", p.value, p.stack)
}

var errLockLost = errors.New("flightcache: lock expired or taken over")
