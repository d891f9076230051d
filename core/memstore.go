package core

import (
	"bytes"
	"context"
	"sync"
	"time"

	"github.com/maypok86/otter/v2"

	"github.com/flightcache/flightcache/core/internal/wake"
)

// MemoryStore is a [Store] for one process, with the same semantics as
// [RedisStore]: SetNX keeps the first value, locks expire, and waiters are
// notified. It suits a single instance, tests, and the embedded default.
// Values live in a bounded otter cache: past its byte budget, the least
// valuable entries are evicted before their TTL. Create it with
// [NewMemoryStore] and call [MemoryStore.Close] when done; it is safe for
// concurrent use.
type MemoryStore struct {
	values   *otter.Cache[string, memValue]
	wake     wake.Registry
	watchers invalidationWatchers

	mu    sync.Mutex // guards locks
	locks map[string]memLockState

	tagMu sync.Mutex // guards tags
	// tags holds the purge counters (PurgeTags): one per tag ever purged
	// and one for the epoch. They are never evicted, like Redis keys
	// without a TTL: forgetting one would let an entry stored before its
	// purge count as current again.
	tags map[string]int64
}

var (
	_ Store               = (*MemoryStore)(nil)
	_ InvalidationWatcher = (*MemoryStore)(nil)
)

type memValue struct {
	data []byte
	ttl  time.Duration
}

type memLockState struct {
	owner *memLock
	until time.Time
}

// DefaultMemoryBytes is the byte budget of a [MemoryStore] created with 0.
const DefaultMemoryBytes = 64 << 20

// NewMemoryStore returns a store holding at most about maxBytes of keys
// and values; 0 means [DefaultMemoryBytes].
func NewMemoryStore(maxBytes int64) *MemoryStore {
	if maxBytes < 0 {
		panic("flightcache: NewMemoryStore: negative size")
	}
	if maxBytes == 0 {
		maxBytes = DefaultMemoryBytes
	}
	return &MemoryStore{
		values: otter.Must(&otter.Options[string, memValue]{
			MaximumWeight: uint64(maxBytes),
			Weigher: func(key string, v memValue) uint32 {
				return uint32(min(len(key)+len(v.data)+64, 1<<32-1))
			},
			ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[string, memValue]) time.Duration {
				return e.Value.ttl
			}),
		}),
		locks: make(map[string]memLockState),
		tags:  make(map[string]int64),
	}
}

// Get implements [Store]. The returned slice is shared; do not modify it.
func (s *MemoryStore) Get(_ context.Context, key string) ([]byte, error) {
	v, ok := s.values.GetIfPresent(key)
	if !ok {
		return nil, ErrNotFound
	}
	return v.data, nil
}

// SetNX implements [Store].
func (s *MemoryStore) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) ([]byte, bool, error) {
	v, won := s.values.SetIfAbsent(key, memValue{data: bytes.Clone(value), ttl: ttl})
	if won {
		s.wake.WakeWith(key, propagated(ctx))
	}
	return v.data, won, nil
}

// Replace implements [Store].
func (s *MemoryStore) Replace(ctx context.Context, key string, old, value []byte, ttl time.Duration) (bool, error) {
	replaced := false
	s.values.Compute(key, func(cur memValue, found bool) (memValue, otter.ComputeOp) {
		if !found || !bytes.Equal(cur.data, old) {
			return cur, otter.CancelOp
		}
		replaced = true
		return memValue{data: bytes.Clone(value), ttl: ttl}, otter.WriteOp
	})
	if replaced {
		s.wake.WakeWith(key, propagated(ctx))
		s.watchers.invalidate(key)
	}
	return replaced, nil
}

// Invalidate implements [Store]; it tells every watch before it returns.
func (s *MemoryStore) Invalidate(_ context.Context, key string, old, marker []byte, ttl time.Duration) (bool, error) {
	stored := false
	s.values.Compute(key, func(cur memValue, found bool) (memValue, otter.ComputeOp) {
		if old != nil && (!found || !bytes.Equal(cur.data, old)) {
			return cur, otter.CancelOp
		}
		stored = true
		return memValue{data: bytes.Clone(marker), ttl: ttl}, otter.WriteOp
	})
	if stored {
		s.watchers.invalidate(key)
	}
	return stored, nil
}

// InvalidationsCurrent implements [InvalidationWatcher]: always true, as
// Invalidate tells every watch before it returns.
func (s *MemoryStore) InvalidationsCurrent() bool { return true }

// WatchInvalidations implements [InvalidationWatcher]. Every cache that
// shares the store is in this process, so invalidate is called from
// Invalidate and Replace themselves, and reset never.
func (s *MemoryStore) WatchInvalidations(_ context.Context, invalidate func(key string), reset func()) (func(), error) {
	return s.watchers.add(invalidate, reset), nil
}

// NewLock implements [Store].
func (s *MemoryStore) NewLock(key string, expiry time.Duration) Lock {
	return &memLock{s: s, key: key, expiry: expiry}
}

// Subscribe implements [Store].
func (s *MemoryStore) Subscribe(ctx context.Context, key string) (<-chan struct{}, func(), error) {
	ch, cancel := s.wake.AddWithSlot(key, wakeSlot(ctx))
	return ch, cancel, nil
}

// Notify implements [Store].
func (s *MemoryStore) Notify(_ context.Context, key string) error {
	s.wake.Wake(key)
	return nil
}

// PurgeTags implements [Store].
func (s *MemoryStore) PurgeTags(_ context.Context, epochKey string, tagKeys []string) error {
	s.tagMu.Lock()
	s.tags[epochKey]++
	epoch := s.tags[epochKey]
	for _, k := range tagKeys {
		s.tags[k] = max(s.tags[k], epoch)
	}
	s.tagMu.Unlock()
	// Local tiers keep tagged entries: a tag's key is invalidated like
	// an entry's, once its version is raised.
	for _, k := range tagKeys {
		s.watchers.invalidate(k)
	}
	return nil
}

// TagVersions implements [Store].
func (s *MemoryStore) TagVersions(_ context.Context, keys []string) ([]int64, error) {
	versions := make([]int64, len(keys))
	s.tagMu.Lock()
	defer s.tagMu.Unlock()
	for i, k := range keys {
		versions[i] = s.tags[k]
	}
	return versions, nil
}

// Close stops the value cache's maintenance goroutine.
func (s *MemoryStore) Close() error {
	s.values.StopAllGoroutines()
	return nil
}

// memLock is a [Lock] on a [MemoryStore]; it expires like a Redis lock.
type memLock struct {
	s      *MemoryStore
	key    string
	expiry time.Duration
}

func (l *memLock) TryLock(context.Context) error {
	now := time.Now()
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	if cur, ok := l.s.locks[l.key]; ok && now.Before(cur.until) {
		return ErrLockHeld
	}
	l.s.locks[l.key] = memLockState{owner: l, until: now.Add(l.expiry)}
	return nil
}

func (l *memLock) Extend(context.Context) error {
	now := time.Now()
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	if cur, ok := l.s.locks[l.key]; !ok || cur.owner != l || !now.Before(cur.until) {
		return ErrLockNotHeld
	}
	l.s.locks[l.key] = memLockState{owner: l, until: now.Add(l.expiry)}
	return nil
}

func (l *memLock) Unlock(context.Context) error {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	cur, ok := l.s.locks[l.key]
	if !ok || cur.owner != l {
		return ErrLockNotHeld
	}
	delete(l.s.locks, l.key)
	if !time.Now().Before(cur.until) {
		// Expired, though nobody took it over: say so, as a Redis lock
		// whose key expired does.
		return ErrLockNotHeld
	}
	return nil
}
