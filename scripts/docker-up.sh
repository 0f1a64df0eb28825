#!/usr/bin/env bash
# Make sure a Docker engine is installed and answering on /var/run/docker.sock.
# Idempotent: installs docker.io + busybox-static only when missing, starts dockerd
# only when `docker info` fails. The engine is started without a bridge and without
# iptables: sandbox containers use NetworkMode "none" and need neither.
set -euo pipefail

LOG=/tmp/loki-dockerd.log
WAIT_SECONDS=60

fail() {
  echo "docker-up: $*" >&2
  exit 1
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    fail "need root to run: $*"
  fi
}

if ! command -v docker >/dev/null 2>&1 || ! command -v dockerd >/dev/null 2>&1 || [ ! -x /bin/busybox ]; then
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq >/dev/null || fail "apt-get update failed"
  as_root apt-get install -y -qq docker.io busybox-static >/dev/null || fail "apt-get install docker.io busybox-static failed"
fi

if docker info >/dev/null 2>&1; then
  exit 0
fi

# A dockerd that was killed (for example when the previous session ended) leaves
# its pid files behind, and a new dockerd refuses to start while they exist.
for pidfile in /var/run/docker.pid /var/run/docker/containerd/containerd.pid; do
  if [ -f "$pidfile" ]; then
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null || ! grep -qE 'dockerd|containerd' "/proc/$pid/comm" 2>/dev/null; then
      as_root rm -f "$pidfile"
    fi
  fi
done

if [ "$(id -u)" -eq 0 ]; then
  nohup dockerd --bridge=none --iptables=false --ip6tables=false >"$LOG" 2>&1 &
elif command -v sudo >/dev/null 2>&1; then
  sudo -n sh -c "nohup dockerd --bridge=none --iptables=false --ip6tables=false >'$LOG' 2>&1 &" ||
    fail "could not start dockerd with sudo"
else
  fail "dockerd is not running and this user cannot start it"
fi

for _ in $(seq 1 "$WAIT_SECONDS"); do
  if docker info >/dev/null 2>&1; then
    exit 0
  fi
  sleep 1
done
fail "dockerd did not answer within ${WAIT_SECONDS}s (log: $LOG)"
