#!/usr/bin/env bash
# bench/status-rows.sh: how fast a drain with one status row per job and
# transition can be at all, against the classic SKIP LOCKED queue, on one
# throwaway cluster (fsync and synchronous_commit on, the maintenance worker
# off).  Each contender drains the same number of fresh jobs with 4 pgbench
# consumers, pop n=100 and ack in separate transactions:
#   classic      UPDATE ... SKIP LOCKED to claim, DELETE to finish
#                (bench/scenarios.sh's classic queue)
#   sql-lock     pgqueue's claim and ack statements alone, on copies of a
#                block's tables: row lock (FOR UPDATE SKIP LOCKED), a
#                never-claimed probe and INSERT ... ON CONFLICT DO NOTHING of
#                the status row; ack reads the latest status row and appends
#                the next one.  Consumers take disjoint id ranges from a
#                sequence, so no C code, lanes or watermarks are involved.
#   sql-nolock   the same without the row lock
#   sql-insert   the same with plain INSERTs: no lock, no probe, no conflict
#                check; the least any design with a status row per job
#                transition writes
#   pgqueue      queue_pop + queue_ack
# Prints jobs/s and the ratio to the classic queue.
# Usage: bash bench/status-rows.sh [jobs]     (default 200000, a multiple of 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
. test/deps.sh
pgq_install
export ROWS_JOBS=${1:-200000}
pg_virtualenv -t -o shared_preload_libraries=pgqueue -o pgqueue.worker=off \
	-o synchronous_commit=on -o fsync=on -o shared_buffers=1GB \
	-o max_wal_size=8GB bash -c '
set -euo pipefail
work=$(mktemp -d)
trap "rm -rf $work" EXIT
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
export PGOPTIONS="-c client_min_messages=warning"
ms() { date +%s%3N; }
N=$ROWS_JOBS
per=$((N / 400))

psql -c "CREATE EXTENSION pgqueue" \
	-c "CREATE TABLE payloads AS SELECT i, to_jsonb(md5(i::text) || md5((i + 1)::text)
		|| md5((i + 2)::text)) AS p FROM generate_series(1, 1000) i" \
	-c "SELECT pgqueue.queue_create(\$\$rows\$\$, block_size => $((N * 2)))" \
	-c "CREATE TABLE classic (id bigserial PRIMARY KEY, payload jsonb, priority int,
		state text, locked_until timestamptz)" \
	-c "CREATE INDEX ON classic (priority DESC, id) WHERE state = \$\$ready\$\$"
qid=$(psql -At -c "SELECT queue_id FROM pgqueue.queue WHERE name = \$\$rows\$\$")
jobs=pgqueue_data.j_${qid}_0
status=pgqueue_data.s_${qid}_0

# load CONTENDER: fresh jobs for one contender, analyzed, then a checkpoint
load() {
	case $1 in
		classic)
			psql -c "TRUNCATE classic" -c "INSERT INTO classic (payload, priority, state)
				SELECT p.p, 0, \$\$ready\$\$ FROM generate_series(1, $((N / 1000))) g, payloads p" \
				-c "VACUUM ANALYZE classic" ;;
		sql-*)
			psql -c "DROP TABLE IF EXISTS jx, sx" -c "DROP SEQUENCE IF EXISTS cur" \
				-c "CREATE SEQUENCE cur" \
				-c "CREATE TABLE jx (LIKE $jobs INCLUDING ALL)" \
				-c "CREATE TABLE sx (LIKE $status INCLUDING ALL)" \
				-c "INSERT INTO jx SELECT $qid, g * 1000 + p.i, NULL, 0, NULL, now(), p.p, NULL
					FROM generate_series(0, $((N / 1000 - 1))) g, payloads p" \
				-c "VACUUM ANALYZE jx, sx" ;;
		pgqueue)
			psql -c "SELECT pgqueue.queue_purge(\$\$rows\$\$)" \
				-c "SELECT count(pgqueue.queue_push_batch(\$\$rows\$\$,
					(SELECT array_agg(p ORDER BY i) FROM payloads))) FROM generate_series(1, $((N / 1000)))" \
				-c "VACUUM ANALYZE $jobs, $status" ;;
	esac > /dev/null
	psql -c CHECKPOINT
}

# the claim statement of the sql- contenders: LOCK and PROBE are SQL or empty
claim() {
	cat <<-SQL
		SELECT nextval(\$\$cur\$\$) * 100 - 99 AS lo \gset
		WITH c AS (SELECT j.job_id, j.payload FROM jx j
		  WHERE j.priority = 0 AND coalesce(j.tenant, \$\$\$\$) = \$\$\$\$ AND j.job_id >= :lo AND j.job_id < :lo + 100 $2
		  ORDER BY j.job_id LIMIT 100 $1),
		 i AS (INSERT INTO sx SELECT $qid, c.job_id, 1, \$\$e\$\$, 1, 0, now(), now() + interval \$\$30 s\$\$ FROM c $3
		  RETURNING job_id, attempt, due_at)
		SELECT coalesce(array_agg(c.job_id)::text, \$\${}\$\$) AS ids, sum(octet_length(c.payload::text)) AS bytes
		  FROM c LEFT JOIN i ON i.job_id = c.job_id \gset
	SQL
}
ack_sql() {
	cat <<-SQL
		WITH r AS (SELECT * FROM unnest(:ids::bigint[]) AS r(job_id)),
		 l AS (SELECT r.job_id, s.seq, s.state, s.attempt, s.fails, s.due_at, s.error FROM r
		  LEFT JOIN LATERAL (SELECT * FROM sx s WHERE s.job_id = r.job_id ORDER BY s.seq DESC LIMIT 1) s ON true),
		 i AS (INSERT INTO sx SELECT $qid, l.job_id, l.seq + 1, \$\$d\$\$, l.attempt, l.fails, now(), NULL, l.error
		  FROM l WHERE l.state = \$\$e\$\$ AND l.due_at >= now() $1 RETURNING job_id)
		SELECT count(*) FROM l LEFT JOIN i ON i.job_id = l.job_id LEFT JOIN jx j ON j.job_id = l.job_id;
	SQL
}
probe="AND NOT EXISTS (SELECT 1 FROM sx s WHERE s.job_id = j.job_id OFFSET 0)"
{ claim "FOR UPDATE SKIP LOCKED" "$probe" "ON CONFLICT DO NOTHING"; ack_sql "ON CONFLICT DO NOTHING"; } > $work/sql-lock.sql
{ claim "" "$probe" "ON CONFLICT DO NOTHING"; ack_sql "ON CONFLICT DO NOTHING"; } > $work/sql-nolock.sql
{ claim "" "" ""; ack_sql ""; } > $work/sql-insert.sql
cat > $work/classic.sql <<-SQL
	WITH c AS (UPDATE classic q SET state = \$\$running\$\$, locked_until = now() + interval \$\$30 s\$\$
	  WHERE q.id IN (SELECT id FROM classic WHERE state = \$\$ready\$\$
	                  ORDER BY priority DESC, id LIMIT 100 FOR UPDATE SKIP LOCKED)
	  RETURNING q.id, q.payload)
	SELECT coalesce(array_agg(id)::text, \$\${}\$\$) AS ids, coalesce(sum(octet_length(payload::text)), 0) AS bytes FROM c \gset
	DELETE FROM classic WHERE id = ANY(:ids::bigint[]);
SQL
cat > $work/pgqueue.sql <<-SQL
	SELECT coalesce(array_agg(job_id)::text, \$\${}\$\$) AS ids, coalesce(sum(octet_length(payload::text)), 0) AS bytes FROM pgqueue.queue_pop(\$\$rows\$\$, 100) \gset
	SELECT pgqueue.queue_ack(\$\$rows\$\$, :ids::bigint[]) WHERE cardinality(:ids::bigint[]) > 0;
SQL

echo "jobs $N per contender; 4 consumers, n=100, claim and ack in separate transactions;" \
	"$(psql -At -c "SELECT string_agg(name || \$\$=\$\$ || setting, \$\$ \$\$ ORDER BY name) FROM pg_settings
	 WHERE name IN (\$\$fsync\$\$, \$\$synchronous_commit\$\$, \$\$shared_buffers\$\$)")"
echo "load before: $(cut -d" " -f1-3 /proc/loadavg)"
printf "%-12s %9s %7s\n" contender jobs/s ratio
for c in classic sql-lock sql-nolock sql-insert pgqueue; do
	load $c
	t0=$(ms)
	pgbench -n -M prepared -c 4 -j 2 -t $per -f $work/$c.sql postgres > $work/$c.log 2>&1 ||
		{ cat $work/$c.log >&2; exit 1; }
	t1=$(ms)
	rate=$((N * 1000 / (t1 - t0)))
	[ $c = classic ] && base=$rate
	printf "%-12s %9d %7.2f\n" $c $rate "$(awk -v r=$rate -v b=$base "BEGIN { print r / b }")"
done
done_n=$(psql -At -c "SELECT count(*) FROM pgqueue.jobs WHERE queue = \$\$rows\$\$ AND state = \$\$succeeded\$\$")
[ "$done_n" = "$N" ] || { echo "pgqueue acked $done_n of $N jobs" >&2; exit 1; }
echo "load after:  $(cut -d" " -f1-3 /proc/loadavg)"
'
