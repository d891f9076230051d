package core

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// pipelineAbove is how many reads must already be waiting for Redis before
// another one joins the shared pipeline. Below it, a read on a connection
// of its own is cheaper: handing a command to the pipeliner's goroutine
// and back costs more than the round trip saves when there is nothing to
// batch it with (BenchmarkHitParallel, 2 readers: 1.6× slower through the
// pipeliner). Above it, batching wins (bench/hithttp, 64 clients: Redis
// CPU per hit 9.6 µs → 3.4 µs).
const pipelineAbove = 4

// pipelineQueueLimit bounds the commands the pipeliner holds when Redis
// stops answering: a read past it fails at once (and the cache serves the
// request uncached) instead of queueing behind a dead connection.
const pipelineQueueLimit = 8192

// pipelinedReads sends GETs of stored entries through go-redis's automatic
// pipelining when many are in flight, and on the client otherwise.
//
// go-redis runs a pipelined command on the pipeliner's own context, so a
// caller's deadline would not stop it; get therefore submits on the
// deferred face and waits with the caller's context, which abandons the
// wait (not the command) at the deadline.
type pipelinedReads struct {
	rdb      redis.UniversalClient
	off      bool
	inFlight atomic.Int64
	// pipelined counts the reads that took the shared pipeline (tests).
	pipelined atomic.Int64

	mu     sync.Mutex // guards ap and failed
	ap     *redis.AutoPipeliner
	failed bool // the client gave no pipeliner: read on it alone
}

func (p *pipelinedReads) get(ctx context.Context, key string) ([]byte, error) {
	n := p.inFlight.Add(1)
	defer p.inFlight.Add(-1)
	if n > pipelineAbove && !p.off {
		if ap := p.pipeliner(); ap != nil {
			p.pipelined.Add(1)
			cmd := redis.NewStringCmd(ctx, "get", key)
			err := ap.Submit(ctx, cmd).WaitContext(ctx)
			if errors.Is(err, redis.ErrClosed) {
				// The pipeliner was closed under us (by whoever shares
				// the client's instance): take a fresh one next time.
				p.drop(ap)
			}
			if err != nil {
				return nil, err
			}
			return cmd.Bytes()
		}
	}
	return p.rdb.Get(ctx, key).Bytes()
}

// pipeliner returns the client's deferred autopipeliner, or nil when the
// client cannot give one (closed, or a configuration the client already
// holds that go-redis rejects). The instance is the client's, shared with
// any other user of it; it stops when the client is closed.
func (p *pipelinedReads) pipeliner() *redis.AutoPipeliner {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ap == nil && !p.failed {
		opts := redis.DefaultAutoPipelineOptions()
		opts.MaxQueuedCommands = pipelineQueueLimit
		ap, err := p.rdb.AsyncAutoPipelineWithOptions(opts)
		if err != nil {
			p.failed = true
			return nil
		}
		p.ap = ap
	}
	return p.ap
}

func (p *pipelinedReads) drop(ap *redis.AutoPipeliner) {
	p.mu.Lock()
	if p.ap == ap {
		p.ap = nil
	}
	p.mu.Unlock()
}
