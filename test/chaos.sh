#!/usr/bin/env bash
# test/chaos.sh: the randomized oracle of issue 14 for as long as asked.
#
#   bash test/chaos.sh [--minutes 30] [--seed N] [--bindir DIR]
#
# Builds and installs pgqueue as test/run.sh does (or, with --bindir, uses
# the server and pgqueue already installed there and builds nothing),
# starts a throwaway cluster with pgqueue preloaded (as the postgres user
# when run as root), runs test/chaos/oracle.pl on it for the minutes
# given, prints its counts and checks, and exits non-zero when a check
# failed.  The cluster, the server log and the ledgers are removed after
# a pass and kept (their directory is printed) after a failure.
set -uo pipefail
cd "$(dirname "$0")/.."

minutes=30
seed=$((RANDOM % 100000 + 1))
bindir=""
while [ $# -gt 0 ]; do
	case "$1" in
		--minutes) minutes=$2; shift 2 ;;
		--seed) seed=$2; shift 2 ;;
		--bindir) bindir=$2; shift 2 ;;
		*) echo "usage: bash test/chaos.sh [--minutes N] [--seed N] [--bindir DIR]" >&2; exit 2 ;;
	esac
done

if [ -z "$bindir" ]; then
	. test/deps.sh
	make -s clean >/dev/null
	pgq_install || exit 1
	bindir=/usr/lib/postgresql/15/bin
fi

dir=$(mktemp -d /tmp/pgqueue-chaos.XXXXXX)
chmod 755 "$dir"
cp test/chaos/oracle.pl "$dir/"
runner=(bash -c)
if [ "$(id -u)" -eq 0 ]; then
	chown -R postgres "$dir"
	runner=(su postgres -c)
fi
as_owner() { "${runner[@]}" "$1"; }

port=$((20000 + RANDOM % 20000))
as_owner "'$bindir/initdb' -D '$dir/data' -A trust >'$dir/initdb.log' 2>&1" || {
	cat "$dir/initdb.log"; exit 1; }
cat >>"$dir/data/postgresql.conf" <<EOF
port = $port
listen_addresses = ''
unix_socket_directories = '$dir'
shared_preload_libraries = 'pgqueue'
pgqueue.naptime = 200
restart_after_crash = on
log_error_verbosity = verbose
max_connections = 40
EOF
as_owner "'$bindir/pg_ctl' -D '$dir/data' -l '$dir/server.log' -w start >/dev/null" || {
	cat "$dir/server.log"; exit 1; }

echo "chaos: seed $seed, $minutes minutes, cluster in $dir"
as_owner "perl '$dir/oracle.pl' --host '$dir' --port $port --datadir '$dir/data' \
	--bindir '$bindir' --logfile '$dir/server.log' --seed $seed \
	--seconds $((minutes * 60)) --drain-timeout 600 --workdir '$dir/ledgers'"
rc=$?

as_owner "'$bindir/pg_ctl' -D '$dir/data' -m fast -w stop >/dev/null 2>&1" ||
	as_owner "'$bindir/pg_ctl' -D '$dir/data' -m immediate -w stop >/dev/null 2>&1"
if [ $rc -eq 0 ]; then
	rm -rf "$dir"
	echo "chaos: seed $seed passed"
else
	echo "chaos: seed $seed FAILED (exit status $rc); cluster, server.log and ledgers kept in $dir"
fi
exit $rc
