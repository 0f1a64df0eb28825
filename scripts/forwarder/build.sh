#!/usr/bin/env bash
# Build loki-forward (scripts/forwarder/main.go), the in-container egress forwarder,
# as a static binary at .tmp/loki-forward (or the path given as $1). Idempotent:
# nothing is rebuilt when the binary is newer than its source. Installs golang-go
# with apt-get when `go` is missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SRC="$ROOT/scripts/forwarder/main.go"
OUT=${1:-"$ROOT/.tmp/loki-forward"}

fail() {
  echo "forwarder build: $*" >&2
  exit 1
}

if [ -x "$OUT" ] && [ "$OUT" -nt "$SRC" ] && [ "$OUT" -nt "${BASH_SOURCE[0]}" ]; then
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || fail "go not found and apt-get is not available; install Go >= 1.19"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q golang-go >/dev/null || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q golang-go >/dev/null; } ||
    fail "apt-get install golang-go failed"
fi

mkdir -p "$(dirname "$OUT")"
# A build cache of our own when there is no home to keep one in.
if [ -z "${GOCACHE:-}" ] && [ -z "${HOME:-}" ]; then
  export GOCACHE="$ROOT/.tmp/go-build"
fi
TMP="$OUT.tmp.$$"
trap 'rm -f "$TMP"' EXIT
(cd "$ROOT" && CGO_ENABLED=0 GO111MODULE=off GOFLAGS= go build -trimpath -ldflags='-s -w' -o "$TMP" scripts/forwarder/main.go) ||
  fail "go build failed"
chmod 0755 "$TMP"
mv -f "$TMP" "$OUT"
