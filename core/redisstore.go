package core

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-redsync/redsync/v4"
	redsyncredis "github.com/go-redsync/redsync/v4/redis"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"

	"github.com/flightcache/flightcache/core/internal/wake"
)

// Redis names derived from a store key: the value lives at the key itself,
// the fill lock at key+lockSuffix, fill notifications go to the channel
// key+channelSuffix and invalidations (Invalidate, Replace) to the channel
// key+invalidatedSuffix. The key ends in a {hash tag}, so all four share
// one Redis Cluster slot. Both channels are plain PUBLISH channels, which a
// cluster forwards to every node, so the process's pattern subscription
// sees them whichever node it is connected to.
const (
	lockSuffix         = ":lock"
	channelSuffix      = ":filled"
	channelPattern     = "*}" + channelSuffix
	invalidatedSuffix  = ":invalidated"
	invalidatedPattern = "*}" + invalidatedSuffix
)

// RedisStore is a [Store] on Redis, shared by every process that uses the
// same Redis: values with SET NX GET, fill locks with redsync, and fill
// notifications with pub/sub. It works with a single node, Sentinel or
// Cluster through [redis.UniversalClient] and needs Redis 7.0 or later
// (SET with both NX and GET).
//
// Each process holds one pub/sub connection, opened on the first wait (or
// when a local tier starts watching invalidations) and shared by all
// waiting requests and local tiers. Call [RedisStore.Close] to release it;
// the client itself stays the caller's to close. A RedisStore is safe for
// concurrent use.
type RedisStore struct {
	rdb      redis.UniversalClient
	rs       *redsync.Redsync
	wake     wake.Registry
	watchers invalidationWatchers
	fleet    fleetDelivery
	reads    pipelinedReads

	mu     sync.Mutex // guards ps, done and closed
	ps     *redis.PubSub
	done   chan struct{} // closed when the forwarding goroutine returns
	closed bool
}

var (
	_ Store               = (*RedisStore)(nil)
	_ InvalidationWatcher = (*RedisStore)(nil)
)

var errClosed = errors.New("flightcache: store closed")

// RedisStoreOption configures a [RedisStore]; it is accepted by
// [NewRedisStore]. Like [Option] for a [Cache], it is an interface that
// only this package implements, so that an option meant for another
// constructor does not compile here.
type RedisStoreOption interface {
	applyStore(*RedisStore)
}

type redisStoreOptionFunc func(*RedisStore)

func (f redisStoreOptionFunc) applyStore(s *RedisStore) { f(s) }

// WithAutoPipelining sets whether reads of stored entries may share
// pipelines (go-redis's automatic pipelining) while many are in flight at
// once. On by default. A read takes the shared pipeline only when more
// than a few other reads are waiting for Redis, so a lightly loaded
// process reads exactly as before; under many concurrent hits, batching
// them saves most of the system calls and Redis work per hit. Each read
// still gives up at its own deadline. Turn it off to keep every read on a
// connection of its own.
func WithAutoPipelining(enabled bool) RedisStoreOption {
	return redisStoreOptionFunc(func(s *RedisStore) { s.reads.off = !enabled })
}

// WithLockNodes takes fill locks on independent Redis nodes instead of the
// store's own client, with redsync's Redlock quorum: a lock is held when a
// majority of the nodes granted it, so it keeps working with a minority
// of them down. Give an odd number of nodes that fail independently (not
// the replicas of one another). Values and notifications stay on the
// store's client. The default is to take locks on the store's client.
func WithLockNodes(nodes ...redis.UniversalClient) RedisStoreOption {
	if len(nodes) == 0 {
		panic("flightcache: WithLockNodes: no nodes")
	}
	pools := make([]redsyncredis.Pool, len(nodes))
	for i, n := range nodes {
		pools[i] = goredis.NewPool(n)
	}
	return redisStoreOptionFunc(func(s *RedisStore) { s.rs = redsync.New(pools...) })
}

// NewRedisStore returns a store on rdb. It does no I/O and panics if rdb
// is nil.
func NewRedisStore(rdb redis.UniversalClient, opts ...RedisStoreOption) *RedisStore {
	if rdb == nil {
		panic("flightcache: NewRedisStore: nil client")
	}
	s := &RedisStore{rdb: rdb, rs: redsync.New(goredis.NewPool(rdb)), fleet: newFleetDelivery()}
	s.reads.rdb = rdb
	for _, o := range opts {
		o.applyStore(s)
	}
	return s
}

// Get implements [Store].
func (s *RedisStore) Get(ctx context.Context, key string) ([]byte, error) {
	b, err := s.reads.get(ctx, key)
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	return b, err
}

// SetNX implements [Store] with SET key value PX ttl NX GET, pipelined with
// the PUBLISH that wakes waiters: one round trip.
func (s *RedisStore) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) ([]byte, bool, error) {
	var set *redis.StatusCmd
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		set = p.SetArgs(ctx, key, value, redis.SetArgs{Mode: "NX", TTL: ttl, Get: true})
		// A lost notification costs a waiter one poll interval, nothing
		// more, so the PUBLISH result is not checked.
		p.Publish(ctx, key+channelSuffix, propagated(ctx))
		return nil
	})
	old, err := set.Result()
	switch {
	case errors.Is(err, redis.Nil):
		return value, true, nil
	case err != nil:
		return nil, false, err
	}
	return []byte(old), false, nil
}

// Replace implements [Store] as a WATCH/MULTI transaction.
func (s *RedisStore) Replace(ctx context.Context, key string, old, value []byte, ttl time.Duration) (bool, error) {
	return s.replace(ctx, key, old, value, ttl, "")
}

// replace is Replace, publishing payload as the key's invalidation.
func (s *RedisStore) replace(ctx context.Context, key string, old, value []byte, ttl time.Duration, payload string) (bool, error) {
	errChanged := errors.New("changed")
	err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
		cur, err := tx.Get(ctx, key).Bytes()
		if errors.Is(err, redis.Nil) || (err == nil && !bytes.Equal(cur, old)) {
			return errChanged
		}
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, key, value, ttl)
			p.Publish(ctx, key+channelSuffix, propagated(ctx))
			p.Publish(ctx, key+invalidatedSuffix, payload)
			return nil
		})
		return err
	}, key)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, errChanged), errors.Is(err, redis.TxFailedErr):
		return false, nil
	}
	return false, err
}

// Invalidate implements [Store] with SET key marker PX ttl, or with a
// WATCH/MULTI transaction when old is given. The SET and the PUBLISH of
// the key's invalidation run as one transaction, so that no process can
// miss the invalidation while its subscription holds; then Invalidate
// waits for the processes that keep a local tier to answer, or for their
// leases to run out (see [WithInvalidationLease]).
func (s *RedisStore) Invalidate(ctx context.Context, key string, old, marker []byte, ttl time.Duration) (bool, error) {
	// The answers come on this store's own channel.
	if err := s.listen(ctx); err != nil {
		return false, err
	}
	seq, w := s.fleet.expect()
	defer s.fleet.forget(seq)
	payload := s.fleet.invalidationPayload(seq)
	var err error
	if old == nil {
		var set *redis.StatusCmd
		_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			set = p.Set(ctx, key, marker, ttl)
			p.Publish(ctx, key+invalidatedSuffix, payload)
			return nil
		})
		if err == nil {
			err = set.Err()
		}
	} else {
		var stored bool
		stored, err = s.replace(ctx, key, old, marker, ttl, payload)
		if err == nil && !stored {
			return false, nil
		}
	}
	if err != nil {
		return false, err
	}
	if err := s.awaitDelivery(ctx, s.fleet.mono(), w); err != nil {
		return true, err
	}
	return true, nil
}

// NewLock implements [Store] with a redsync mutex that tries once and
// never blocks: waiting happens on the value, not on the lock.
func (s *RedisStore) NewLock(key string, expiry time.Duration) Lock {
	return &redisLock{m: s.rs.NewMutex(key+lockSuffix,
		redsync.WithExpiry(expiry),
		redsync.WithTries(1),
		// redsync bounds each node call by expiry x this factor (0.05 by
		// default: 10 ms for a short lock, less than a new cluster
		// connection takes). The caller's context, WithStoreTimeout, is
		// the bound that matters; a lock that took longer than its whole
		// expiry to take would be worthless anyway.
		redsync.WithTimeoutFactor(1),
	)}
}

// Subscribe implements [Store]. The process's pattern subscription is
// confirmed by Redis before the first Subscribe returns.
func (s *RedisStore) Subscribe(ctx context.Context, key string) (<-chan struct{}, func(), error) {
	if err := s.listen(ctx); err != nil {
		return nil, nil, err
	}
	ch, cancel := s.wake.AddWithSlot(key, wakeSlot(ctx))
	return ch, cancel, nil
}

// WatchInvalidations implements [InvalidationWatcher] on the process's
// one pattern subscription, which it opens if it is not open yet.
func (s *RedisStore) WatchInvalidations(ctx context.Context, invalidate func(key string), reset func()) (func(), error) {
	if err := s.listen(ctx); err != nil {
		return nil, err
	}
	stop := s.watchers.add(invalidate, reset)
	s.startHeartbeat(ctx)
	return stop, nil
}

// listen opens the process's one subscription connection if it is not
// open, and returns once Redis confirmed both of its patterns.
func (s *RedisStore) listen(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return errClosed
	case s.ps != nil:
		return nil
	}
	ps := s.rdb.PSubscribe(ctx, channelPattern, invalidatedPattern)
	if err := ps.Subscribe(ctx, tierChannelPrefix+s.fleet.id); err != nil {
		_ = ps.Close()
		return err
	}
	for range subscriptions {
		if _, err := ps.Receive(ctx); err != nil {
			_ = ps.Close()
			return err
		}
	}
	// From here go-redis reconnects and resubscribes by itself; a
	// message published while it does is lost. The waiters' polling
	// covers a lost notification; for a lost invalidation, the
	// resubscription's confirmation resets the watchers (see forward).
	s.ps = ps
	s.done = make(chan struct{})
	go s.forward(ps.ChannelWithSubscriptions(), s.done)
	return nil
}

// forward fans notifications out to this process's waiters, and
// invalidations to its watchers, until the subscription is closed.
func (s *RedisStore) forward(ch <-chan any, done chan<- struct{}) {
	defer close(done)
	// Closed: no invalidation will be seen any more.
	defer s.watchers.reset()
	for msg := range ch {
		switch msg := msg.(type) {
		case *redis.Message:
			if f := s.fleet.onMsg.Load(); f != nil {
				(*f)(msg.Channel)
			}
			if key, ok := strings.CutSuffix(msg.Channel, invalidatedSuffix); ok {
				s.watchers.invalidate(key)
				s.fleet.owe(msg.Payload)
			} else if strings.HasPrefix(msg.Channel, tierChannelPrefix) {
				s.fleet.deliverOwn(msg.Payload)
			} else {
				// The payload is the filler's Events.Propagate string,
				// empty from a Notify or an earlier version.
				s.wake.WakeWith(strings.TrimSuffix(msg.Channel, channelSuffix), boundedPayload(msg.Payload))
			}
		case *redis.Subscription:
			// listen consumed the first confirmations, so this is go-redis
			// subscribing again on a new connection: invalidations
			// published while it had none were lost, and until every
			// channel is subscribed again, more may be. At each
			// confirmation the lease ends, heartbeats sent before it are
			// forgotten, and the watchers reset: the lease comes back
			// with a heartbeat sent after the last one.
			s.fleet.suspend()
			s.watchers.reset()
		}
	}
}

// subscriptions is how many channels and patterns the store's
// subscription holds: the two patterns and its own channel.
const subscriptions = 3

// tagMember is the one member of the sorted set that holds a purge
// counter: its score is the counter. A sorted set, rather than a string,
// because ZADD GT raises a score only if the new one is greater, in one
// command and without a script.
const tagMember = "v"

// PurgeTags implements [Store] with ZINCRBY on the epoch key, then one
// pipelined ZADD GT per tag key (on a Cluster, go-redis sends each node's
// share of the pipeline concurrently).
func (s *RedisStore) PurgeTags(ctx context.Context, epochKey string, tagKeys []string) error {
	epoch, err := s.rdb.ZIncrBy(ctx, epochKey, 1, tagMember).Result()
	if err != nil || len(tagKeys) == 0 {
		return err
	}
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range tagKeys {
			p.ZAddGT(ctx, k, redis.Z{Score: epoch, Member: tagMember})
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Then, once every version is raised, each tag key's invalidation
	// for the local tiers, which keep tagged entries: a tier told of it
	// before the raise could keep an entry read in between.
	if err := s.listen(ctx); err != nil {
		return err
	}
	seqs := make([]uint64, len(tagKeys))
	waits := make([]*ackWait, len(tagKeys))
	for i := range tagKeys {
		seqs[i], waits[i] = s.fleet.expect()
		defer s.fleet.forget(seqs[i])
	}
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range tagKeys {
			p.Publish(ctx, k+invalidatedSuffix, s.fleet.invalidationPayload(seqs[i]))
		}
		return nil
	})
	if err != nil {
		return err
	}
	return s.awaitDelivery(ctx, s.fleet.mono(), waits...)
}

// TagVersions implements [Store] with ZSCORE, pipelined when there are
// several keys.
func (s *RedisStore) TagVersions(ctx context.Context, keys []string) ([]int64, error) {
	versions := make([]int64, len(keys))
	if len(keys) == 1 {
		v, err := s.rdb.ZScore(ctx, keys[0], tagMember).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
		versions[0] = int64(v)
		return versions, nil
	}
	cmds, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.ZScore(ctx, k, tagMember)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	for i, cmd := range cmds {
		v, err := cmd.(*redis.FloatCmd).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
		versions[i] = int64(v)
	}
	return versions, nil
}

// Notify implements [Store].
func (s *RedisStore) Notify(ctx context.Context, key string) error {
	return s.rdb.Publish(ctx, key+channelSuffix, "").Err()
}

// Close releases the store's subscription connection and stops its
// goroutine; local tiers watching the store's invalidations are emptied
// and keep nothing more. It does not close the Redis client.
func (s *RedisStore) Close() error {
	s.stopHeartbeat()
	s.mu.Lock()
	ps, done := s.ps, s.done
	s.closed, s.ps = true, nil
	s.mu.Unlock()
	if ps == nil {
		return nil
	}
	err := ps.Close()
	<-done
	return err
}

// redisLock adapts a redsync mutex to [Lock].
type redisLock struct {
	m *redsync.Mutex
}

func (l *redisLock) TryLock(ctx context.Context) error {
	err := l.m.TryLockContext(ctx)
	if err == nil {
		return nil
	}
	var taken *redsync.ErrTaken
	var nodeTaken *redsync.ErrNodeTaken
	if errors.As(err, &taken) || errors.As(err, &nodeTaken) || errors.Is(err, redsync.ErrFailed) {
		return ErrLockHeld
	}
	return err
}

func (l *redisLock) Extend(ctx context.Context) error {
	ok, err := l.m.ExtendContext(ctx)
	return lockLost(ok, err)
}

func (l *redisLock) Unlock(ctx context.Context) error {
	ok, err := l.m.UnlockContext(ctx)
	return lockLost(ok, err)
}

// lockLost tells a lock that expired or was taken over (ErrLockNotHeld:
// the store answered) from a store that did not answer. With several lock
// nodes, one node's answer that the lock is not this mutex's is enough:
// the lock can no longer be trusted, whatever the other nodes said.
func lockLost(ok bool, err error) error {
	var taken *redsync.ErrTaken
	var nodeTaken *redsync.ErrNodeTaken
	switch {
	case ok:
		return nil
	case err == nil:
		return ErrLockNotHeld
	case errors.As(err, &taken), errors.As(err, &nodeTaken),
		errors.Is(err, redsync.ErrLockAlreadyExpired), errors.Is(err, redsync.ErrExtendFailed):
		return fmt.Errorf("%w: %v", ErrLockNotHeld, err)
	}
	return err
}

// boundedPayload is a notification's payload if it is no longer than
// MaxPropagated, else "": a foreign publisher cannot make waiters hold
// large strings.
func boundedPayload(p string) string {
	if len(p) > MaxPropagated {
		return ""
	}
	return p
}
