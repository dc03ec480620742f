#!/usr/bin/env bash
# bench/rights-inner.sh: body of rights.sh, run inside pg_virtualenv.
set -euo pipefail
jobs=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
ms() { date +%s%3N; }

psql >/dev/null <<'SQL'
CREATE EXTENSION pgqueue;
CREATE ROLE team NOLOGIN;
CREATE ROLE other NOLOGIN;
CREATE ROLE worker LOGIN IN ROLE pgqueue_consumer, team;
\set pw `echo "$PGPASSWORD"`
ALTER ROLE worker PASSWORD :'pw';
SELECT pgqueue.queue_create('r_super');
SELECT pgqueue.queue_create('r_open');
SELECT pgqueue.queue_create('r_granted');
SELECT pgqueue.queue_grant('r_granted', 'team', '{consume}');
SELECT pgqueue.queue_grant('r_granted', 'other', '{push}');
SELECT pgqueue.queue_create('r_empty');
SELECT pgqueue.queue_grant('r_empty', 'team', '{consume}');
SQL

# drain <queue> <user>: push $jobs jobs, drain them, print jobs/s
drain() {
	local q=$1 user=$2 t0 t1
	psql -c "SELECT count(*) FROM (SELECT pgqueue.queue_push_batch('$q',
		(SELECT array_agg(jsonb_build_object('n', g, 'body', repeat('x', 64)))
		   FROM generate_series(1, 1000) g)) FROM generate_series(1, $jobs / 1000)) p" >/dev/null
	psql -c 'CHECKPOINT' >/dev/null
	cat > "$work/$q.sql" <<SQL
SELECT pgqueue.queue_ack('$q', ids)
  FROM (SELECT array_agg(job_id) AS ids FROM pgqueue.queue_pop('$q', 100)) p
 WHERE ids IS NOT NULL;
SQL
	t0=$(ms)
	pgbench -n -U "$user" -c 4 -j 2 -t $((jobs / 400 + 10)) -f "$work/$q.sql" postgres >/dev/null
	t1=$(ms)
	echo $((jobs * 1000 / (t1 - t0)))
}

median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

: > "$work/super"; : > "$work/open"; : > "$work/granted"
for round in 1 2 3; do
	drain r_super postgres >>"$work/super"
	drain r_open worker >>"$work/open"
	drain r_granted worker >>"$work/granted"
done
super=$(median <"$work/super")
open=$(median <"$work/open")
granted=$(median <"$work/granted")
echo "drain of $jobs jobs, 4 consumers, pop 100 + ack (jobs/s, median of 3; runs: super $(tr '\n' ' ' <"$work/super")| open $(tr '\n' ' ' <"$work/open")| granted $(tr '\n' ' ' <"$work/granted"))"
echo "  super   $super"
echo "  open    $open ($(awk "BEGIN {printf \"%.3f\", $open / $super}") of super)"
echo "  granted $granted ($(awk "BEGIN {printf \"%.3f\", $granted / $super}") of super)"
psql -At -c "SELECT 'every job acked once: ' || bool_and(n = 1) FROM (SELECT count(*) n FROM pgqueue.job_history WHERE state = 'succeeded' GROUP BY queue, job_id) s"

echo 'SELECT count(*) FROM pgqueue.queue_pop('"'"'r_empty'"'"');' > "$work/empty.sql"
for user in postgres worker; do
	tps=$(pgbench -n -U $user -c 1 -t 20000 -f "$work/empty.sql" postgres | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
	echo "pop of an empty queue, 1 client, as $user: $tps calls/s ($(awk "BEGIN {printf \"%.1f\", 1e6 / $tps}") us per call)"
done
