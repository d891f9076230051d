// Package testhook lets this module's tests, and the suites in
// core/cachetest, reach into a [core.Cache] without widening its API.
package testhook

import (
	"sync"
	"time"
)

// SetClock replaces the clock a *core.Cache reads freshness, ages and
// stale windows from. Package core sets it in its init. Call it right
// after core.New, before the cache serves anything.
var SetClock func(cache any, now func() time.Time)

// Unfence turns a *core.Cache's fencing off: its commits ignore what its
// fill's lookup read and replace tombstones, as a cache with a bare DEL
// for invalidation would. Tests use it to show that they catch what the
// fence prevents. Package core sets it in its init.
var Unfence func(cache any)

// OnJoin makes a *core.Cache call f when a caller joins the process's fill
// of a key in flight without looking the key up: tests order goroutines
// on it. Package core sets it in its init.
var OnJoin func(cache any, f func(key string))

// SetSleep replaces how a *core.Cache holds a sparse key's early refresh:
// for d on its clock, or until wake receives. With a fake clock, tests
// advance it instead. Package core sets it in its init.
var SetSleep func(cache any, sleep func(d time.Duration, wake <-chan struct{}))

// OnDeliver makes a *core.RedisStore call f with each message's channel
// on its subscription's delivery goroutine, before handling the message:
// tests hold a process's deliveries back by blocking in f. Package core
// sets it in its init.
var OnDeliver func(store any, f func(channel string))

// NoDeliveryWait turns a *core.RedisStore's delivery guarantee off: its
// Invalidate returns without waiting for other processes' local tiers,
// and its own tiers serve from memory whether or not they were told of
// every invalidation, as before the guarantee existed. Tests use it to
// show that they catch what the guarantee prevents. Package core sets it
// in its init.
var NoDeliveryWait func(store any)

// Clock is a fake clock for tests: it stands still until Advance moves it.
// It is safe for concurrent use.
type Clock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

// NewClock returns a clock that reads start until advanced.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
