// Package wake fans one process's fill notifications out to the goroutines
// waiting on each key.
package wake

import (
	"sync"
	"sync/atomic"
)

// Registry maps keys to the channels waiting on them. The zero value is
// ready to use and safe for concurrent use. Its size is bounded by the
// number of waits in progress: every Add is undone by the returned cancel.
type Registry struct {
	mu sync.Mutex // guards waiters
	// waiters maps a key to its channels, each with the slot (nil: none)
	// that receives the message of the notification that signals it.
	waiters map[string]map[chan struct{}]*atomic.Pointer[string]
}

// Add registers interest in key. The returned channel (capacity 1) receives
// a value each time Wake(key) is called while registered; cancel removes the
// registration and must be called exactly once.
func (r *Registry) Add(key string) (ch <-chan struct{}, cancel func()) {
	return r.AddWithSlot(key, nil)
}

// AddWithSlot is Add, with slot (if not nil) receiving the message of
// each non-empty notification ([Registry.WakeWith]) before it signals.
func (r *Registry) AddWithSlot(key string, slot *atomic.Pointer[string]) (ch <-chan struct{}, cancel func()) {
	c := make(chan struct{}, 1)
	r.mu.Lock()
	if r.waiters == nil {
		r.waiters = make(map[string]map[chan struct{}]*atomic.Pointer[string])
	}
	set := r.waiters[key]
	if set == nil {
		set = make(map[chan struct{}]*atomic.Pointer[string])
		r.waiters[key] = set
	}
	set[c] = slot
	r.mu.Unlock()
	return c, func() {
		r.mu.Lock()
		// c's set is still the current one: a set leaves the map only
		// when empty, and c is in it until now.
		set := r.waiters[key]
		delete(set, c)
		if len(set) == 0 {
			delete(r.waiters, key)
		}
		r.mu.Unlock()
	}
}

// Wake signals every channel registered for key without blocking: a waiter
// that has not consumed its previous signal keeps just one.
func (r *Registry) Wake(key string) { r.WakeWith(key, "") }

// WakeWith is Wake with a message, which each registration's slot
// receives unless it is empty.
func (r *Registry) WakeWith(key, msg string) {
	r.mu.Lock()
	for c, slot := range r.waiters[key] {
		if slot != nil && msg != "" {
			slot.Store(&msg)
		}
		select {
		case c <- struct{}{}:
		default:
		}
	}
	r.mu.Unlock()
}

// Len reports how many keys have waiters; tests use it to check that
// registrations do not leak.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.waiters)
}
