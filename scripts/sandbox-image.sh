#!/usr/bin/env bash
# Build the sandbox image `loki-sandbox:local` without a registry: a rootfs made
# from busybox-static, loaded with `docker import`. Idempotent: skipped when the
# image exists, unless --force.
#
# The image is deliberately minimal and deliberately contains two weaknesses the
# Docker tests rely on to show the sandbox holds without help from the image:
#   - /bin/su points at /bin/suid/busybox, a setuid-root copy of busybox, and root
#     has an empty password in /etc/shadow;
#   - /bin/suid/rootshell (built when a C compiler is present) is a setuid-root
#     helper that calls setresuid(0,0,0) and execs its arguments. Debian's busybox
#     drops setuid privileges by itself, rootshell does not, so it is the binary
#     that shows the sandbox (no-new-privileges) is what keeps uid 1000 at 1000.
#
# A real image for agent sessions: build it with your provider's CLI on top of any
# base, keep a uid-1000 user and tag it loki-sandbox:local, e.g.
#
#   FROM node:22-bookworm-slim
#   RUN npm install -g @anthropic-ai/claude-code && mkdir -p /workspace
#   USER 1000:1000
#   WORKDIR /workspace
#
#   docker build -t loki-sandbox:local .
#
# (the node image already has a `node` user with uid 1000). Point `.loki/config.yaml`
# `sandbox.image` at another tag to use several images side by side, and list the
# provider's API-key variable in `sandbox.env_allowlist`.
set -euo pipefail

IMAGE=loki-sandbox:local
BUSYBOX=/bin/busybox
FORCE=0

for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h | --help)
      echo "usage: scripts/sandbox-image.sh [--force]   build $IMAGE from busybox-static"
      exit 0
      ;;
    *)
      echo "sandbox-image: unknown argument: $arg" >&2
      exit 2
      ;;
  esac
done

fail() {
  echo "sandbox-image: $*" >&2
  exit 1
}

command -v docker >/dev/null 2>&1 || fail "docker CLI not found (run scripts/docker-up.sh)"
docker info >/dev/null 2>&1 || fail "Docker engine not answering (run scripts/docker-up.sh)"

if [ "$FORCE" -eq 0 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  exit 0
fi

[ -x "$BUSYBOX" ] || fail "$BUSYBOX not found (apt-get install busybox-static)"
"$BUSYBOX" true || fail "$BUSYBOX does not run"

WORK=$(mktemp -d /tmp/loki-sandbox-image.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
ROOT="$WORK/rootfs"

mkdir -p "$ROOT"/{bin/suid,etc,tmp,workspace,home/loki,root,proc,sys,dev,usr}
cp "$BUSYBOX" "$ROOT/bin/busybox"
chmod 0755 "$ROOT/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [ "$applet" = busybox ] && continue
  ln -sf busybox "$ROOT/bin/$applet"
done
ln -s ../bin "$ROOT/usr/bin"
ln -s bin "$ROOT/sbin"

cp "$BUSYBOX" "$ROOT/bin/suid/busybox"
chmod 4755 "$ROOT/bin/suid/busybox"
ln -sf suid/busybox "$ROOT/bin/su"

if command -v cc >/dev/null 2>&1; then
  cat >"$WORK/rootshell.c" <<'C'
#define _GNU_SOURCE
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
  if (argc < 2) { fputs("usage: rootshell CMD [ARG...]\n", stderr); return 2; }
  if (setresuid(0, 0, 0) != 0) { perror("rootshell: setresuid"); return 1; }
  (void)setresgid(0, 0, 0); /* needs CAP_SETGID, which the sandbox never has */
  execv(argv[1], argv + 1);
  perror("rootshell: execv");
  return 127;
}
C
  cc -static -Os -s -o "$ROOT/bin/suid/rootshell" "$WORK/rootshell.c" 2>/dev/null ||
    fail "cc could not build the static rootshell helper (is libc6-dev installed?)"
  chmod 4755 "$ROOT/bin/suid/rootshell"
else
  echo "sandbox-image: no C compiler; /bin/suid/rootshell not built (the setuid test will be skipped)" >&2
fi

cat >"$ROOT/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
loki:x:1000:1000:loki:/home/loki:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat >"$ROOT/etc/group" <<'GROUP'
root:x:0:
loki:x:1000:
nogroup:x:65534:
GROUP
printf 'root::19000:0:99999:7:::\nloki:!:19000:0:99999:7:::\n' >"$ROOT/etc/shadow"
chmod 0644 "$ROOT/etc/passwd" "$ROOT/etc/group"
chmod 0640 "$ROOT/etc/shadow"
chmod 1777 "$ROOT/tmp"
chmod 0755 "$ROOT/workspace" "$ROOT/home/loki"
chmod 0700 "$ROOT/root"

# Everything root-owned except the loki user's home; no root needed to build.
TAR="$WORK/rootfs.tar"
tar --numeric-owner --owner=0 --group=0 --exclude=./home/loki -C "$ROOT" -cf "$TAR" .
tar --numeric-owner --owner=1000 --group=1000 -C "$ROOT" -rf "$TAR" ./home/loki

docker import \
  --change 'USER 1000:1000' \
  --change 'WORKDIR /workspace' \
  --change 'ENV PATH=/bin:/usr/bin:/sbin HOME=/home/loki' \
  --change 'CMD ["/bin/sh"]' \
  --change 'LABEL org.opencontainers.image.title=loki-sandbox org.opencontainers.image.description=busybox-static-test-image' \
  "$TAR" "$IMAGE" >/dev/null || fail "docker import failed"

echo "sandbox-image: built $IMAGE"
