package core

import (
	"context"
	"errors"
	"time"
)

// Store is the shared storage a [Cache] fills: values, fill locks and fill
// notifications for one key each. [RedisStore] shares them across a fleet;
// [MemoryStore] keeps them in one process.
//
// Keys reach a Store already namespaced and hashed by the [Cache]: they are
// short, printable and safe to use as Redis key names. Implementations must
// be safe for concurrent use.
type Store interface {
	// Get returns the value stored at key, or [ErrNotFound].
	Get(ctx context.Context, key string) ([]byte, error)

	// SetNX stores value at key for ttl unless key already holds a value,
	// and notifies the key's subscribers. It returns the value the key holds
	// afterwards and whether it is this call's value; on a lost race it
	// returns the earlier value, read atomically with the attempt, so the
	// winner cannot expire in between.
	SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (stored []byte, won bool, err error)

	// Replace overwrites the value at key with value for ttl if key still
	// holds old, and reports whether it did, telling every process's
	// [InvalidationWatcher] callbacks without waiting for them to be told.
	// The cache uses it to replace an entry it cannot decode, a stale
	// entry, or the mark of a key made uncacheable for a while: changes
	// after which a local tier's copy may be served a little longer.
	Replace(ctx context.Context, key string, old, value []byte, ttl time.Duration) (bool, error)

	// Invalidate stores marker at key for ttl in place of what the key
	// holds — whatever that is when old is nil, present or not; else only
	// if the key holds exactly old — and reports whether it did. The cache
	// writes a tombstone or a purged entry, bytes no earlier read can have
	// returned, so that a fill's commit conditional on what its lookup
	// read (SetNX on a missing key, Replace on a present one) fails after
	// it.
	//
	// Unlike Replace, an Invalidate that stored its marker returns only
	// once every process's [InvalidationWatcher] callbacks have been told
	// of it, or that process's watch is no longer current (see
	// [InvalidationWatcher.InvalidationsCurrent]): a local tier anywhere
	// in the fleet serves nothing the invalidation replaced once it
	// returns.
	Invalidate(ctx context.Context, key string, old, marker []byte, ttl time.Duration) (bool, error)

	// NewLock returns an unlocked fill lock for key that expires after
	// expiry unless extended. Each fill uses its own Lock.
	NewLock(key string, expiry time.Duration) Lock

	// Subscribe registers interest in key's notifications before returning:
	// a Notify or SetNX for key that happens after Subscribe returns is
	// delivered to ch. cancel must be called once the caller stops waiting.
	Subscribe(ctx context.Context, key string) (ch <-chan struct{}, cancel func(), err error)

	// Notify wakes key's subscribers in every process, for example after a
	// fill gave up without storing a value.
	Notify(ctx context.Context, key string) error

	// PurgeTags records a purge of the tags whose keys are tagKeys: it
	// increments the counter at epochKey (the namespace's purge epoch),
	// then raises the counter at each tag key to the incremented value,
	// leaving a counter that a later purge already raised further as it
	// is, so that no counter ever goes down. Counters never expire. It
	// costs a constant number of commands per tag, whatever the number
	// of entries carrying the tags. Like Invalidate, it then tells every
	// process's [InvalidationWatcher] callbacks, with each tag key as the
	// key invalidated, and returns once they were told or are no longer
	// current.
	PurgeTags(ctx context.Context, epochKey string, tagKeys []string) error

	// TagVersions returns the counters at keys (an epoch key or tag keys),
	// in order, 0 for a key that holds none, in one round trip.
	TagVersions(ctx context.Context, keys []string) ([]int64, error)
}

// Lock is a fill lock on one key, held by at most one filler at a time
// across every process sharing the store. It is an optimisation: the
// cache's correctness rests on [Store.SetNX], not on the lock.
type Lock interface {
	// TryLock takes the lock without waiting. It returns [ErrLockHeld]
	// when another filler holds it, or another error when the store
	// cannot be reached.
	TryLock(ctx context.Context) error
	// Extend pushes the lock's expiry out by its full length again. It
	// returns an error wrapping [ErrLockNotHeld] when this Lock no longer
	// holds the lock (it expired, or another filler took it over), or
	// another error when the store cannot be reached.
	Extend(ctx context.Context) error
	// Unlock releases the lock if this Lock still holds it. Like Extend,
	// it returns an error wrapping [ErrLockNotHeld] when it does not, and
	// then leaves the lock as it is: a former holder never releases
	// another filler's lock.
	Unlock(ctx context.Context) error
}

// ErrNotFound is returned by [Store.Get] when the key holds no value.
var ErrNotFound = errors.New("flightcache: not found")

// ErrLockHeld is returned by [Lock.TryLock] when another filler holds the lock.
var ErrLockHeld = errors.New("flightcache: lock held by another filler")

// ErrLockNotHeld is returned, possibly wrapped, by [Lock.Extend] and
// [Lock.Unlock] when the Lock no longer holds its lock: it expired, or
// another filler took it over. It is an answer from the store, not a
// failure to reach it: the cache's circuit breaker ([WithBreaker]) counts
// it as a success, so a Lock implementation outside this package must
// return it (and test with errors.Is) for the breaker to stay closed
// while locks merely expire.
var ErrLockNotHeld = errors.New("flightcache: lock not held: expired or taken over")
