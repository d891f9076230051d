// Package fleet holds the fleet load tests: they build the net/http example
// (examples/nethttp), run it as several OS processes on one redis-server,
// and check under load that every key is rendered once fleet-wide and that
// every request for it gets that one body. The package has no API; its
// tests need FLIGHTCACHE_REDIS_ADDR, as scripts/test.sh sets it.
package fleet
