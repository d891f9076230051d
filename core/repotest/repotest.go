// Package repotest holds helpers for this repository's own tests and
// benchmarks: the address of the redis-server the test command started
// ([RedisAddr]), a go-redis hook counting the commands a client sends
// ([CommandLog]), and the hit benchmarks and round-trip test every adapter
// runs ([BenchmarkHit], [TestHitRoundTrips]). It is public only so that the
// repository's modules can share it; it is not covered by any compatibility
// promise and may change or disappear in any release. Stores and adapters
// outside this repository want the suites of package cachetest instead.
package repotest

import (
	"context"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
)

// CommandLog is a go-redis hook (redis.Hook) recording the names of the
// commands a client sends, pipelined or not, for tests that count round
// trips. It is safe for concurrent use; the zero value is ready.
type CommandLog struct {
	mu   sync.Mutex
	cmds []string
}

func (l *CommandLog) record(cmds ...redis.Cmder) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, cmd := range cmds {
		l.cmds = append(l.cmds, cmd.Name())
	}
}

// Reset forgets the commands recorded so far.
func (l *CommandLog) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cmds = nil
}

// Names returns the commands recorded since the last Reset, lower case,
// in the order sent.
func (l *CommandLog) Names() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.cmds)
}

// Count returns how many of the recorded commands are named name, or
// how many there are in all when name is "".
func (l *CommandLog) Count(name string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if name == "" {
		return len(l.cmds)
	}
	n := 0
	for _, c := range l.cmds {
		if c == name {
			n++
		}
	}
	return n
}

func (l *CommandLog) DialHook(next redis.DialHook) redis.DialHook { return next }

func (l *CommandLog) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		l.record(cmd)
		return next(ctx, cmd)
	}
}

func (l *CommandLog) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		l.record(cmds...)
		return next(ctx, cmds)
	}
}

// RedisAddr returns the address of the redis-server the test command
// started (FLIGHTCACHE_REDIS_ADDR). Without one it fails tb: the README's
// test command always starts one, and only go test -short may skip tests
// and benchmarks that need real Redis.
func RedisAddr(tb testing.TB) string {
	tb.Helper()
	addr := os.Getenv("FLIGHTCACHE_REDIS_ADDR")
	if addr == "" {
		if testing.Short() {
			tb.Skip("FLIGHTCACHE_REDIS_ADDR not set; skipped in -short mode")
		}
		tb.Fatal("FLIGHTCACHE_REDIS_ADDR is not set: run ./scripts/test.sh or ./scripts/bench.sh, which start redis-server, or use go test -short")
	}
	return addr
}
