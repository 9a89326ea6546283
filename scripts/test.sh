#!/usr/bin/env bash
# Runs every check and test of claude-lb. On a fresh Debian machine it first installs what the
# tests need and the machine lacks: redis-server (each test starts its own private instance on
# a unix socket; the tests never touch a Redis you run) and chromium (the dashboard's browser test).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if ((${#need[@]})); then
	sudo=""
	[ "$(id -u)" = 0 ] || sudo="sudo"
	echo "installing ${need[*]} from Debian's packages"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

unformatted=$(gofmt -l $(git ls-files '*.go') 2>/dev/null || true)
if [ -n "$unformatted" ]; then
	echo "gofmt: not formatted:" $unformatted >&2
	exit 1
fi
go vet ./...
go test -race -count=1 -timeout 9m ./...
# Short runs of the fuzz targets, so a regression in the parsers shows up here too.
go test -run='^$' -fuzz='^FuzzLoad$' -fuzztime=10s ./config
go test -run='^$' -fuzz='^FuzzExtract$' -fuzztime=10s ./routing
go test -run='^$' -fuzz='^FuzzSSERelay$' -fuzztime=10s ./gateway
