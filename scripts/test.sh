#!/usr/bin/env bash
# Run the whole test suite. If PostgreSQL's server binaries are installed (Debian package
# `postgresql`) and VIGIL_TEST_POSTGRES_URL is not set, start a throwaway server on loopback for the
# duration of the run, so the store and core tests run against both SQLite and PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

cleanup() { :; }
if [ -z "${VIGIL_TEST_POSTGRES_URL:-}" ]; then
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$PGBIN" ] && [ -x "$PGBIN/initdb" ]; then
    PGDIR=$(mktemp -d /tmp/vigil-pg.XXXXXX)
    PGPORT=${VIGIL_TEST_PGPORT:-$(( 20000 + RANDOM % 20000 ))}
    as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
    [ "$(id -u)" = 0 ] && chown postgres "$PGDIR"
    as_pg "$PGBIN/initdb" -D "$PGDIR/data" -A trust -U postgres --no-sync >/dev/null
    as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w \
      -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $PGDIR -c fsync=off" start >/dev/null
    cleanup() { as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$PGDIR"; }
    export VIGIL_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$PGPORT/postgres"
    echo "test.sh: PostgreSQL $(basename "$(dirname "$PGBIN")") started on 127.0.0.1:$PGPORT" >&2
  else
    echo "test.sh: no PostgreSQL server binaries found; PostgreSQL tests will be skipped" >&2
  fi
fi
trap cleanup EXIT
"$PY" -m pytest "$@"
