#!/usr/bin/env bash
# System packages the test suite needs: rsyslog (+ TLS driver) for the syslog
# tests, Chromium for the browser tests, openssl for test certificates, git,
# e2fsprogs/mount for session worktrees, PostgreSQL. Idempotent: installs only what is missing.
set -euo pipefail

need=()
command -v rsyslogd >/dev/null 2>&1 || need+=(rsyslog)
[ -e /usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so ] || ls /usr/lib/*/rsyslog/lmnsd_gtls.so >/dev/null 2>&1 || need+=(rsyslog-gnutls)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v git >/dev/null 2>&1 || need+=(git)
# Session worktrees: a loop-mounted ext4 per session.
command -v mkfs.ext4 >/dev/null 2>&1 || need+=(e2fsprogs)
command -v losetup >/dev/null 2>&1 || need+=(mount)
# The in-container egress forwarder (scripts/forwarder) is built with Go.
command -v go >/dev/null 2>&1 || need+=(golang-go)
# The third-party audit-log verifier (test/tlog-verify) builds against Debian's golang.org/x/mod.
[ -d /usr/share/gocode/src/golang.org/x/mod/sumdb/tlog ] || need+=(golang-golang-x-mod-dev)
# PostgreSQL (the API suites also run on it, and the audit log's multi-process tests): Debian's server packages.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# syslog-ng, the second syslog receiver of the SIEM tests (test/helpers/syslog-ng.ts): Debian's
# syslog-ng-core conflicts with rsyslog (both are the system log daemon), so it is unpacked into
# /opt/syslog-ng (below) rather than installed; its shared libraries are installed as usual.
for lib in libivykis0 libnet1 libwrap0 libjson-c5 libpcre3 libglib2.0-0 libcap2 libsystemd0 libssl3; do
  dpkg -s "$lib" >/dev/null 2>&1 || need+=("$lib")
done

if [ "${#need[@]}" -gt 0 ]; then
  echo "ci-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

syslog_ng_root=/opt/syslog-ng
if [ ! -x /usr/sbin/syslog-ng ] && [ ! -x "$syslog_ng_root/usr/sbin/syslog-ng" ]; then
  echo "ci-deps: unpacking syslog-ng-core into $syslog_ng_root"
  tmp=$(mktemp -d)
  chmod 755 "$tmp"
  (cd "$tmp" && { apt-get download -qq syslog-ng-core >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get download -qq syslog-ng-core >/dev/null 2>&1; }; })
  dpkg-deb -x "$tmp"/syslog-ng-core_*.deb "$syslog_ng_root"
  rm -rf "$tmp"
fi
