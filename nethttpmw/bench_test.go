package nethttpmw_test

import (
	"testing"

	"github.com/flightcache/flightcache/core/cachetest"
)

// The hit benchmarks and the round-trip test of core/cachetest, run
// through net/http's ServeMux: see BENCHMARKS.md for how to run and read them.

var driver = cachetest.Driver{New: newServer, Pattern: pattern}

func BenchmarkHit(b *testing.B) { cachetest.BenchmarkHit(b, driver, cachetest.RedisAddr(b)) }

func BenchmarkHitParallel(b *testing.B) {
	cachetest.BenchmarkHitParallel(b, driver, cachetest.RedisAddr(b))
}

func BenchmarkHitBodySize(b *testing.B) {
	cachetest.BenchmarkHitBodySize(b, driver, cachetest.RedisAddr(b))
}

func TestHitRoundTrips(t *testing.T) { cachetest.TestHitRoundTrips(t, driver, cachetest.RedisAddr(t)) }
