# Shared by scripts/test.sh and scripts/bench.sh: installs redis-server
# when missing and starts a private one on a free loopback port. Source it
# after defining log(); it sets $workdir, $redis_pid, $cluster_pids and
# $FLIGHTCACHE_REDIS_ADDR, and installs an EXIT trap that stops only the
# servers it started, by PID.

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

