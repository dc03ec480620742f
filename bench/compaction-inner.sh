#!/usr/bin/env bash
# bench/compaction-inner.sh: body of compaction.sh, run inside pg_virtualenv.
set -euo pipefail
work=$(mktemp -d)
chmod 777 "$work"
trap 'rm -rf "$work"' EXIT
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
PGQ_LOG="$(dirname "$PG_CLUSTER_CONF_ROOT")/log/postgresql-15-regress.log"
jobs=$PGQ_JOBS
# pushes of 100 jobs at 250 a second, so that blocks of 50 000 jobs fill,
# finish and get compacted while pushing and draining go on
rate=250
duration=$((jobs / 100 / rate))

psql -c "CREATE EXTENSION pgqueue" \
	 -c "SELECT pgqueue.queue_create('c', block_size => 50000, retention => '0')" \
	 -c "CREATE TABLE go (); INSERT INTO go DEFAULT VALUES"
cat > "$work/push.sql" <<'SQL'
SELECT pgqueue.queue_push_batch('c',
	(SELECT array_agg(jsonb_build_object('n', g, 'body', repeat('x', 64))) FROM generate_series(1, 100) g));
SQL
cat > "$work/drain.sql" <<'SQL'
-- a consumer stops (by error) once the driver empties table go
SELECT 1 / count(*) FROM go;
SELECT pgqueue.queue_ack('c', ids)
  FROM (SELECT array_agg(job_id) AS ids FROM pgqueue.queue_pop('c', 100)) p
 WHERE ids IS NOT NULL;
SQL

start=$(date +%s)
(cd "$work" && pgbench -n -c 1 -T "$duration" -R "$rate" -l --log-prefix=push -f push.sql postgres > push.out 2>&1) &
pusher=$!
# consumers run until the pusher is done and the queue is empty
(cd "$work" && pgbench -n -c 2 -j 2 -T 100000 -l --log-prefix=drain -f drain.sql postgres > drain.out 2>&1) &
drainer=$!
wait $pusher
while [ "$(psql -At -c "SELECT available + executing FROM pgqueue.stats WHERE queue = 'c'")" != 0 ]; do
	sleep 1
done
psql -c "DELETE FROM go"
wait $drainer || true
end=$(date +%s)
# let the worker finish compacting
for i in $(seq 1 60); do
	[ "$(psql -At -c "SELECT count(*) FROM pgqueue.block")" -le 2 ] && break
	sleep 1
done

jobs=$(psql -At -c "SELECT pushed FROM pgqueue.stats WHERE queue = 'c'")
echo "jobs pushed and finished: $jobs in $((end - start)) s (pushes of 100 at $rate/s, 2 consumers popping 100)"
psql -At -v jobs="$jobs" <<'SQL'
SELECT 'live blocks: ' || count(*) || ' (' || string_agg(block_no || ':' || state, ', ' ORDER BY first_id) || ')'
  FROM pgqueue.block;
SELECT 'live queue storage: ' || pg_size_pretty(sum(pg_total_relation_size(c.oid)))
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'pgqueue_data' AND c.relkind = 'r' AND c.relname ~ '^[js]_';
SELECT 'archive storage: ' || coalesce(pg_size_pretty(sum(pg_total_relation_size(c.oid))), '0')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'pgqueue_data' AND c.relkind = 'r' AND c.relname ~ '^a_';
SELECT 'dead tuples in live queue tables: ' || coalesce(sum(n_dead_tup), 0)
  FROM pg_stat_user_tables WHERE schemaname = 'pgqueue_data' AND relname ~ '^[js]_';
SELECT 'acked exactly once: ' || (count(*) = count(DISTINCT job_id) AND count(*) = :jobs)
  FROM pgqueue.job_history WHERE queue = 'c' AND state = 'succeeded';
SQL
echo "slowest transactions (ms) while the worker compacted:"
for kind in push drain; do
	cat "$work"/$kind.* 2>/dev/null | awk '$3 > 0 { print $3 }' | sort -n |
		awk -v k=$kind '{ a[NR] = $1 } END { printf "  %-6s n=%d p50=%.1f p99=%.1f p99.9=%.1f max=%.1f\n",
			k, NR, a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000, a[int(NR*0.999)]/1000, a[NR]/1000 }'
done
psql -At <<'SQL'
SELECT 'archived status rows: ' || count(*) FROM pgqueue.job_history WHERE queue = 'c' AND archived;
SQL
echo "compactions during the run (from the server log):"
grep -h "compacted" "$PGQ_LOG" 2>/dev/null | sed 's/.*LOG: *//' | sed 's/^/  /' || true
