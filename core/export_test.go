package core

import (
	"context"
	"time"
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
