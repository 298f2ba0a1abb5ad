#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests, from Debian's packages: `pg.sh start DIR`
# makes a cluster in DIR (as the postgres user: initdb and pg_ctl refuse root), starts it on
# 127.0.0.1 on a free port with a password user `sluice` and a database `sluice`, and prints
# the URL (password included) on stdout; `pg.sh stop DIR` stops it.
#
# The server also speaks TLS, with certificates made here by openssl under DIR/tls (its own
# CA `ca.crt`, a server certificate for IP 127.0.0.1, a client certificate for the role
# `sluice_cert` in `client.crt`/`client.key`); the server's `ssl_ca_file` names that folder.
# Two more roles exist for the TLS tests: `sluice_tls` (password `sluice-tls-pw`) may only
# connect over TLS, `sluice_cert` only over TLS with its client certificate.
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
    tls="$dir/tls"
    mkdir -p "$tls"
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -days 7 -subj "/CN=sluice test CA" -keyout "$tls/ca.key" \
      -out "$tls/ca.crt" -addext basicConstraints=critical,CA:TRUE \
      -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    sign() { # NAME SUBJECT EXTENSIONS
      openssl req "${ec[@]}" -subj "$2" -keyout "$tls/$1.key" -out "$tls/$1.csr" 2>/dev/null
      openssl x509 -req -in "$tls/$1.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" \
        -CAcreateserial -days 7 -out "$tls/$1.crt" -extfile <(printf '%b' "$3") 2>/dev/null
    }
    sign server "/CN=sluice test server" \
      'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth'
    sign client "/CN=sluice_cert" 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth'
    chmod 600 "$tls"/*.key
    [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$tls"
    # The TLS roles' rules come first (the first matching line decides).
    hba="$dir/data/pg_hba.conf"
    as_pg sh -c "{ printf '%s\n' \
      'hostssl all sluice_cert 127.0.0.1/32 cert' 'host all sluice_cert 127.0.0.1/32 reject' \
      'hostssl all sluice_tls 127.0.0.1/32 scram-sha-256' 'host all sluice_tls 127.0.0.1/32 reject'; \
      cat '$hba'; } > '$hba.new' && mv '$hba.new' '$hba'"
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200 -c fsync=off \
          -c ssl=on -c ssl_cert_file=$tls/server.crt -c ssl_key_file=$tls/server.key \
          -c ssl_ca_file=$tls/ca.crt" start >/dev/null
    as_pg "$bin/psql" -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
      -c "CREATE ROLE sluice LOGIN SUPERUSER PASSWORD 'sluice-pw'" \
      -c "CREATE ROLE sluice_tls LOGIN SUPERUSER PASSWORD 'sluice-tls-pw'" \
      -c "CREATE ROLE sluice_cert LOGIN SUPERUSER" \
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
