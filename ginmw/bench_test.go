package ginmw_test

import (
	"testing"

	"github.com/flightcache/flightcache/core/cachetest"
	"github.com/flightcache/flightcache/core/repotest"
)

// The hit benchmarks and the round-trip test of core/repotest, run
// through gin: see BENCHMARKS.md for how to run and read them.

var driver = cachetest.Driver{New: newServer, Pattern: func(path string) string { return path }}

func BenchmarkHit(b *testing.B) { repotest.BenchmarkHit(b, driver, repotest.RedisAddr(b)) }

func BenchmarkHitParallel(b *testing.B) {
	repotest.BenchmarkHitParallel(b, driver, repotest.RedisAddr(b))
}

func BenchmarkHitBodySize(b *testing.B) {
	repotest.BenchmarkHitBodySize(b, driver, repotest.RedisAddr(b))
}

func TestHitRoundTrips(t *testing.T) { repotest.TestHitRoundTrips(t, driver, repotest.RedisAddr(t)) }
