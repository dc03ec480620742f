#!/usr/bin/env bash
# test/run.sh: build and install pgqueue, then run every test suite, each
# on throwaway clusters: pg_regress and isolation specs (make
# installcheck), pgTAP (make pgtap) and the TAP tests (make
# prove_installcheck).  Prints one summary line; exits non-zero on any
# failure.
set -uo pipefail
cd "$(dirname "$0")/.."
. test/deps.sh
make -s clean >/dev/null
pgq_install || exit 1

passed=0
failed=0
logdir=$(mktemp -d /tmp/pgqueue-test.XXXXXX)
chmod 755 "$logdir"

# initdb refuses root: the suites run as the postgres user, in a copy of
# the tree it can write to
work="$logdir/tree"
cp -a . "$work"
runner=(bash -c)
if [ "$(id -u)" -eq 0 ]; then
	chown -R postgres "$logdir"
	runner=(su postgres -c)
fi
run() {
	"${runner[@]}" "cd '$work' && PATH='$PATH' $1" >"$logdir/$2.log" 2>&1
	echo $? >"$logdir/$2.rc"
	cat "$logdir/$2.log"
}

# count the "ok" and "FAILED" lines of pg_regress and the isolation tester
tally_regress() {
	local ok bad
	ok=$(grep -cE '^(test |     )?[[:alnum:]_-]+ +\.\.\. ok' "$1")
	bad=$(grep -cE '\.\.\. FAILED' "$1")
	passed=$((passed + ok))
	failed=$((failed + bad))
}

# count the tests of a prove or pg_prove run
tally_prove() {
	local t bad
	if grep -qE '^Files=' "$1"; then
		t=$(sed -nE 's/^Files=[0-9]+, Tests=([0-9]+).*/\1/p' "$1")
		bad=$(grep -oE 'Failed [0-9]+/[0-9]+ subtests' "$1" | awk -F'[ /]' '{s+=$2} END {print s+0}')
		passed=$((passed + t - bad))
		failed=$((failed + bad))
	fi
	[ "$(cat "${1%.log}.rc")" = 0 ] || grep -q 'Failed [0-9]' "$1" || failed=$((failed + 1))
}

# 1. pg_regress and isolation specs
run "make -s installcheck TAP_TESTS=" installcheck
tally_regress "$logdir/installcheck.log"
if [ "$(cat "$logdir/installcheck.rc")" != 0 ]; then
	for f in "$work"/test/output/regression.diffs "$work"/test/output_iso/regression.diffs; do
		[ -f "$f" ] && cat "$f"
	done
	grep -q 'FAILED' "$logdir/installcheck.log" || failed=$((failed + 1))
fi

# 2. pgTAP
run "make -s pgtap" pgtap
tally_prove "$logdir/pgtap.log"

# 3. TAP: restart, crash, upgrade, PgBouncer, pg_cron
run "make -s prove_installcheck" tap
tally_prove "$logdir/tap.log"

# 4. the README shows the recipe of examples/roles.sql as it is
if perl -0777 -e 'local $/; open(my $f, "<", "examples/roles.sql") or die;
		open(my $r, "<", "README.md") or die; my ($recipe, $readme) = (<$f>, <$r>);
		exit(index($readme, "```sql\n$recipe```") >= 0 ? 0 : 1)'; then
	echo "ok: README.md shows examples/roles.sql as it is"
	passed=$((passed + 1))
else
	echo "FAILED: README.md does not show examples/roles.sql as it is"
	failed=$((failed + 1))
fi

echo
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
