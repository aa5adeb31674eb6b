#!/usr/bin/env bash
# Install and start a PostgreSQL server from Debian's packages for the test suites.
#
# The tests connect as `postgres` to 127.0.0.1:5432 without a password
# (postgresql+psycopg://postgres@127.0.0.1:5432/postgres), so this adds one trust rule for that
# user from 127.0.0.1 only, ahead of the packaged rules. Nothing else listens: the server binds
# to loopback. Durability settings are relaxed for speed (fsync off): these are throw-away
# test databases, and the suites kill processes, never the machine.
#
# Idempotent: with the server up and configured it only checks readiness (well under a second).
# Waits on pg_isready and a real query, never on fixed sleeps. Exit status 0 when the server
# answers; 2 when this machine cannot run it (not root, no apt-get) so that callers can skip
# rather than fail; anything else is a real failure.
#
# Environment: PG_PORT (5432).
set -euo pipefail

PORT="${PG_PORT:-5432}"
MARK="# gpucenter-tests"
T0=$(date +%s.%N)

say() { printf 'postgres-setup: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# wait_for SECONDS DESCRIPTION COMMAND...: poll every 0.1 s until COMMAND succeeds.
wait_for() {
  local limit=$1 what=$2
  shift 2
  local deadline=$(($(date +%s) + limit))
  until "$@" >/dev/null 2>&1; do
    if (($(date +%s) >= deadline)); then
      die "$what not ready after ${limit}s (see /var/log/postgresql/)"
    fi
    sleep 0.1
  done
}

answers() { # the server accepts the tests' connection and runs a query
  psql "host=127.0.0.1 port=$PORT user=postgres dbname=postgres connect_timeout=2" \
    -Atqc 'SELECT 1' 2>/dev/null | grep -qx 1
}

if answers; then
  say "already up on 127.0.0.1:$PORT ($(elapsed) s)"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  say "needs root (installs packages, starts the server)"
  exit 2
fi

# ------------------------------------------------------------------------------- packages
if ! dpkg-query -W -f='${Status}' postgresql 2>/dev/null | grep -q 'install ok installed'; then
  command -v apt-get >/dev/null 2>&1 || { say "no apt-get: cannot install PostgreSQL here"; exit 2; }
  say "installing Debian's postgresql"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    postgresql postgresql-contrib >/dev/null
fi

# ------------------------------------------------------------------------------- cluster
VERSION=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -n | tail -n1)
[[ -n $VERSION ]] || die "postgresql is installed but /usr/lib/postgresql has no version"
if ! pg_lsclusters -h 2>/dev/null | awk -v v="$VERSION" '$1 == v && $2 == "main"' | grep -q .; then
  say "creating cluster $VERSION/main"
  pg_createcluster --port="$PORT" "$VERSION" main >/dev/null
fi
CONF_DIR=/etc/postgresql/$VERSION/main
HBA=$CONF_DIR/pg_hba.conf

changed=0
if ! grep -qF "$MARK" "$HBA"; then
  # First matching rule wins: put ours on top. Only the postgres user, only from 127.0.0.1.
  tmp=$(mktemp)
  {
    echo "host    all    postgres    127.0.0.1/32    trust    $MARK"
    cat "$HBA"
  } >"$tmp"
  install -o postgres -g postgres -m 640 "$tmp" "$HBA"
  rm -f "$tmp"
  changed=1
fi
install -d -o postgres -g postgres "$CONF_DIR/conf.d"
TUNING=$CONF_DIR/conf.d/gpucenter-tests.conf
want=$(
  cat <<CONF
$MARK: throw-away test databases on loopback
listen_addresses = '127.0.0.1'
port = $PORT
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
)
if [[ ! -f $TUNING ]] || [[ "$(cat "$TUNING")" != "$want" ]]; then
  printf '%s\n' "$want" >"$TUNING"
  chown postgres:postgres "$TUNING"
  changed=1
fi
grep -q "^include_dir = 'conf.d'" "$CONF_DIR/postgresql.conf" ||
  echo "include_dir = 'conf.d'" >>"$CONF_DIR/postgresql.conf"

# ------------------------------------------------------------------------------- start
install -d -o postgres -g postgres /var/run/postgresql
status=$(pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main" { print $4 }')
if [[ $status == online* ]]; then
  if ((changed)); then
    say "restarting $VERSION/main with the test settings"
    pg_ctlcluster --skip-systemctl-redirect "$VERSION" main restart
  fi
else
  say "starting $VERSION/main"
  # A stale pid file from a machine that stopped hard keeps the server from starting.
  pid_file=/var/lib/postgresql/$VERSION/main/postmaster.pid
  if [[ -f $pid_file ]] && ! kill -0 "$(head -n1 "$pid_file")" 2>/dev/null; then
    rm -f "$pid_file"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$VERSION" main start
fi
wait_for 60 "PostgreSQL on 127.0.0.1:$PORT" pg_isready -h 127.0.0.1 -p "$PORT" -q
wait_for 30 "a query as postgres on 127.0.0.1:$PORT" answers
say "PostgreSQL $VERSION up on 127.0.0.1:$PORT ($(elapsed) s)"
