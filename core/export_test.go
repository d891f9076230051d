package core

import (
	"context"
	"time"

	"github.com/flightcache/flightcache/core/internal/entry"
)

// NewLocalTierStore returns s fronted by a local tier of maxBytes, as
// WithLocalTier installs it, for the store conformance suite.
func NewLocalTierStore(s Store, maxBytes int64) Store {
	return newLocalTier(s, s.(InvalidationWatcher), maxBytes, time.Now, func(context.Context, error) {})
}

// LocalTierSize runs the local tier's pending maintenance and returns its
// entry count and weight in bytes.
func LocalTierSize(c *Cache) (entries int, bytes uint64) {
	c.local.entries.CleanUp()
	return c.local.entries.EstimatedSize(), c.local.entries.WeightedSize()
}

// WatchCount returns how many invalidation watches s has registered.
func WatchCount(s *MemoryStore) int {
	s.watchers.mu.Lock()
	defer s.watchers.mu.Unlock()
	return len(s.watchers.set)
}

// EncodeTagged returns the store key of the Do key key in c's namespace,
// and the entry a commit of value, fresh for ttl and carrying tags that
// were never purged, stores there: for tests that write many entries
// without filling them.
func EncodeTagged(c *Cache, key string, value []byte, ttl time.Duration, tags ...string) (string, []byte) {
	set, ok := tagSet(tags)
	if !ok {
		panic("EncodeTagged: invalid tags")
	}
	return storeKey(c.cfg.namespace, key), entry.EncodeTagged(time.UnixMilli(c.now().UnixMilli()), ttl, set, value)
}

// PipelinedReads returns how many of s's reads went through the shared
// pipeline.
func PipelinedReads(s *RedisStore) int64 { return s.reads.pipelined.Load() }
