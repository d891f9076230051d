#!/usr/bin/env bash
# Runs the HTTP caching test suite http-cache-tests (Mark Nottingham's,
# https://cache-tests.fyi) against examples/proxy, flightcache's caching
# reverse proxy, and tallies the results by kind: required (conformance),
# optimal (a missed chance to cache) and check (informational).
#
# The suite's origin server and the proxy run on free loopback ports. The
# proxy caches in its embedded memory store, or in the Redis at
# FLIGHTCACHE_REDIS_ADDR when that is set. The suite is installed once into
# ${XDG_CACHE_HOME:-$HOME/.cache}/flightcache and reused.
#
# Environment:
#   FLIGHTCACHE_REDIS_ADDR                Redis host:port for the proxy (default: none)
#   FLIGHTCACHE_CONFORMANCE_MIN_REQUIRED  fail (exit 1) below this many required passes
#   FLIGHTCACHE_CONFORMANCE_OUT           directory to copy the JSON results and server logs into
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.4.5
pkgdir="${XDG_CACHE_HOME:-$HOME/.cache}/flightcache/http-cache-tests-$version"
suite="$pkgdir/node_modules/http-cache-tests"

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'conformance: %s\n' "$*" >&2; exit 1; }

for tool in go node npm curl timeout; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool is needed but not installed"
done
min_required="${FLIGHTCACHE_CONFORMANCE_MIN_REQUIRED:-}"
case "$min_required" in
"" | *[!0-9]*) [ -z "$min_required" ] || die "FLIGHTCACHE_CONFORMANCE_MIN_REQUIRED=$min_required is not a number" ;;
esac

installed_version() {
	node -e 'console.log(require(process.argv[1]).version)' "$suite/package.json" 2>/dev/null || true
}
if [ "$(installed_version)" != "$version" ]; then
	log "installing http-cache-tests@$version into $pkgdir"
	mkdir -p "$pkgdir"
	timeout 300 npm install --prefix "$pkgdir" --no-save --no-audit --no-fund \
		"http-cache-tests@$version" >&2 || die "npm install http-cache-tests@$version failed"
	[ "$(installed_version)" = "$version" ] || die "http-cache-tests $version not found in $pkgdir"
fi

workdir=$(mktemp -d)
origin_pid=""
proxy_pid=""
client_pid=""
origin_client_pid=""
cleanup() {
	# Stop only the processes this script started, by their PIDs.
	for pid in "$client_pid" "$origin_client_pid" "$proxy_pid" "$origin_pid"; do
		if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
			kill "$pid" 2>/dev/null || true
			wait "$pid" 2>/dev/null || true
		fi
	done
	rm -rf "$workdir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The suite's server listens on every interface; this preload pins every
# server in its process to loopback.
cat >"$workdir/loopback.cjs" <<'EOF'
const net = require('net')
const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (...args) {
  if (args.length === 1 && typeof args[0] !== 'object') args.push('127.0.0.1')
  return listen.apply(this, args)
}
EOF

# free_port prints a loopback port that is free right now, picked below the
# kernel's ephemeral range (32768 and up) so that outgoing connections of
# other processes are unlikely to take it before we bind it.
free_port() {
	local p
	for _ in $(seq 1 50); do
		p=$((20000 + RANDOM % 12000))
		if node -e 'require("net").createServer().once("error", () => process.exit(1))
			.listen(+process.argv[1], "127.0.0.1", function () { this.close() })' "$p" 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# The package's own scripts ("npm run server", "npm run cli") read their
# settings from npm_config_* variables and background the server without
# keeping its PID, so run node directly with the same variables.
origin_port=""
for _ in $(seq 1 10); do
	port=$(free_port) || break
	(cd "$suite" && exec env npm_config_protocol=http npm_config_port="$port" \
		npm_config_pidfile="$workdir/origin.pid" \
		node --require "$workdir/loopback.cjs" server/server.mjs) >"$workdir/origin.log" 2>&1 &
	origin_pid=$!
	for _ in $(seq 1 100); do
		if grep -q "^Listening on http://127.0.0.1:$port/" "$workdir/origin.log"; then
			origin_port=$port
			break 2
		fi
		kill -0 "$origin_pid" 2>/dev/null || break
		sleep 0.1
	done
	kill "$origin_pid" 2>/dev/null || true
	wait "$origin_pid" 2>/dev/null || true
	origin_pid=""
done
[ -n "$origin_port" ] || { cat "$workdir/origin.log" >&2; die "could not start the test server on a loopback port"; }
origin="http://127.0.0.1:$origin_port"
log "http-cache-tests $version server on $origin (pid $origin_pid)"

log "building examples/proxy"
go build -o "$workdir/proxy" ./examples/proxy

# A fresh namespace per run: a shared Redis may hold an earlier run's entries.
proxy_args=(-upstream "$origin" -namespace "conformance-$$-$RANDOM")
if [ -n "${FLIGHTCACHE_REDIS_ADDR:-}" ]; then
	proxy_args+=(-redis "$FLIGHTCACHE_REDIS_ADDR")
fi
proxy_port=""
for _ in $(seq 1 10); do
	port=$(free_port) || break
	# REDIS_URL is dropped so that only FLIGHTCACHE_REDIS_ADDR selects Redis.
	env -u REDIS_URL "$workdir/proxy" -listen "127.0.0.1:$port" "${proxy_args[@]}" \
		>"$workdir/proxy.log" 2>&1 &
	proxy_pid=$!
	for _ in $(seq 1 100); do
		kill -0 "$proxy_pid" 2>/dev/null || break
		# Ready once a request through it reaches the origin and carries
		# the proxy's cache header (so it is our proxy on that port).
		if curl -s -o /dev/null -D - --max-time 2 "http://127.0.0.1:$port/state/ready-check" 2>/dev/null |
			grep -qi '^x-cache:'; then
			proxy_port=$port
			break 2
		fi
		sleep 0.1
	done
	kill "$proxy_pid" 2>/dev/null || true
	wait "$proxy_pid" 2>/dev/null || true
	proxy_pid=""
done
[ -n "$proxy_port" ] || { cat "$workdir/proxy.log" >&2; die "could not start examples/proxy on a loopback port"; }
proxy="http://127.0.0.1:$proxy_port"
log "examples/proxy on $proxy (pid $proxy_pid): $(head -n 1 "$workdir/proxy.log")"

# start_suite BASE OUT starts the test client against BASE, writing the
# JSON results to OUT, in the background so that a signal to this script
# is handled at once rather than after the client ends.
start_suite() {
	(cd "$suite" && exec timeout 600 env npm_config_base="$1" npm_package_config_id="" \
		node --no-warnings cli.mjs) >"$2" 2>"$2.err" &
}

# finish_suite BASE OUT PID waits for the client started against BASE.
finish_suite() {
	local rc=0
	wait "$3" || rc=$?
	[ "$rc" -eq 0 ] || { cat "$2.err" >&2; die "the test client failed against $1 (exit $rc)"; }
	node -e 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))' "$2" 2>/dev/null ||
		{ cat "$2.err" >&2; die "the test client printed no JSON results against $1"; }
}

# Both runs wait on the suite's own pauses far more than they compute, and
# each test asks for URLs of its own, so they run side by side.
log "running the suite against the origin alone and against the proxy"
start_suite "$origin" "$workdir/origin.json"
origin_client_pid=$!
start_suite "$proxy" "$workdir/proxy.json"
client_pid=$!
finish_suite "$proxy" "$workdir/proxy.json" "$client_pid"
client_pid=""
finish_suite "$origin" "$workdir/origin.json" "$origin_client_pid"
origin_client_pid=""
if [ -n "${FLIGHTCACHE_CONFORMANCE_OUT:-}" ]; then
	mkdir -p "$FLIGHTCACHE_CONFORMANCE_OUT"
	cp "$workdir/origin.json" "$workdir/proxy.json" "$workdir/origin.log" "$workdir/proxy.log" \
		"$FLIGHTCACHE_CONFORMANCE_OUT/"
fi

# The tally reads each test's kind from the suite's own definitions (no kind
# means required). A test passes when its result is true: that is the count
# the suite's JSON gives. cache-tests.fyi is stricter and also fails a test
# when a test it depends_on fails; that count is printed second.
cat >"$workdir/tally.mjs" <<'EOF'
import fs from 'fs'
import { pathToFileURL } from 'url'

const [suiteDir, originFile, proxyFile, requiredFile] = process.argv.slice(2)
const load = async p => (await import(pathToFileURL(`${suiteDir}/${p}`).href)).default
const suites = [...await load('tests/index.mjs'), await load('tests/surrogate-control.mjs')]
const tests = new Map()
for (const s of suites) for (const t of s.tests) if (t.browser_only !== true) tests.set(t.id, t)

function judge (results, honourDeps) {
  const verdict = new Map()
  const passes = id => {
    if (!verdict.has(id)) {
      verdict.set(id, false) // guards against dependency cycles
      const deps = honourDeps ? tests.get(id).depends_on || [] : []
      verdict.set(id, results[id] === true && deps.every(passes))
    }
    return verdict.get(id)
  }
  const tally = { required: [0, 0], optimal: [0, 0], check: [0, 0] }
  const failed = []
  for (const [id, t] of tests) {
    const kind = t.kind || 'required'
    tally[kind][1]++
    if (passes(id)) tally[kind][0]++
    else if (kind === 'required') failed.push(id)
  }
  const line = Object.entries(tally).map(([k, [n, of]]) => `${k}: ${n}/${of}`).join('  ')
  return { tally, line, failed, passes }
}

const originResults = JSON.parse(fs.readFileSync(originFile, 'utf8'))
const proxyResults = JSON.parse(fs.readFileSync(proxyFile, 'utf8'))
const origin = judge(originResults, false)
const proxy = judge(proxyResults, false)
console.log(`origin alone: ${origin.line}`)
console.log(`proxy:        ${proxy.line}`)
console.log('with failed dependencies counted as failures (as cache-tests.fyi shows them):')
console.log(`origin alone: ${judge(originResults, true).line}`)
console.log(`proxy:        ${judge(proxyResults, true).line}`)
console.log(`\nfailed required tests through the proxy (${proxy.failed.length}; * = the origin alone passes it):`)
for (const id of proxy.failed) {
  const r = proxyResults[id]
  const msg = r === undefined ? 'not run' : `${r[0]}: ${r[1]}`
  console.log(`  ${origin.passes(id) ? '*' : ' '} ${id}  ${msg}`)
}
fs.writeFileSync(requiredFile, String(proxy.tally.required[0]))
EOF
echo
node "$workdir/tally.mjs" "$suite" "$workdir/origin.json" "$workdir/proxy.json" "$workdir/required"
required=$(cat "$workdir/required")

if [ -n "$min_required" ] && [ "$required" -lt "$min_required" ]; then
	die "$required required tests pass through the proxy, fewer than FLIGHTCACHE_CONFORMANCE_MIN_REQUIRED=$min_required"
fi
