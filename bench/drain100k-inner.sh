#!/usr/bin/env bash
# bench/drain100k-inner.sh: body of drain100k.sh, run inside pg_virtualenv.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
ms() { date +%s%3N; }

psql <<'SQL'
CREATE EXTENSION pgqueue;
SELECT pgqueue.queue_create('bench');
CREATE TABLE plain_jobs (job_id bigserial PRIMARY KEY, key text, priority int NOT NULL,
						 run_at timestamptz, enqueued_at timestamptz NOT NULL, payload jsonb NOT NULL);
SQL

# the same 1000-row batch for both, 100 transactions each, one client
cat > "$work/push.sql" <<'SQL'
SELECT pgqueue.queue_push_batch('bench',
	(SELECT array_agg(jsonb_build_object('n', g, 'body', repeat('x', 64))) FROM generate_series(1, 1000) g));
SQL
cat > "$work/insert.sql" <<'SQL'
INSERT INTO plain_jobs (key, priority, enqueued_at, payload)
SELECT NULL, 0, clock_timestamp(), jsonb_build_object('n', g, 'body', repeat('x', 64))
  FROM generate_series(1, 1000) g;
SQL
cat > "$work/drain.sql" <<'SQL'
SELECT pgqueue.queue_ack('bench', ids)
  FROM (SELECT array_agg(job_id) AS ids FROM pgqueue.queue_pop('bench', 100)) p
 WHERE ids IS NOT NULL;
SQL

t0=$(ms); pgbench -n -c 1 -t 100 -f "$work/insert.sql" postgres > /dev/null; t1=$(ms)
pgbench -n -c 1 -t 100 -f "$work/push.sql" postgres > /dev/null; t2=$(ms)
insert_rate=$((100000 * 1000 / (t1 - t0)))
push_rate=$((100000 * 1000 / (t2 - t1)))
echo "plain multi-row INSERT: 100000 rows in $((t1 - t0)) ms = $insert_rate rows/s"
echo "queue_push_batch:       100000 jobs in $((t2 - t1)) ms = $push_rate jobs/s"
echo "push_batch / INSERT:    $(awk "BEGIN {printf \"%.2f\", $push_rate / $insert_rate}")"

t0=$(ms)
pgbench -n -c 4 -j 2 -t 260 -f "$work/drain.sql" postgres > "$work/drain.log"
t1=$(ms)
echo "drain by 4 consumers:   $((t1 - t0)) ms = $((100000 * 1000 / (t1 - t0))) jobs/s"
psql -At <<'SQL'
SELECT 'acked rows ' || count(*) || ', distinct jobs acked ' || count(DISTINCT job_id)
  FROM pgqueue.job_history WHERE queue = 'bench' AND state = 'succeeded';
SELECT 'claims ' || count(*) || ', distinct jobs claimed ' || count(DISTINCT job_id)
  FROM pgqueue.job_history WHERE queue = 'bench' AND state = 'executing';
SELECT 'jobs not succeeded ' || count(*) FROM pgqueue.jobs WHERE queue = 'bench' AND state <> 'succeeded';
SQL
