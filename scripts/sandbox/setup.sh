#!/usr/bin/env bash
# Install what the local executor's sandbox needs, from Debian's packages: bubblewrap (bwrap)
# and util-linux's setpriv (present on every Debian/Ubuntu system).
#
# Idempotent: with bwrap present it installs nothing. Exit status 0 when bwrap and setpriv are
# there; 2 when this machine cannot install them (not root, no apt-get) so that callers can
# skip rather than fail; anything else is a real failure.
set -euo pipefail

say() { printf 'sandbox-setup: %s\n' "$*" >&2; }

if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    say "bwrap is missing and this machine cannot install it (needs root and apt-get)"
    exit 2
  fi
  say "installing bubblewrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bubblewrap >/dev/null
fi
command -v setpriv >/dev/null 2>&1 || { say "setpriv (util-linux) is missing"; exit 1; }
say "bwrap $(bwrap --version | awk '{print $2}') and setpriv are present"
