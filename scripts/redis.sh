# Shared by scripts/test.sh and scripts/bench.sh: installs redis-server
# when missing and starts a private one on a free loopback port. Source it
# after defining log(); it sets $workdir, $redis_pid and
# $FLIGHTCACHE_REDIS_ADDR, defines start_cluster (a private Redis Cluster,
# which sets $cluster_pids, $cluster_ports and
# $FLIGHTCACHE_REDIS_CLUSTER_ADDRS), and installs an EXIT trap that stops
# only the servers it started, by PID.

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
	log "installing redis-server"
	sudo=""
	[ "$(id -u)" -ne 0 ] && sudo="sudo"
	$sudo apt-get update
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y redis-server
fi

workdir=$(mktemp -d)
redis_pid=""
cluster_pids=() # the cluster nodes this script started
cluster_ports=()
cleanup() {
	# Stop only the servers this script started, by their PIDs.
	for pid in "$redis_pid" "${cluster_pids[@]}"; do
		if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
			kill "$pid" 2>/dev/null || true
			wait "$pid" 2>/dev/null || true
		fi
	done
	rm -rf "$workdir"
}
trap cleanup EXIT INT TERM

# wait_own_server PORT PID waits up to 5 s for the server answering on
# PORT to be process PID. Another server may hold the port (our own then
# exits, failing to bind): answering PING is not enough, the server must
# report our PID as its process_id.
wait_own_server() {
	local port=$1 pid=$2
	for _ in $(seq 1 50); do
		kill -0 "$pid" 2>/dev/null || return 1
		if [ "$(redis-cli -p "$port" info server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p')" = "$pid" ]; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# stop_own_server PID stops a server this script started.
stop_own_server() {
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

# Start redis-server on the first free loopback port found.
for attempt in $(seq 1 20); do
	port=$((20000 + RANDOM % 20000))
	redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
		--dir "$workdir" --logfile "$workdir/redis.log" >/dev/null 2>&1 &
	redis_pid=$!
	if wait_own_server "$port" "$redis_pid"; then
		break
	fi
	stop_own_server "$redis_pid"
	redis_pid=""
done
if [ -z "$redis_pid" ]; then
	echo "could not start redis-server on a loopback port" >&2
	exit 1
fi
export FLIGHTCACHE_REDIS_ADDR="127.0.0.1:$port"
log "redis-server $(redis-server --version | awk '{print $3}') on $FLIGHTCACHE_REDIS_ADDR (pid $redis_pid)"

# start_cluster_node starts one cluster master on the first free loopback
# port P in 20000-29999 whose bus port, P+10000, is free too (redis-server
# exits if it cannot bind both), and appends it to $cluster_pids and
# $cluster_ports.
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
		if wait_own_server "$p" "$pid"; then
			cluster_ports+=("$p")
			return 0
		fi
		stop_own_server "$pid"
		unset 'cluster_pids[-1]'
	done
	return 1
}

# start_cluster starts a private Redis Cluster of N masters (default 3),
# no replicas, waits until every node reports cluster_state:ok and exports
# FLIGHTCACHE_REDIS_CLUSTER_ADDRS (host:port,host:port,...). It exits the
# script on failure; the EXIT trap stops the nodes it started.
start_cluster() {
	local n=${1:-3} p state addrs
	for _ in $(seq 1 "$n"); do
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
	addrs=$(printf '127.0.0.1:%s,' "${cluster_ports[@]}")
	export FLIGHTCACHE_REDIS_CLUSTER_ADDRS="${addrs%,}"
	log "redis cluster of $n masters on $FLIGHTCACHE_REDIS_CLUSTER_ADDRS (pids ${cluster_pids[*]})"
}
