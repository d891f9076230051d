#!/usr/bin/env bash
# Runs the whole flightcache test suite: formatting, vet, every module built
# on its own (GOWORK=off), and go test -race over every module against a
# private redis-server that this script installs if needed, starts on a
# loopback port, and stops at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
	log "installing redis-server"
	sudo=""
	[ "$(id -u)" -ne 0 ] && sudo="sudo"
	$sudo apt-get update
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y redis-server
fi

workdir=$(mktemp -d)
redis_pid=""
cleanup() {
	# Stop only the server this script started, by its PID.
	if [ -n "$redis_pid" ] && kill -0 "$redis_pid" 2>/dev/null; then
		kill "$redis_pid" 2>/dev/null || true
		wait "$redis_pid" 2>/dev/null || true
	fi
	rm -rf "$workdir"
}
trap cleanup EXIT INT TERM

# Start redis-server on the first free loopback port found.
for attempt in $(seq 1 20); do
	port=$((20000 + RANDOM % 20000))
	redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
		--dir "$workdir" --logfile "$workdir/redis.log" >/dev/null 2>&1 &
	redis_pid=$!
	for _ in $(seq 1 50); do
		if redis-cli -p "$port" ping >/dev/null 2>&1; then break 2; fi
		kill -0 "$redis_pid" 2>/dev/null || break
		sleep 0.1
	done
	kill "$redis_pid" 2>/dev/null || true
	wait "$redis_pid" 2>/dev/null || true
	redis_pid=""
done
if [ -z "$redis_pid" ]; then
	echo "could not start redis-server on a loopback port" >&2
	exit 1
fi
export FLIGHTCACHE_REDIS_ADDR="127.0.0.1:$port"
log "redis-server $(redis-server --version | awk '{print $3}') on $FLIGHTCACHE_REDIS_ADDR (pid $redis_pid)"

modules=$(go list -m -f '{{.Dir}}')

log "gofmt"
unformatted=$(gofmt -l $modules)
if [ -n "$unformatted" ]; then
	echo "gofmt would change:" >&2
	echo "$unformatted" >&2
	exit 1
fi

log "go vet (workspace)"
go vet $(for m in $modules; do echo "$m/..."; done)

log "each module on its own (GOWORK=off)"
for m in $modules; do
	(cd "$m" && GOWORK=off go vet ./...)
done

log "go test -race"
go test -race -count=1 -timeout 8m $(for m in $modules; do echo "$m/..."; done)

log "fuzz smoke"
go test -run '^$' -fuzz '^FuzzDecodeEntry$' -fuzztime 10s ./core/internal/entry

log "benchmark smoke"
go test -run '^$' -bench . -benchtime 1x ./core

log "all tests passed"
