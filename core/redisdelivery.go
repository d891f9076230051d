package core

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flightcache/flightcache/core/internal/testhook"
)

// How a RedisStore makes an invalidation reach every local tier before
// Invalidate returns ([Store.Invalidate]), without comparing clocks of
// different processes:
//
//   - Acknowledgements. Every invalidation message carries its sender's
//     store id and a sequence number. A store whose caches keep a local
//     tier answers each one, after its tiers dropped the key, on the
//     sender's own channel. The sender waits for the answers of every
//     store in the registry of tiers, then returns.
//   - Leases, for the stores that do not answer (stopped, cut off, slow).
//     A tier serves from memory only while its store holds a lease. The
//     store renews it through its own subscription: it notes the time t0
//     on its monotonic clock, publishes a heartbeat on every master (the
//     messages one node forwards to another stay in order, so the
//     heartbeat from a node arrives after every invalidation that node
//     published before it), and once each heartbeat has come back, holds
//     the lease until t0 plus the lease length. An invalidation that
//     completed before t0 was delivered before the heartbeats; one that
//     completed after t0 is waited for by its sender for the lease length
//     and an eighth (for clock rates) at most, by which time a lease
//     renewed before the invalidation has run out. So once Invalidate
//     returns, every tier was told or holds no lease.
//   - The registry is one sorted set: a member per store that keeps a
//     tier (its id and its lease length: a sender waits out the lease of
//     each store that did not answer, whatever its own), scored by when
//     it stops counting, in Redis's own time (TIME,
//     read in the same transaction as the registration), twice the
//     lease length after its last heartbeat. Only Redis's clock is
//     compared with itself. A store renews its entry with every heartbeat
//     and removes it when closed; entries of stores that died are dropped
//     by the others' heartbeats once they stop counting.
const (
	tierRegistryKey   = "{flightcache:tiers}"
	tierChannelPrefix = tierRegistryKey + ":" // + store id: its heartbeats and the answers to its invalidations
)

// DefaultInvalidationLease is the lease length of [WithInvalidationLease].
const DefaultInvalidationLease = time.Second

// maxInvalidationLease bounds [WithInvalidationLease]: the longest an
// invalidation may wait for a process that does not answer.
const maxInvalidationLease = 30 * time.Second

// WithInvalidationLease sets how long a local tier may keep serving from
// memory after its store last heard from Redis (see [RedisStore]). It is
// also the longest an [Store.Invalidate] waits, past its own round trips,
// for a process that keeps a local tier and does not answer (a process
// that was killed counts for twice the lease after its last heartbeat).
// Shorter leases mean faster invalidations when a process stops
// answering, and more heartbeats: each store with a local tier sends one
// every quarter of the lease. The default is [DefaultInvalidationLease].
// It panics if d is under 100 ms or over 30 s.
func WithInvalidationLease(d time.Duration) RedisStoreOption {
	if d < 100*time.Millisecond || d > maxInvalidationLease {
		panic("flightcache: WithInvalidationLease: lease outside 100ms to 30s")
	}
	return redisStoreOptionFunc(func(s *RedisStore) { s.fleet.lease = d })
}

// fleetDelivery is the part of a RedisStore that makes invalidations
// reach every local tier before Invalidate returns.
type fleetDelivery struct {
	id    string    // this store's id in the registry and its channel's name
	base  time.Time // origin of the monotonic times below
	lease time.Duration
	until atomic.Int64 // nanoseconds since base until which this store's watches are current
	seq   atomic.Uint64

	mu       sync.Mutex
	waits    map[uint64]*ackWait        // this store's invalidations in flight
	rounds   map[uint64]*heartbeatRound // heartbeats sent, not all back
	round    uint64
	redisAt  time.Time // Redis's TIME at the last heartbeat, and
	redisMon int64     // when it was read, on the monotonic clock
	beating  bool      // the heartbeat runs: this store answers invalidations
	stop     chan struct{}
	stopped  chan struct{}
	current  chan struct{} // closed once the first lease is held

	answers chan answer                          // acknowledgements to send, by the answering goroutine
	noWait  atomic.Bool                          // a test turned the guarantee off
	onMsg   atomic.Pointer[func(channel string)] // a test's hook, run before each message is handled
}

// ackWait collects the answers to one invalidation.
type ackWait struct {
	answered map[string]bool
	want     map[string]time.Duration // store id -> lease; nil until the registry was read
	done     chan struct{}            // closed once every wanted store answered
}

type heartbeatRound struct {
	t0       int64 // when it was sent, ns since base
	expected int   // echoes to wait for; -1 until every publish returned
	got      int
}

// answer is an acknowledgement owed to the store to, for its
// invalidation number seq.
type answer struct {
	to  string
	seq uint64
}

func newFleetDelivery() fleetDelivery {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return fleetDelivery{
		id:      hex.EncodeToString(b[:]),
		base:    time.Now(),
		lease:   DefaultInvalidationLease,
		waits:   make(map[uint64]*ackWait),
		rounds:  make(map[uint64]*heartbeatRound),
		current: make(chan struct{}),
		answers: make(chan answer, 1024),
	}
}

// member is this store's member in the registry: its id and lease.
func (d *fleetDelivery) member() string {
	return d.id + "/" + strconv.FormatInt(d.lease.Milliseconds(), 10)
}

func (d *fleetDelivery) mono() int64 { return int64(time.Since(d.base)) }

// InvalidationsCurrent implements [InvalidationWatcher]: the store holds
// a lease (see [WithInvalidationLease]).
func (s *RedisStore) InvalidationsCurrent() bool {
	return s.fleet.mono() < s.fleet.until.Load() || s.fleet.noWait.Load()
}

func (s *RedisStore) invalidationsCurrentAt(now time.Time) (current, ok bool) {
	// Round(0) strips a monotonic reading: a time that changes under it
	// has one, and then Sub measures on the monotonic clock, as mono does.
	if now == now.Round(0) {
		return false, false
	}
	return int64(now.Sub(s.fleet.base)) < s.fleet.until.Load() || s.fleet.noWait.Load(), true
}

// invalidationPayload is the message an invalidation publishes: whom to
// answer, and for which of its invalidations.
func (d *fleetDelivery) invalidationPayload(seq uint64) string {
	return d.id + " " + strconv.FormatUint(seq, 10)
}

// expect registers the answers to invalidation seq before it is sent.
func (d *fleetDelivery) expect() (seq uint64, w *ackWait) {
	seq = d.seq.Add(1)
	w = &ackWait{answered: make(map[string]bool), done: make(chan struct{})}
	d.mu.Lock()
	d.waits[seq] = w
	d.mu.Unlock()
	return seq, w
}

func (d *fleetDelivery) forget(seq uint64) {
	d.mu.Lock()
	delete(d.waits, seq)
	d.mu.Unlock()
}

// answered records that store from has dropped what invalidation seq
// invalidated.
func (d *fleetDelivery) answered(seq uint64, from string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if w := d.waits[seq]; w != nil {
		w.answered[from] = true
		w.check()
	}
}

// check closes done once every wanted store answered; d.mu is held.
func (w *ackWait) check() {
	if w.want == nil {
		return
	}
	for id := range w.want {
		if !w.answered[id] {
			return
		}
	}
	select {
	case <-w.done:
	default:
		close(w.done)
	}
}

// awaitDelivery returns once every store in the registry of tiers has
// answered each of the invalidations waits, or the leases of those that
// did not have run out (sent is when the invalidations' replies came
// back). It fails only if the registry cannot be read.
func (s *RedisStore) awaitDelivery(ctx context.Context, sent int64, waits ...*ackWait) error {
	if s.fleet.noWait.Load() {
		return nil
	}
	// The invalidation is done; what is left is bounded by the leases, not
	// by what ctx had left for the invalidation itself.
	d := &s.fleet
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.lease)
	defer cancel()
	live, err := s.liveTiers(rctx)
	if err != nil {
		return err
	}
	d.mu.Lock()
	for _, w := range waits {
		w.want = live
		w.check()
	}
	d.mu.Unlock()
	for _, w := range waits {
		for done := false; !done; {
			// Not done: the wait for the longest silent lease ended; the
			// stores still silent are looked at again.
			done = d.waitAnswers(w, sent)
		}
	}
	return nil
}

// waitAnswers waits until w was answered by every store it wants, or
// until the longest lease among those that did not answer has run out
// since sent, and reports whether that is so; it returns false early when
// the wait must be computed again.
func (d *fleetDelivery) waitAnswers(w *ackWait, sent int64) bool {
	d.mu.Lock()
	var lease time.Duration
	for id, l := range w.want {
		if !w.answered[id] {
			lease = max(lease, l)
		}
	}
	d.mu.Unlock()
	// An eighth more, for clocks that run at different rates.
	wait := time.Duration(sent+int64(lease+lease/8)) - time.Duration(d.mono())
	if wait <= 0 {
		// The stores that did not answer hold no lease any more.
		return true
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-w.done:
		return true
	case <-t.C:
		return false
	}
}

// liveTiers reads the stores in the registry that still count, by
// Redis's clock.
func (s *RedisStore) liveTiers(ctx context.Context) (map[string]time.Duration, error) {
	var now *redis.TimeCmd
	var members *redis.ZSliceCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		now = p.Time(ctx)
		members = p.ZRangeWithScores(ctx, tierRegistryKey, 0, -1)
		return nil
	})
	if err != nil {
		return nil, err
	}
	nowMS := float64(now.Val().UnixMilli())
	live := make(map[string]time.Duration, len(members.Val()))
	for _, z := range members.Val() {
		member, _ := z.Member.(string)
		id, leaseMS, ok := strings.Cut(member, "/")
		ms, err := strconv.ParseInt(leaseMS, 10, 64)
		if !ok || err != nil || ms <= 0 {
			// Not ours: count it with the longest lease allowed.
			id, ms = member, maxInvalidationLease.Milliseconds()
		}
		if z.Score > nowMS {
			live[id] = time.Duration(min(ms, maxInvalidationLease.Milliseconds())) * time.Millisecond
		}
	}
	return live, nil
}

// startHeartbeat makes this store a member of the registry of tiers and
// renews its lease until Close, and waits for the first lease, at most
// until ctx ends or a lease length has passed.
func (s *RedisStore) startHeartbeat(ctx context.Context) {
	d := &s.fleet
	d.mu.Lock()
	if !d.beating {
		d.beating = true
		d.stop = make(chan struct{})
		d.stopped = make(chan struct{})
		go s.heartbeat(d.stop, d.stopped)
	}
	current := d.current
	d.mu.Unlock()
	t := time.NewTimer(d.lease)
	defer t.Stop()
	select {
	case <-current:
	case <-ctx.Done():
	case <-t.C:
	}
}

// stopHeartbeat ends the heartbeat and leaves the registry.
func (s *RedisStore) stopHeartbeat() {
	d := &s.fleet
	d.mu.Lock()
	stop, stopped := d.stop, d.stopped
	d.beating, d.stop = false, nil
	d.mu.Unlock()
	if stop == nil {
		return
	}
	close(stop)
	<-stopped
	ctx, cancel := context.WithTimeout(context.Background(), d.lease/2)
	defer cancel()
	_ = s.rdb.ZRem(ctx, tierRegistryKey, d.member()).Err()
	d.until.Store(0)
}

// heartbeat renews the lease every quarter of its length and sends the
// answers to other stores' invalidations, until stop is closed.
func (s *RedisStore) heartbeat(stop <-chan struct{}, stopped chan<- struct{}) {
	defer close(stopped)
	d := &s.fleet
	tick := time.NewTicker(d.lease / 4)
	defer tick.Stop()
	s.beat()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			s.beat()
		case a := <-d.answers:
			s.sendAnswers(a)
		}
	}
}

// sendAnswers publishes a and whatever other answers are queued, in one
// pipeline. A lost answer costs its invalidation a wait for the lease.
func (s *RedisStore) sendAnswers(a answer) {
	d := &s.fleet
	ctx, cancel := context.WithTimeout(context.Background(), d.lease/2)
	defer cancel()
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for {
			p.Publish(ctx, tierChannelPrefix+a.to, "a "+strconv.FormatUint(a.seq, 10)+" "+d.id)
			select {
			case a = <-d.answers:
			default:
				return nil
			}
		}
	})
}

// beat sends one heartbeat: the registration, with the heartbeat on the
// registry's node, in one transaction, then the heartbeat on every other
// master of a cluster. A failed beat leaves the lease to run out.
func (s *RedisStore) beat() {
	d := &s.fleet
	ctx, cancel := context.WithTimeout(context.Background(), d.lease/2)
	defer cancel()
	d.mu.Lock()
	d.round++
	round := d.round
	r := &heartbeatRound{t0: d.mono(), expected: -1}
	d.rounds[round] = r
	redisAt, redisMon := d.redisAt, d.redisMon
	d.mu.Unlock()
	fail := func() {
		d.mu.Lock()
		delete(d.rounds, round)
		d.mu.Unlock()
	}
	if redisAt.IsZero() {
		t, err := s.rdb.Time(ctx).Result()
		if err != nil {
			fail()
			return
		}
		redisAt, redisMon = t, d.mono()
	}
	nowMS := redisAt.Add(time.Duration(d.mono() - redisMon)).UnixMilli()
	msg := "e " + strconv.FormatUint(round, 10)
	var now *redis.TimeCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, tierRegistryKey, redis.Z{Score: float64(nowMS + 2*d.lease.Milliseconds()), Member: d.member()})
		p.ZRemRangeByScore(ctx, tierRegistryKey, "-inf", "("+strconv.FormatInt(nowMS-d.lease.Milliseconds(), 10))
		now = p.Time(ctx)
		p.Publish(ctx, tierChannelPrefix+d.id, msg)
		return nil
	})
	if err != nil {
		fail()
		return
	}
	sent := 1
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		var n atomic.Int64
		err = cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			if err := node.Publish(ctx, tierChannelPrefix+d.id, msg).Err(); err != nil {
				return err
			}
			n.Add(1)
			return nil
		})
		if err != nil {
			fail()
			return
		}
		sent += int(n.Load())
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.redisAt, d.redisMon = now.Val(), d.mono()
	if r, ok := d.rounds[round]; ok {
		r.expected = sent
		d.echoed(round, r)
	}
}

// suspend ends the lease: the subscription broke and is coming back.
// Heartbeats sent before now are forgotten.
func (d *fleetDelivery) suspend() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.until.Store(0)
	clear(d.rounds)
}

// echo records a heartbeat that came back through the subscription.
func (d *fleetDelivery) echo(round uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if r, ok := d.rounds[round]; ok {
		r.got++
		d.echoed(round, r)
	}
}

// echoed extends the lease once every heartbeat of round came back;
// d.mu is held.
func (d *fleetDelivery) echoed(round uint64, r *heartbeatRound) {
	if r.expected < 0 || r.got < r.expected {
		return
	}
	until := r.t0 + int64(d.lease)
	if until > d.until.Load() {
		d.until.Store(until)
	}
	for n := range d.rounds {
		if n <= round {
			delete(d.rounds, n)
		}
	}
	select {
	case <-d.current:
	default:
		close(d.current)
	}
}

// deliverOwn handles a message on this store's own channel: a heartbeat
// back, or another store's answer.
func (d *fleetDelivery) deliverOwn(payload string) {
	kind, rest, _ := strings.Cut(payload, " ")
	switch kind {
	case "e":
		if round, err := strconv.ParseUint(rest, 10, 64); err == nil {
			d.echo(round)
		}
	case "a":
		seqText, from, ok := strings.Cut(rest, " ")
		if seq, err := strconv.ParseUint(seqText, 10, 64); ok && err == nil {
			d.answered(seq, from)
		}
	}
}

// owe queues the answer to an invalidation this store's watches have
// just been told of, if the store keeps tiers (else nobody waits for it).
func (d *fleetDelivery) owe(payload string) {
	to, seqText, ok := strings.Cut(payload, " ")
	seq, err := strconv.ParseUint(seqText, 10, 64)
	if !ok || err != nil {
		return
	}
	if to == d.id {
		d.answered(seq, d.id)
		return
	}
	d.mu.Lock()
	beating := d.beating
	d.mu.Unlock()
	if !beating {
		return
	}
	select {
	case d.answers <- answer{to: to, seq: seq}:
	default:
		// Full: the sender waits out the lease instead.
	}
}

func init() {
	testhook.OnDeliver = func(store any, f func(channel string)) { store.(*RedisStore).fleet.onMsg.Store(&f) }
	testhook.NoDeliveryWait = func(store any) { store.(*RedisStore).fleet.noWait.Store(true) }
}
