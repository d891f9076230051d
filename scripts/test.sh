#!/usr/bin/env bash
# Runs the whole flightcache test suite: formatting, vet, every module built
# on its own (GOWORK=off), and go test -race over every module against a
# private redis-server and a private 3-master Redis Cluster that this script
# installs if needed, starts on loopback ports, and stops at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

. scripts/redis.sh

# start_cluster_node starts one cluster master on the first free loopback
# port P in 20000-29999 whose bus port, P+10000, is free too (redis-server
# exits if it cannot bind both). The node counts as started once the server
# answering on P reports our PID, not some other server's.
start_cluster_node() {
	local p pid
	for _ in $(seq 1 20); do
		p=$((20000 + RANDOM % 10000))
		redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
			--cluster-config-file "$workdir/nodes-$p.conf" --cluster-node-timeout 2000 \
			--save "" --appendonly no --dir "$workdir" \
			--logfile "$workdir/cluster-$p.log" >/dev/null 2>&1 &
		pid=$!
		cluster_pids+=("$pid")
		for _ in $(seq 1 50); do
			kill -0 "$pid" 2>/dev/null || break
			if [ "$(redis-cli -p "$p" info server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p')" = "$pid" ]; then
				cluster_ports+=("$p")
				return 0
			fi
			sleep 0.1
		done
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		unset 'cluster_pids[-1]'
	done
	return 1
}

# Start a Redis Cluster of 3 masters for the tests that run on Cluster.
for _ in 1 2 3; do
	if ! start_cluster_node; then
		echo "could not start a redis-server cluster node on a loopback port" >&2
		exit 1
	fi
done
if ! timeout 60 redis-cli --cluster create $(printf '127.0.0.1:%s ' "${cluster_ports[@]}") \
	--cluster-replicas 0 --cluster-yes >"$workdir/cluster-create.log" 2>&1; then
	cat "$workdir/cluster-create.log" >&2
	echo "redis-cli --cluster create failed" >&2
	exit 1
fi
for p in "${cluster_ports[@]}"; do
	state=""
	for _ in $(seq 1 100); do
		state=$(redis-cli -p "$p" cluster info 2>/dev/null | tr -d '\r' | sed -n 's/^cluster_state://p')
		[ "$state" = ok ] && break
		sleep 0.1
	done
	if [ "$state" != ok ]; then
		echo "cluster node 127.0.0.1:$p is not ready (cluster_state:$state) after 10s" >&2
		exit 1
	fi
done
FLIGHTCACHE_REDIS_CLUSTER_ADDRS=$(printf '127.0.0.1:%s,' "${cluster_ports[@]}")
export FLIGHTCACHE_REDIS_CLUSTER_ADDRS="${FLIGHTCACHE_REDIS_CLUSTER_ADDRS%,}"
log "redis cluster of 3 masters on $FLIGHTCACHE_REDIS_CLUSTER_ADDRS (pids ${cluster_pids[*]})"

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

log "HTTP cache conformance (http-cache-tests 0.4.5 through examples/proxy on Redis)"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1; then
	log "installing nodejs, npm and curl"
	sudo=""
	[ "$(id -u)" -ne 0 ] && sudo="sudo"
	$sudo apt-get update
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y nodejs npm curl
fi
# The recorded number: fewer required passes than this fails the build.
FLIGHTCACHE_CONFORMANCE_MIN_REQUIRED=155 ./scripts/conformance.sh

log "fuzz smoke"
for target in FuzzDecodeEntry FuzzDecodeResponse FuzzDecodeVariants; do
	go test -run '^$' -fuzz "^$target$" -fuzztime 10s ./core/internal/entry
done

log "benchmark smoke"
go test -run '^$' -bench . -benchtime 1x ./core ./ginmw ./echomw ./nethttpmw ./examples/bench/peer

log "load smoke (vegeta on examples/gin, without and with flightcache)"
go run ./examples/bench/load -redis "$FLIGHTCACHE_REDIS_ADDR" -smoke

log "all tests passed"
