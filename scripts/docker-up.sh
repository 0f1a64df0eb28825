#!/usr/bin/env bash
# Make sure a Docker engine is installed and answering on /var/run/docker.sock.
# Idempotent: installs docker.io + busybox-static only when missing, starts dockerd
# only when `docker info` fails. The engine is started without a bridge and without
# iptables: sandbox containers use NetworkMode "none" and need neither.
#
# It also registers gVisor as a second runtime, `runsc` (Debian's package), in
# /etc/docker/daemon.json, so a session can run with HostConfig.Runtime "runsc":
#   "runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--platform=ptrace", "--network=none"]}}
# merged into whatever the file already holds, then reloads a running dockerd with
# SIGHUP. Without runsc (no package, install failed, LOKI_SKIP_RUNSC=1) the script
# prints a WARNING line on stderr and carries on: runc is unaffected.
set -euo pipefail

LOG=/tmp/loki-dockerd.log
WAIT_SECONDS=60
RUNSC_WAIT_SECONDS=20
DAEMON_JSON=/etc/docker/daemon.json
RUNSC_RUNTIME_ARGS='["--platform=ptrace","--network=none"]'

fail() {
  echo "docker-up: $*" >&2
  exit 1
}

warn_runsc() {
  echo "docker-up: WARNING: gVisor runtime runsc unavailable: $*; containers with Runtime \"runsc\" will fail to start (runc is unaffected)" >&2
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

export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=0
apt_update() {
  [ "$APT_UPDATED" -eq 1 ] && return 0
  as_root apt-get update -qq >/dev/null || return 1
  APT_UPDATED=1
}

if ! command -v docker >/dev/null 2>&1 || ! command -v dockerd >/dev/null 2>&1 || [ ! -x /bin/busybox ]; then
  apt_update || fail "apt-get update failed"
  as_root apt-get install -y -qq docker.io busybox-static >/dev/null || fail "apt-get install docker.io busybox-static failed"
fi

# --- gVisor -----------------------------------------------------------------------
RUNSC_OK=0         # runsc is installed and registered in daemon.json
DAEMON_JSON_BACKUP="" # set when this run changed daemon.json: the previous file, or "none"

runsc_path() {
  command -v runsc 2>/dev/null || { [ -x /usr/sbin/runsc ] && echo /usr/sbin/runsc; } || true
}

install_runsc() {
  [ -n "$(runsc_path)" ] && return 0
  apt_update || { warn_runsc "apt-get update failed"; return 1; }
  local candidate
  candidate=$(apt-cache policy runsc 2>/dev/null | awk '/Candidate:/ { print $2 }')
  if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
    warn_runsc "no runsc package in the configured apt repositories"
    return 1
  fi
  as_root apt-get install -y -qq runsc >/dev/null 2>&1 || { warn_runsc "apt-get install runsc ($candidate) failed"; return 1; }
  [ -n "$(runsc_path)" ] || { warn_runsc "package runsc installed but no runsc binary on PATH"; return 1; }
}

# Merge runtimes.runsc into daemon.json; prints "changed" or "unchanged".
merge_daemon_json() {
  local path=$1 program
  # shellcheck disable=SC2016
  program='
import json, os, sys
file, binary, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
config = {}
if os.path.exists(file):
    with open(file) as f:
        text = f.read()
    try:
        config = json.loads(text) if text.strip() else {}
    except ValueError as e:
        sys.exit(file + ": invalid JSON: " + str(e))
if not isinstance(config, dict):
    sys.exit(file + " is not a JSON object")
runtimes = config.get("runtimes") or {}
want = {"path": binary, "runtimeArgs": args}
if runtimes.get("runsc") == want:
    print("unchanged")
    sys.exit(0)
runtimes["runsc"] = want
config["runtimes"] = runtimes
os.makedirs(os.path.dirname(file), exist_ok=True)
with open(file + ".loki-tmp", "w") as f:
    f.write(json.dumps(config, indent=2) + "\n")
os.replace(file + ".loki-tmp", file)
print("changed")
'
  local node_program='
const fs = require("fs"), p = require("path");
const [file, binary, argsJson] = process.argv.slice(1);
let config = {};
if (fs.existsSync(file)) {
  const t = fs.readFileSync(file, "utf8");
  try { config = t.trim() ? JSON.parse(t) : {}; } catch (e) { console.error(file + ": invalid JSON: " + e.message); process.exit(1); }
}
if (config === null || typeof config !== "object" || Array.isArray(config)) { console.error(file + " is not a JSON object"); process.exit(1); }
const runtimes = config.runtimes || {};
const want = { path: binary, runtimeArgs: JSON.parse(argsJson) };
if (JSON.stringify(runtimes.runsc) === JSON.stringify(want)) { console.log("unchanged"); process.exit(0); }
runtimes.runsc = want; config.runtimes = runtimes;
fs.mkdirSync(p.dirname(file), { recursive: true });
fs.writeFileSync(file + ".loki-tmp", JSON.stringify(config, null, 2) + "\n");
fs.renameSync(file + ".loki-tmp", file);
console.log("changed");
'
  if command -v python3 >/dev/null 2>&1 && python3 -c 'import json' >/dev/null 2>&1; then
    as_root "$(command -v python3)" -c "$program" "$DAEMON_JSON" "$path" "$RUNSC_RUNTIME_ARGS"
  elif command -v node >/dev/null 2>&1; then
    as_root "$(command -v node)" -e "$node_program" "$DAEMON_JSON" "$path" "$RUNSC_RUNTIME_ARGS"
  else
    echo "neither python3 nor node to edit $DAEMON_JSON" >&2
    return 1
  fi
}

register_runsc() {
  local path result tmp="$DAEMON_JSON.loki-prev"
  path=$(runsc_path)
  "$path" --version >/dev/null 2>&1 || { warn_runsc "$path --version does not run"; return 1; }
  as_root rm -f "$tmp"
  if [ -f "$DAEMON_JSON" ]; then
    as_root cp -p "$DAEMON_JSON" "$tmp" || { warn_runsc "cannot back up $DAEMON_JSON"; return 1; }
  fi
  if ! result=$(merge_daemon_json "$path"); then
    as_root rm -f "$tmp"
    warn_runsc "could not merge the runsc runtime into $DAEMON_JSON"
    return 1
  fi
  if [ "$result" != changed ]; then
    as_root rm -f "$tmp"
    return 0
  fi
  echo "docker-up: registered runsc ($path) in $DAEMON_JSON" >&2
  if [ -f "$tmp" ]; then
    as_root mv -f "$tmp" "$DAEMON_JSON.loki-bak"
    DAEMON_JSON_BACKUP="$DAEMON_JSON.loki-bak"
  else
    DAEMON_JSON_BACKUP=none
  fi
}

# True when the engine lists runsc with the binary and arguments this script registers.
runsc_listed() {
  local want
  want="$(runsc_path) $(echo "$RUNSC_RUNTIME_ARGS" | tr -d '[]"' | tr ',' ' ')"
  [ "$(docker info --format '{{with index .Runtimes "runsc"}}{{.Path}} {{join .Args " "}}{{end}}' 2>/dev/null)" = "$want" ]
}

wait_runsc_listed() {
  for _ in $(seq 1 "$RUNSC_WAIT_SECONDS"); do
    runsc_listed && return 0
    sleep 1
  done
  warn_runsc "dockerd does not list runsc under Runtimes after ${RUNSC_WAIT_SECONDS}s (log: $LOG)"
  return 1
}

if [ "${LOKI_SKIP_RUNSC:-0}" = 1 ]; then
  warn_runsc "skipped (LOKI_SKIP_RUNSC=1)"
elif install_runsc && register_runsc; then
  RUNSC_OK=1
fi

# --- the engine ---------------------------------------------------------------------
if docker info >/dev/null 2>&1; then
  if [ "$RUNSC_OK" -eq 1 ] && { [ -n "$DAEMON_JSON_BACKUP" ] || ! runsc_listed; }; then
    # A running engine re-reads daemon.json (runtimes included) on SIGHUP; containers keep running.
    pid=$(cat /var/run/docker.pid 2>/dev/null || true)
    if [ -n "$pid" ] && grep -qx dockerd "/proc/$pid/comm" 2>/dev/null; then
      as_root kill -HUP "$pid" && wait_runsc_listed || true
    else
      warn_runsc "dockerd is running but not from /var/run/docker.pid, so it was not reloaded; restart it to pick up $DAEMON_JSON"
    fi
  fi
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

# Starts dockerd in the background and waits for it; returns 1 if it does not answer
# (early, when the process has already exited).
start_dockerd() {
  local dpid
  if [ "$(id -u)" -eq 0 ]; then
    nohup dockerd --bridge=none --iptables=false --ip6tables=false >"$LOG" 2>&1 &
    dpid=$!
  elif command -v sudo >/dev/null 2>&1; then
    dpid=$(sudo -n sh -c "nohup dockerd --bridge=none --iptables=false --ip6tables=false >'$LOG' 2>&1 & echo \$!") ||
      fail "could not start dockerd with sudo"
  else
    fail "dockerd is not running and this user cannot start it"
  fi
  for _ in $(seq 1 "$WAIT_SECONDS"); do
    if docker info >/dev/null 2>&1; then
      return 0
    fi
    [ -d "/proc/$dpid" ] || return 1
    sleep 1
  done
  return 1
}

if start_dockerd; then
  if [ "$RUNSC_OK" -eq 1 ]; then wait_runsc_listed || true; fi
  exit 0
fi
if [ -n "$DAEMON_JSON_BACKUP" ]; then
  # The daemon.json this run wrote may be what stops dockerd: put the old one back.
  warn_runsc "dockerd did not start with runsc in $DAEMON_JSON (log: $LOG); restoring the previous file"
  if [ "$DAEMON_JSON_BACKUP" = none ]; then
    as_root rm -f "$DAEMON_JSON"
  else
    as_root cp -p "$DAEMON_JSON_BACKUP" "$DAEMON_JSON"
  fi
  start_dockerd && exit 0
fi
fail "dockerd did not come up (waited up to ${WAIT_SECONDS}s; log: $LOG)"
