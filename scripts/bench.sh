#!/usr/bin/env bash
# Runs every flightcache benchmark from one command, against a private
# redis-server it starts on loopback (installing it if needed) and stops at
# the end, and writes the raw results, benchstat summaries and charts into
# docs/bench/ (or $FLIGHTCACHE_BENCH_OUT), and last the scorecard of the
# performance targets (scorecard.md, scorecard.svg). BENCHMARKS.md is
# written from them.
#
# Environment:
#   FLIGHTCACHE_BENCH_OUT    output directory (default docs/bench)
#   FLIGHTCACHE_BENCH_COUNT  repetitions of each go benchmark (default 6, what benchstat needs)
#   FLIGHTCACHE_BENCH_TIME   -benchtime of the hit benchmarks (default 1s)
#   FLIGHTCACHE_BENCH_EXPIRY length of each expiry-mode run (default 60s)
#
# It takes about 20 minutes on 2 cores. Run it on an otherwise idle machine:
# every figure is compared with a baseline from the same run, but noise
# from other work still widens the intervals.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

. scripts/redis.sh

out=${FLIGHTCACHE_BENCH_OUT:-docs/bench}
count=${FLIGHTCACHE_BENCH_COUNT:-6}
benchtime=${FLIGHTCACHE_BENCH_TIME:-1s}
mkdir -p "$out"
benchstat() { go run golang.org/x/perf/cmd/benchstat "$@"; }

log "machine"
{
	echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
	echo "os: $(uname -srm)"
	echo "cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -1) x $(nproc)"
	echo "go: $(go version | awk '{print $3}')"
	echo "redis: $(redis-server --version | awk '{print $3}')"
	echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"
} | tee "$out/machine.txt"

log "hit path through each adapter: bare handler, floor (raw GET + write), cached, local tier"
go test -run '^$' -bench '^Benchmark(Hit|HitParallel|HitBodySize)$' -benchmem \
	-benchtime "$benchtime" -count "$count" ./ginmw ./echomw ./nethttpmw | tee "$out/hit.txt"

log "engine hits: raw GET, Do hit, local-tier hit"
go test -run '^$' -bench '^BenchmarkLocalTierHit$' -benchmem \
	-benchtime "$benchtime" -count "$count" ./core | tee "$out/engine.txt"

log "peer: chenyahui/gin-cache v1.10.0 against flightcache on one gin route"
go test -run '^$' -bench '^BenchmarkPeerHit' -benchmem \
	-benchtime "$benchtime" -count "$count" ./bench/peer | tee "$out/peer.txt"

log "benchstat"
{
	echo "## a hit from Redis against its floor (one raw GET of the stored bytes, written out), per adapter"
	benchstat -filter '.name:(Hit OR HitParallel)' -col '/path@(floor cached)' "$out/hit.txt"
	echo "## a local-tier hit against the bare handler (no cache at all)"
	benchstat -filter '.name:(Hit OR HitParallel)' -col '/path@(bare cached-l1)' "$out/hit.txt"
	echo "## a hit from Redis by body size: allocations must not grow with the body"
	benchstat -filter '.name:HitBodySize' -col '/size@(128B 2KiB 64KiB)' "$out/hit.txt"
	echo "## the engine alone (Cache.Do): raw GET, hit from Redis, local-tier hit"
	benchstat -col '/path@(raw-get do-hit do-l1-hit)' "$out/engine.txt"
	echo "## the peer: one gin route, a bare GET, flightcache and gin-cache v1.10.0"
	benchstat -col '/lib@(redis-get flightcache gin-cache)' "$out/peer.txt"
} | tee "$out/benchstat.txt"

log "hits through real HTTP: one gin server, 64 keep-alive clients, 2 KiB; bare, floor, cached (Redis), cached-l1 (local tier)"
go run ./bench/hithttp -redis "$FLIGHTCACHE_REDIS_ADDR" -rounds 5 -duration 5s -out "$out/hithttp.json" | tee "$out/hithttp.txt"

log "takeover after a filler's SIGKILL: the waiters' fetch starts once the lease (core.DefaultLockExpiry) lapses"
go test -run '^TestFillerKilledMidFetch$' -v -count 3 ./core | tee "$out/takeover.txt"

log "stampede in one process: pub/sub wake-up against polling"
go test -run '^$' -bench '^BenchmarkStampede$' -benchtime 30x -count 3 ./core | tee "$out/stampede-engine.txt"

log "stampede at scale: P processes x N clients over HTTP, every strategy and the peer"
go build -o "$workdir/peer" ./bench/peer
# 10 rounds per cell: one slow round on a busy 2-core machine moves a p99
# pooled over 3 rounds by tens of milliseconds.
go run ./bench/stampede -redis "$FLIGHTCACHE_REDIS_ADDR" -rounds 10 \
	-peer-binary "$workdir/peer" -peer-name gin-cache -out "$out/stampede.json" | tee "$out/stampede.txt"

log "hot keys expiring under steady load: 4 processes, 100 keys, TTL 2 s, origin 200 ms, 60 s per fleet; default vs early refresh"
go run ./bench/stampede -expiry -redis "$FLIGHTCACHE_REDIS_ADDR" -processes 4 -keys 100 -ttl 2s \
	-duration "${FLIGHTCACHE_BENCH_EXPIRY:-60s}" -out "$out/expiry.json" | tee "$out/expiry.txt"

log "many keys: vegeta against the gin example, without and with flightcache"
go run ./bench/load -redis "$FLIGHTCACHE_REDIS_ADDR" -out "$out/load.json" | tee "$out/load.txt"

log "the caching proxy beside nginx and Varnish: hits at 2 KiB and 64 KiB, a cold herd over 3 instances, memory"
if ! command -v nginx >/dev/null 2>&1 || ! command -v varnishd >/dev/null 2>&1; then
	log "installing nginx and varnish"
	sudo=""
	[ "$(id -u)" -ne 0 ] && sudo="sudo"
	$sudo apt-get update
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y nginx-light varnish
fi
# The programs the packages start as services are not used: the
# comparison starts its own instances, on free loopback ports, with
# configuration files in a temporary directory, and stops them by PID.
go run ./bench/proxies -redis "$FLIGHTCACHE_REDIS_ADDR" -out "$out/proxies.json" 2> >(tee "$out/proxies.txt" >&2) | tee "$out/proxies.md"

log "charts"
cat "$out/hit.txt" "$out/peer.txt" >"$workdir/all-bench.txt"
go run ./bench/chart -stampede "$out/stampede.json" -bench "$workdir/all-bench.txt" -out "$out" | tee "$out/hit-table.md"

log "scorecard: every target of issue 13 beside its baseline from this run"
go run ./bench/scorecard -in "$out" -out "$out"
cat "$out/scorecard.md"

log "done: results in $out"
