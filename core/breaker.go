package core

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sony/gobreaker/v2"
)

// errBreakerOpen is what a store call returns, at once, while the circuit
// breaker is open. It fails the call open like any store error, but is
// not reported each time: the breaker's state changes are.
var errBreakerOpen = errors.New("flightcache: store circuit breaker open")

// breakerStore guards a Store with a circuit breaker (sony/gobreaker):
// after failures in a row it stops calling the store for a cool-down, so a
// dead or stalled Redis costs requests nothing instead of a store timeout
// each; then one probe call decides whether to close again.
type breakerStore struct {
	Store
	cb *gobreaker.TwoStepCircuitBreaker[struct{}]
}

func newBreakerStore(s Store, failures int, cooldown time.Duration, report func(err error)) *breakerStore {
	return &breakerStore{Store: s, cb: gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:    "flightcache-store",
		Timeout: cooldown,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= uint32(failures)
		},
		IsSuccessful: func(err error) bool {
			// A miss, a held lock or a lost one are answers, not failures.
			return err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrLockHeld) || errors.Is(err, ErrLockNotHeld)
		},
		// A caller that gave up says nothing about the store.
		IsExcluded: func(err error) bool { return errors.Is(err, context.Canceled) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			report(&Error{Op: OpBreaker, Err: &breakerChange{breakerState(from), breakerState(to)}})
		},
	})}
}

// breakerChange is the error an [OpBreaker] report carries.
type breakerChange struct{ from, to BreakerState }

func (b *breakerChange) Error() string { return fmt.Sprintf("circuit %s -> %s", b.from, b.to) }

func breakerState(s gobreaker.State) BreakerState {
	switch s {
	case gobreaker.StateOpen:
		return BreakerOpen
	case gobreaker.StateHalfOpen:
		return BreakerHalfOpen
	}
	return BreakerClosed
}

// guard runs f if the breaker lets it.
func (s *breakerStore) guard(f func() error) error {
	done, err := s.cb.Allow()
	if err != nil {
		return errBreakerOpen
	}
	err = f()
	done(err)
	return err
}

func (s *breakerStore) Get(ctx context.Context, key string) (b []byte, err error) {
	err = s.guard(func() error { b, err = s.Store.Get(ctx, key); return err })
	return b, err
}

func (s *breakerStore) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (stored []byte, won bool, err error) {
	err = s.guard(func() error { stored, won, err = s.Store.SetNX(ctx, key, value, ttl); return err })
	return stored, won, err
}

func (s *breakerStore) Replace(ctx context.Context, key string, old, value []byte, ttl time.Duration) (ok bool, err error) {
	err = s.guard(func() error { ok, err = s.Store.Replace(ctx, key, old, value, ttl); return err })
	return ok, err
}

func (s *breakerStore) Invalidate(ctx context.Context, key string, old, marker []byte, ttl time.Duration) (ok bool, err error) {
	err = s.guard(func() error {
		ok, err = s.Store.Invalidate(ctx, key, old, marker, ttl)
		return err
	})
	return ok, err
}

func (s *breakerStore) Subscribe(ctx context.Context, key string) (ch <-chan struct{}, cancel func(), err error) {
	err = s.guard(func() error { ch, cancel, err = s.Store.Subscribe(ctx, key); return err })
	return ch, cancel, err
}

func (s *breakerStore) Notify(ctx context.Context, key string) error {
	return s.guard(func() error { return s.Store.Notify(ctx, key) })
}

func (s *breakerStore) PurgeTags(ctx context.Context, epochKey string, tagKeys []string) error {
	return s.guard(func() error { return s.Store.PurgeTags(ctx, epochKey, tagKeys) })
}

func (s *breakerStore) TagVersions(ctx context.Context, keys []string) (versions []int64, err error) {
	err = s.guard(func() error { versions, err = s.Store.TagVersions(ctx, keys); return err })
	return versions, err
}

func (s *breakerStore) NewLock(key string, expiry time.Duration) Lock {
	return &breakerLock{Lock: s.Store.NewLock(key, expiry), s: s}
}

type breakerLock struct {
	Lock
	s *breakerStore
}

func (l *breakerLock) TryLock(ctx context.Context) error {
	return l.s.guard(func() error { return l.Lock.TryLock(ctx) })
}

func (l *breakerLock) Extend(ctx context.Context) error {
	return l.s.guard(func() error { return l.Lock.Extend(ctx) })
}

func (l *breakerLock) Unlock(ctx context.Context) error {
	return l.s.guard(func() error { return l.Lock.Unlock(ctx) })
}
