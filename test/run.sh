#!/usr/bin/env bash
# test/run.sh: build and install pgqueue, then run every test suite on
# throwaway clusters: pg_regress and isolation specs, pgTAP, and the TAP
# tests (restart, crash).  Prints one summary line; exits non-zero on any
# failure.
set -uo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
. test/deps.sh
make -s clean >/dev/null
pgq_install || exit 1

passed=0
failed=0
logdir=$(mktemp -d /tmp/pgqueue-test.XXXXXX)
chmod 755 "$logdir"

# count "ok"/"failed" lines of a pg_regress-style log
tally_regress() {
	local ok bad
	ok=$(grep -cE '^(test |     )?[[:alnum:]_-]+ +\.\.\. ok' "$1")
	bad=$(grep -cE '\.\.\. FAILED' "$1")
	passed=$((passed + ok))
	failed=$((failed + bad))
}

# 1. pg_regress, isolation and pgTAP share one cluster with pgqueue preloaded
cat > "$logdir/installcheck.sh" <<INNER
set -u
cd "$top"
make -s installcheck ISOLATION= > "$logdir/regress.log" 2>&1
rc=\$?
make -s installcheck REGRESS= >> "$logdir/regress.log" 2>&1
echo \$((rc + \$?)) > "$logdir/regress.rc"
psql -X -q -d postgres -c 'CREATE DATABASE pgtap_test' >/dev/null
psql -X -q -d pgtap_test -c 'CREATE EXTENSION pgtap' -c 'CREATE EXTENSION pgqueue' >/dev/null
pg_prove -d pgtap_test test/pgtap/*.sql > "$logdir/pgtap.log" 2>&1
echo \$? > "$logdir/pgtap.rc"
INNER
pg_virtualenv -t -o shared_preload_libraries=pgqueue -o pgqueue.worker=off -o max_connections=50 \
	bash "$logdir/installcheck.sh"
cat "$logdir/regress.log"
tally_regress "$logdir/regress.log"
if [ "$(cat "$logdir/regress.rc")" != 0 ]; then
	for f in test/output/regression.diffs test/output_iso/regression.diffs; do
		[ -f "$f" ] && cat "$f"
	done
	[ "$(grep -c 'FAILED' "$logdir/regress.log")" -gt 0 ] || failed=$((failed + 1))
fi
cat "$logdir/pgtap.log"
if grep -qE '^Files=' "$logdir/pgtap.log"; then
	t=$(sed -nE 's/^Files=[0-9]+, Tests=([0-9]+).*/\1/p' "$logdir/pgtap.log")
	bad=$(grep -oE 'Failed [0-9]+/[0-9]+ subtests' "$logdir/pgtap.log" | awk -F'[ /]' '{s+=$2} END {print s+0}')
	passed=$((passed + t - bad))
	failed=$((failed + bad))
fi
[ "$(cat "$logdir/pgtap.rc")" = 0 ] || { grep -q 'Failed [0-9]' "$logdir/pgtap.log" || failed=$((failed + 1)); }

# 2. TAP tests start their own clusters; initdb refuses root, so run them
#    as the postgres user from a copy of the tree it can write to
if ls test/t/*.pl >/dev/null 2>&1; then
	tapdir="$logdir/tap"
	mkdir -p "$tapdir"
	cp -r test/t "$tapdir/"
	runner=()
	[ "$(id -u)" -eq 0 ] && { chown -R postgres "$logdir"; runner=(su postgres -c); }
	pgxs=$(dirname "$(pg_config --pgxs)")/..
	tapcmd="cd '$tapdir' && TESTDIR='$tapdir' PATH='/usr/lib/postgresql/15/bin:$PATH' \
PG_REGRESS='$pgxs/test/regress/pg_regress' prove -I '$pgxs/test/perl' t/*.pl"
	if [ ${#runner[@]} -gt 0 ]; then
		"${runner[@]}" "$tapcmd" > "$logdir/tap.log" 2>&1
	else
		bash -c "$tapcmd" > "$logdir/tap.log" 2>&1
	fi
	rc=$?
	cat "$logdir/tap.log"
	if grep -qE '^Files=' "$logdir/tap.log"; then
		t=$(sed -nE 's/^Files=[0-9]+, Tests=([0-9]+).*/\1/p' "$logdir/tap.log")
		bad=$(grep -oE 'Failed [0-9]+/[0-9]+ subtests' "$logdir/tap.log" | awk -F'[ /]' '{s+=$2} END {print s+0}')
		passed=$((passed + t - bad))
		failed=$((failed + bad))
	fi
	[ $rc = 0 ] || { grep -q 'Failed [0-9]' "$logdir/tap.log" || failed=$((failed + 1)); }
fi

echo
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
