#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests, from Debian's packages: `pg.sh start DIR`
# makes a cluster in DIR (as the postgres user: initdb and pg_ctl refuse root), starts it on
# 127.0.0.1 on a free port with a password user `sluice` and a database `sluice`, and prints
# the URL (password included) on stdout; `pg.sh stop DIR` stops it.
set -euo pipefail

cmd="${1:?usage: pg.sh start|stop DIR}"
dir="${2:?usage: pg.sh start|stop DIR}"
bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
if [ -z "$bin" ]; then
  echo "pg.sh: no PostgreSQL server installed (apt-get install -y postgresql)" >&2
  exit 1
fi
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200 -c fsync=off" start >/dev/null
    as_pg "$bin/psql" -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
      -c "CREATE ROLE sluice LOGIN SUPERUSER PASSWORD 'sluice-pw'" \
      -c "CREATE DATABASE sluice OWNER sluice" >/dev/null
    echo "postgres://sluice:sluice-pw@127.0.0.1:$port/sluice"
    ;;
  stop)
    as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    ;;
  *)
    echo "usage: pg.sh start|stop DIR" >&2
    exit 2
    ;;
esac
