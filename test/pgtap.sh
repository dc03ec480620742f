#!/usr/bin/env bash
# test/pgtap.sh DIR: run the pgTAP suite (test/pgtap/*.sql) with pg_prove
# on a throwaway instance in DIR, set up as test/pgqueue.conf says (make
# pgtap).  Like initdb, it must not run as root.
set -euo pipefail
dir=$1
port=${PGTAP_PORT:-55431}
rm -rf "$dir"
mkdir -p "$dir"
initdb -A trust -D "$dir/data" >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log"; exit 1; }
cat test/pgqueue.conf >>"$dir/data/postgresql.conf"
pg_ctl -D "$dir/data" -o "-p $port -k /tmp -c listen_addresses=''" -l "$dir/server.log" \
	-w start >/dev/null
trap 'pg_ctl -D "$dir/data" -m fast -w stop >/dev/null' EXIT
export PGHOST=/tmp PGPORT=$port
psql -X -q -d postgres -c 'CREATE DATABASE pgtap_test' >/dev/null
psql -X -q -d pgtap_test -c 'CREATE EXTENSION pgtap' -c 'CREATE EXTENSION pgqueue' >/dev/null
pg_prove -d pgtap_test test/pgtap/*.sql
