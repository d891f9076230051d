#!/usr/bin/env bash
# Runs the whole flightcache test suite: formatting, vet, go mod tidy, and
# go test -race in every module on its own (GOWORK=off, so each module is
# proven to build and test without the workspace), against a private
# redis-server and a private 3-master Redis Cluster that this script
# installs if needed, starts on loopback ports, and stops at the end; then
# the HTTP cache conformance suite, fuzz, benchmark and load smoke runs.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s (at %ss)\n' "$*" "$SECONDS"; }

. scripts/redis.sh

start_cluster 3

modules=$(go list -m -f '{{.Dir}}')

log "gofmt"
unformatted=$(gofmt -l $modules)
if [ -n "$unformatted" ]; then
	echo "gofmt would change:" >&2
	echo "$unformatted" >&2
	exit 1
fi

# Each module is vetted on its own, which covers every package the
# workspace has, and shows a module that builds only thanks to go.work.
log "go vet in each module on its own (GOWORK=off)"
for m in $modules; do
	(cd "$m" && GOWORK=off go vet ./...)
done

log "go mod tidy -diff in each module (GOWORK=off)"
untidy=""
for m in $modules; do
	if ! (cd "$m" && GOWORK=off go mod tidy -diff); then
		untidy="$untidy ${m#"$PWD"/}"
	fi
done
if [ -n "$untidy" ]; then
	echo "go mod tidy would change go.mod or go.sum in:$untidy" >&2
	exit 1
fi

# Each module's tests run without the workspace: a module that builds only
# thanks to go.work fails here, as it would for a user.
# Core, the longest, runs in the foreground; the other modules run in the
# background meanwhile, as one go test over the workspace would run them
# side by side. Their output is printed once they finish.
background=()
for m in $modules; do
	name=${m#"$PWD"/}
	[ "$name" = core ] && continue
	(cd "$m" && GOWORK=off go test -race -count=1 -timeout 8m ./... >"$workdir/test-$name.log" 2>&1) &
	background+=("$name:$!")
done
log "go test -race core (GOWORK=off)"
failed=""
if ! (cd core && GOWORK=off go test -race -count=1 -timeout 8m ./...); then
	failed=" core" # the others are still waited for, and shown
fi
for job in "${background[@]}"; do
	name=${job%%:*}
	log "go test -race $name (GOWORK=off, ran beside core)"
	if ! wait "${job##*:}"; then
		failed="$failed $name"
	fi
	cat "$workdir/test-$name.log"
done
if [ -n "$failed" ]; then
	echo "go test failed in:$failed" >&2
	exit 1
fi

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
	go test -run '^$' -fuzz "^$target$" -fuzztime 3s ./core/internal/entry
done
go test -run '^$' -fuzz '^FuzzKey$' -fuzztime 3s ./core

log "benchmark smoke"
go test -run '^$' -bench . -benchtime 1x ./core ./ginmw ./echomw ./nethttpmw ./bench/peer

log "hits through real HTTP smoke (bench/hithttp: every answer 200, 2 KiB, and a HIT when cached)"
go run ./bench/hithttp -redis "$FLIGHTCACHE_REDIS_ADDR" -rounds 1 -duration 500ms

log "load smoke (vegeta on examples/gin, without and with flightcache)"
go run ./bench/load -redis "$FLIGHTCACHE_REDIS_ADDR" -smoke

log "proxy comparison smoke (examples/proxy only: on its own store, on Redis, with the local tier)"
go run ./bench/proxies -redis "$FLIGHTCACHE_REDIS_ADDR" -only flightcache -smoke

log "all tests passed"
