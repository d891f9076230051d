package core

import (
	"fmt"
	"sync"
	"time"
)

// MaxKeys bounds how many distinct keys of the route one process fills
// per [TTL] period: once n keys were filled in the last TTL, a miss on
// yet another key is answered by the handler and not stored (marked
// BYPASS, Cache-Status "fwd=bypass; detail=key-limit"), until the oldest
// keys age out. Requests for such a key that arrive while its fill runs
// still share that one response (unless it varies, or is personal), so a
// herd on a new key costs one origin call even with the budget spent.
// Hits are always served. It caps what a client that
// invents query strings or path segments can make a route store; with P
// processes the fleet stores at most P×n keys of the route per TTL.
//
// Each route pattern has its own count; requests that reach
// [Middleware.Serve] without a pattern (""), as a net/http handler wrapped
// on its own may, share one per middleware. Unset, a route's key count is
// bounded only by the store's memory (see also [KeyQuery] and
// [IgnoreQuery]).
func MaxKeys(n int) PolicyOption {
	if n <= 0 {
		panic(fmt.Sprintf("flightcache: MaxKeys(%d): must be positive", n))
	}
	return policyOptionFunc(func(p *policy) { p.maxKeys = n })
}

// keyLimiter admits at most max distinct keys per window.
type keyLimiter struct {
	max    int
	window time.Duration

	mu        sync.Mutex
	keys      map[string]time.Time // key → when it stops counting
	nextPrune time.Time            // full: no scan for expired keys before then
}

func newKeyLimiter(max int, window time.Duration) *keyLimiter {
	return &keyLimiter{max: max, window: window, keys: make(map[string]time.Time, min(max, 1024))}
}

// admit reports whether key may be filled now, counting it if so. A key
// already counted is admitted again: refilling it adds nothing.
func (l *keyLimiter) admit(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if until, ok := l.keys[key]; ok && now.Before(until) {
		return true
	}
	if len(l.keys) >= l.max {
		// Scanning for expired keys costs O(max): at most once a second,
		// so that a flood of new keys cannot make every miss pay it.
		if now.Before(l.nextPrune) {
			return false
		}
		l.nextPrune = now.Add(time.Second)
		for k, until := range l.keys {
			if !now.Before(until) {
				delete(l.keys, k)
			}
		}
		if len(l.keys) >= l.max {
			return false
		}
	}
	l.keys[key] = now.Add(l.window)
	return true
}

// keyLimiter returns the limiter of pattern under p, nil when p sets no
// limit.
func (rt *Middleware) keyLimiter(pattern string, p *policy) *keyLimiter {
	if p.maxKeys == 0 {
		return nil
	}
	if l, ok := rt.limits.Load(pattern); ok {
		return l.(*keyLimiter)
	}
	l, _ := rt.limits.LoadOrStore(pattern, newKeyLimiter(p.maxKeys, p.ttl))
	return l.(*keyLimiter)
}
