#!/usr/bin/env bash
# bench/scenarios.sh MODE WORKDIR: the body of bench/run.sh, run inside
# pg_virtualenv (PGHOST, PGPORT, PGUSER and PGPASSWORD point at the throwaway
# cluster).  Runs every scenario with pgbench custom scripts and writes
#
#   WORKDIR/results.tsv     one line per measurement (see rec below)
#   WORKDIR/series/*.dat    throughput over time of each pgbench run
#   WORKDIR/sustained.tsv   samples of the sustained run
#   WORKDIR/machine.txt, settings.txt, version.txt, final.txt
#
# which bench/report.sh turns into the results file and plots.
set -euo pipefail
mode=$1
work=$2
mkdir -p "$work/log" "$work/out" "$work/series" "$work/sql"
: > "$work/observations.txt"
db=bench

# ---------------------------------------------------------------------------
# Sizes and durations per mode
# ---------------------------------------------------------------------------
if [ "$mode" = quick ]; then
	T_PUSH=1             # seconds per ladder and push run
	N_FRESH_BATCH=10000  # jobs preloaded for a fresh drain with n = 100
	N_FRESH_ONE=400      # ... with n = 1
	N_BIG=200000         # the large backlog
	T_BIG=2              # seconds drained at the large backlog
	T_XMIN=15            # seconds the xmin-holding transaction lasts
	T_SUST=25            # sustained run
	RETENTION='5 seconds' # retention of the sustained run's queue
	SETTLE_S=8           # at most this long for maintenance to catch up after it
	I_SUST=2             # sampling interval of the sustained run
	I_MAINT=2            # pgqueue.maintain() interval in the sustained run
	N_COPY=100000        # rows per COPY
	BUCKET=0.25          # seconds per point of throughput-over-time series
	payloads_push=(small big)
	quick=yes            # fewer shapes: see the "quick" tests below
	CHECKPOINTS=no       # no CHECKPOINT before each drain (time)
	QDROP_WAIT=3         # lock_timeout of each of 4 tries to drop a queue
	# drains: n mode clients payload
	drains=("100 sep 4 small" "100 one 4 small" "100 sep 16 small" "1 sep 4 small")
else
	T_PUSH=10
	N_FRESH_BATCH=50000
	N_FRESH_ONE=5000
	N_BIG=10000000
	T_BIG=30
	T_XMIN=60
	T_SUST=600
	RETENTION='1 minute'
	SETTLE_S=120
	I_SUST=10
	I_MAINT=5
	N_COPY=1000000
	BUCKET=1
	payloads_push=(small big)
	quick=no
	CHECKPOINTS=yes
	QDROP_WAIT=30
	drains=()
	for p in small big; do
		for n in 100 1; do
			for m in sep one; do
				for c in 4 16; do drains+=("$n $m $c $p"); done
			done
		done
	done
fi

# any of these can be overridden from the environment as BENCH_<NAME>
overridden=""
for v in T_PUSH N_FRESH_BATCH N_FRESH_ONE N_BIG T_BIG T_XMIN T_SUST I_SUST I_MAINT N_COPY RETENTION SETTLE_S; do
	e="BENCH_$v"
	if [ -n "${!e:-}" ]; then
		printf -v "$v" '%s' "${!e}"
		overridden+="$v=${!e} "
	fi
done
echo "$overridden" > "$work/overrides.txt"

psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
# qdrop QUEUE [DB]: drop a pgqueue queue and its tables, each try with a
# lock_timeout, because a drop can wait on or deadlock with the maintenance
# worker.  A drop that needed more than 2 s or failed is written to
# observations.txt with what the other sessions were doing; a queue that
# cannot be dropped is left in place (the cluster is thrown away anyway).
qdrop() {
	local q=$1 d=${2:-$db} i t0 ms mon
	t0=$(now_ns)
	: > "$work/qdrop.errors"
	for i in 1 2 3 4; do
		( sleep 2
		  psql -At -F ' | ' -d "$d" \
			-c "SELECT 'session', pid, backend_type, wait_event_type || ':' || wait_event, state,
					   'transaction for ' || round(extract(epoch FROM now() - xact_start)::numeric, 1) || ' s',
					   'statement for ' || round(extract(epoch FROM now() - query_start)::numeric, 1) || ' s',
					   left(regexp_replace(query, '\s+', ' ', 'g'), 70)
				  FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()" \
			-c "SELECT 'lock', pid, locktype, relation::regclass, mode, granted FROM pg_locks
				 WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database())
				   AND (NOT granted OR relation IN (SELECT relation FROM pg_locks WHERE NOT granted))" \
			> "$work/qdrop.locks" 2>&1 ) &
		mon=$!
		if psql -At -d "$d" -c "SET lock_timeout = '${QDROP_WAIT}s'" -c "SELECT pgqueue.queue_drop('$q', force => true)" \
			> /dev/null 2>> "$work/qdrop.errors"; then
			kill "$mon" 2> /dev/null || true
			wait "$mon" 2> /dev/null || true
			ms=$(( ($(now_ns) - t0) / 1000000 ))
			if [ "$ms" -gt 2000 ]; then
				{
					echo "- queue_drop('$q', force => true) took $ms ms ($i tries); errors of the"
					echo "  failed tries and the other sessions 2 s into the last try:"
					echo '  ```'
					grep -v '^ *$' "$work/qdrop.errors" | head -6 | sed 's/^/  /' || true
					sed 's/^/  /' "$work/qdrop.locks" | head -12 || true
					echo '  ```'
				} >> "$work/observations.txt"
			fi
			rm -f "$work/qdrop.locks"
			return 0
		fi
		kill "$mon" 2> /dev/null || true
		wait "$mon" 2> /dev/null || true
		sleep 0.3
	done
	{
		echo "- queue_drop('$q', force => true) failed 4 times (lock_timeout $QDROP_WAIT s each); the"
		echo "  queue was left in place, and maintenance may keep working on it during"
		echo "  the later scenarios.  Errors, and the other sessions 2 s into the last try:"
		echo '  ```'
		grep -v '^ *$' "$work/qdrop.errors" | head -6 | sed 's/^/  /' || true
		sed 's/^/  /' "$work/qdrop.locks" | head -12 || true
		echo '  ```'
	} >> "$work/observations.txt"
	echo "warning: could not drop queue $q; left in place" >&2
	rm -f "$work/qdrop.locks"
	return 0
}
# a checkpoint before each drain, so that none falls into the measurement
checkpoint() { [ "$CHECKPOINTS" = no ] || sql "CHECKPOINT"; }
# sql STATEMENT...: run each statement (its own transaction) on one connection
sql() {
	local a=() x
	for x in "$@"; do a+=(-c "$x"); done
	psql -At -d "$db" "${a[@]}"
}
now_ns() { date +%s%N; }
say() { printf '[%s] %s\n' "$(date +%T)" "$*"; }

# ---------------------------------------------------------------------------
# Machine, server and schema
# ---------------------------------------------------------------------------
say "setup"
{
	echo "nproc: $(nproc)"
	echo "cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
	echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
	echo "kernel: $(uname -sr)"
	echo "os: $(. /etc/os-release && echo "$PRETTY_NAME")"
	echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine shows here)"
	echo "pgbench: $(pgbench --version)"
	echo "pgqueue build: $(git -C "$(dirname "$0")" log -1 --format='%h %s' 2> /dev/null | cut -c1-100)$(git -C "$(dirname "$0")" diff --quiet HEAD -- ../src ../sql 2> /dev/null || echo ' (with uncommitted changes in src/ or sql/)')"
} > "$work/machine.txt"

psql -d postgres -c "CREATE DATABASE $db"
sql "SELECT version()" > "$work/version.txt"
sql "SELECT name || ' = ' || current_setting(name) FROM pg_settings
	  WHERE (source NOT IN ('default', 'override')
			 AND name !~ '^(lc_|log_|DateStyle|TimeZone|application_name|cluster_name|default_text_search_config|external_pid_file|port|unix_socket_directories|dynamic_shared_memory_type)')
		 OR name IN ('fsync', 'synchronous_commit', 'wal_sync_method', 'full_page_writes',
					 'autovacuum', 'checkpoint_timeout', 'max_wal_size', 'shared_buffers',
					 'work_mem', 'wal_level', 'jit', 'pgqueue.worker', 'pgqueue.naptime')
	  ORDER BY name" > "$work/settings.txt"

payloads_sql="
/* 1000 payloads of about 100 bytes and about 2 KiB (jsonb as text), made of
 * md5 hex digits so that they do not compress to nothing */
CREATE TABLE payloads (i integer PRIMARY KEY, small jsonb NOT NULL, big jsonb NOT NULL);
INSERT INTO payloads
SELECT g,
	   jsonb_build_object('n', g, 'body', left(h, 78 - length(g::text))),
	   jsonb_build_object('n', g, 'body', left(h, 2026 - length(g::text)))
  FROM generate_series(1, 1000) g,
	   LATERAL (SELECT string_agg(md5(g || '-' || i), '') AS h
				  FROM generate_series(1, 64) i) x;
ANALYZE payloads;"
psql -d "$db" -c "$payloads_sql"
psql -d "$db" > /dev/null <<'SQL'
CREATE EXTENSION pgqueue;
CREATE EXTENSION pgq;

/* the physical ladder: a plain table shaped like a job */
CREATE TABLE plain_jobs (job_id bigserial PRIMARY KEY, key text, priority int NOT NULL,
						 run_at timestamptz, enqueued_at timestamptz NOT NULL,
						 payload jsonb NOT NULL);

/* the classic single-table SKIP LOCKED queue */
CREATE FUNCTION classic_create(t text) RETURNS void LANGUAGE plpgsql
SET client_min_messages = warning AS $$
BEGIN
	EXECUTE format('DROP TABLE IF EXISTS %I', t);
	EXECUTE format('CREATE TABLE %I (id bigserial PRIMARY KEY, payload jsonb NOT NULL,
		priority integer NOT NULL DEFAULT 0, state text NOT NULL DEFAULT ''ready'',
		locked_until timestamptz)', t);
	EXECUTE format('CREATE INDEX ON %I (priority DESC, id) WHERE state = ''ready''', t);
END $$;
SELECT classic_create('classic_push');
SELECT classic_create('classic');

/* pgqueue: jobs acked so far in one queue: status rows "succeeded" and
 * the jobs that ack records of claims took */
CREATE FUNCTION pgqueue_acked(q text) RETURNS bigint LANGUAGE sql AS $$
	SELECT (SELECT count(*) FROM pgqueue_data.status_store s
			 WHERE s.queue_id = (SELECT queue_id FROM pgqueue.queue WHERE name = q)
			   AND s.state = 'd')
		 + (SELECT coalesce(sum(c.n), 0) FROM pgqueue_data.claim_store c
			 WHERE c.queue_id = (SELECT queue_id FROM pgqueue.queue WHERE name = q)
			   AND c.kind = 'd') $$;

/* pgqueue: VACUUM ANALYZE the block tables of one queue (like a classic
 * table after its load, so that both start from the same footing) */
CREATE FUNCTION pgqueue_tables(q text) RETURNS SETOF text LANGUAGE sql AS $$
	SELECT format('pgqueue_data.%I, pgqueue_data.%I, pgqueue_data.%I',
				  'j_' || b.queue_id || '_' || b.block_no, 's_' || b.queue_id || '_' || b.block_no,
				  'c_' || b.queue_id || '_' || b.block_no)
	  FROM pgqueue.block b JOIN pgqueue.queue USING (queue_id) WHERE name = q $$;

/* PgQ: the event sequence number up to which a consumer has finished */
CREATE FUNCTION pgq_done(q text, c text) RETURNS bigint LANGUAGE sql AS $$
	SELECT t.tick_event_seq
	  FROM pgq.subscription s
	  JOIN pgq.queue qu ON qu.queue_id = s.sub_queue
	  JOIN pgq.consumer co ON co.co_id = s.sub_consumer
	  JOIN pgq.tick t ON t.tick_queue = s.sub_queue AND t.tick_id = s.sub_last_tick
	 WHERE qu.queue_name = q AND co.co_name = c $$;

SELECT pgqueue.queue_create('push_small', block_size => 100000);
SELECT pgqueue.queue_create('push_big', block_size => 100000);
SELECT pgq.create_queue('pq_push');
SQL

# ---------------------------------------------------------------------------
# pgbench runs and their analysis
# ---------------------------------------------------------------------------
# one line per measurement:
# id section scenario contender clients payload rows tx seconds rows/s tx/s p50 p95 p99 note
printf 'id\tsection\tscenario\tcontender\tclients\tpayload\trows\ttx\tseconds\trows_s\ttx_s\tp50_ms\tp95_ms\tp99_ms\tnote\n' \
	> "$work/results.tsv"

# pgb ID CLIENTS LIMIT SCRIPT [pgbench options]: one pgbench run, logging
# every transaction; LIMIT is "-T secs" or "-t count"
pgb() {
	local id=$1 c=$2 lim=$3 f=$4
	shift 4
	local j=$((c < 2 ? c : 2))
	rm -f "$work/log/$id".*
	# shellcheck disable=SC2086
	if ! pgbench -n -M prepared -c "$c" -j "$j" $lim -f "$f" -l --log-prefix="$work/log/$id" \
		"$@" "$db" > "$work/out/$id.txt" 2>&1 ||
		grep -q 'aborted' "$work/out/$id.txt"; then
		echo "pgbench run $id failed:" >&2
		cat "$work/out/$id.txt" >&2
		exit 1
	fi
}

# analyze ID: from the transaction log of run ID, set A_TX (transactions),
# A_SECS (first start to last end, without connection time), A_P50/95/99
# (latency per script, ms)
analyze() {
	local id=$1
	cat "$work/log/$id".* > "$work/log/$id.all"
	read -r A_TX A_SECS A_T0 < <(awk '
		{ e = $5 + $6 / 1e6; s = e - $3 / 1e6
		  if (NR == 1 || s < t0) t0 = s
		  if (NR == 1 || e > t1) t1 = e }
		END { printf "%d %.6f %.6f\n", NR, t1 - t0, t0 }' "$work/log/$id.all")
	read -r A_P50 A_P95 A_P99 < <(awk '{ print $3 / 1000 }' "$work/log/$id.all" | sort -g |
		awk '{ v[NR] = $1 }
			function p(q,  k) { k = int(NR * q + 0.999999); if (k < 1) k = 1; return v[k] }
			END { if (NR == 0) print "- - -"; else printf "%.3f %.3f %.3f\n", p(0.50), p(0.95), p(0.99) }')
}

# series ID ROWS: throughput over time of run ID, rows/s per BUCKET seconds,
# each transaction counted as ROWS / A_TX rows
series() {
	local id=$1 rows=$2
	awk -v t0="$A_T0" -v b="$BUCKET" -v f="$(awk -v r="$rows" -v n="$A_TX" 'BEGIN { print (n ? r / n : 0) }')" '
		{ e = $5 + $6 / 1e6; k = int((e - t0) / b); cnt[k]++; if (k > m) m = k; if (e > t1) t1 = e }
		END { for (k = 0; k <= m; k++) {
				w = b; if (k == m) w = t1 - t0 - m * b   # the last bucket is partial
				if (w >= b / 4) printf "%.2f %.1f\n", k * b + w / 2, cnt[k] * f / w } }' \
		"$work/log/$id.all" > "$work/series/$id.dat"
	rm -f "$work/log/$id".[0-9]*
}

# rec ID SECTION SCENARIO CONTENDER CLIENTS PAYLOAD ROWS [NOTE]: record the
# analysed run ID that moved ROWS rows (or jobs)
rec() {
	local id=$1 section=$2 scen=$3 who=$4 c=$5 p=$6 rows=$7 note=${8:-}
	series "$id" "$rows"
	awk -v OFS='\t' -v id="$id" -v sec="$section" -v sc="$scen" -v who="$who" -v c="$c" \
		-v p="$p" -v rows="$rows" -v tx="$A_TX" -v s="$A_SECS" -v p50="$A_P50" -v p95="$A_P95" \
		-v p99="$A_P99" -v note="$note" 'BEGIN {
			printf "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%.3f\t%.0f\t%.1f\t%s\t%s\t%s\t%s\n",
				id, sec, sc, who, c, p, rows, tx, s, rows / s, tx / s, p50, p95, p99, note }' \
		>> "$work/results.tsv"
	say "$(printf '%-44s %10.0f rows/s  p99 %s ms %s' "$id" \
		"$(awk -v r="$rows" -v s="$A_SECS" 'BEGIN { print r / s }')" "$A_P99" "$note")"
}

# rate ID: rows/s of a recorded measurement
rate() { awk -F'\t' -v id="$1" '$1 == id { print $10 }' "$work/results.tsv"; }

# payload literal of about 100 B or 2 KiB, for single-row scripts
literal() { sql "SELECT $1::text FROM payloads WHERE i = 1"; }
lit_small=$(literal small)
lit_big=$(literal big)
lit() { if [ "$1" = small ]; then echo "$lit_small"; else echo "$lit_big"; fi; }
plabel() { if [ "$1" = small ]; then echo "100 B"; else echo "2 KiB"; fi; }

# ---------------------------------------------------------------------------
# 1. The physical ladder, and push: one job per transaction (1 and 16
#    clients), batches of 100 and 1000 (one client).  The contenders of one
#    shape run back to back so that they see the same machine.
# ---------------------------------------------------------------------------
say "ladder and push"
echo 'SELECT 1;' > "$work/sql/select1.sql"
for c in 1 16; do
	[ "$quick" = no ] || [ $c = 1 ] || continue
	pgb "ladder_select1_c$c" $c "-T $T_PUSH" "$work/sql/select1.sql"
	analyze "ladder_select1_c$c"
	rec "ladder_select1_c$c" ladder "SELECT 1" "server" $c - "$A_TX"
done
for p in "${payloads_push[@]}"; do
	l=$(lit $p)
	echo "INSERT INTO plain_jobs (key, priority, run_at, enqueued_at, payload)
	VALUES (NULL, 0, NULL, now(), '$l');" > "$work/sql/plain_push1_$p.sql"
	echo "INSERT INTO classic_push (payload, priority, state) VALUES ('$l', 0, 'ready');" \
		> "$work/sql/classic_push1_$p.sql"
	echo "SELECT pgq.insert_event('pq_push', 'job', '$l');" > "$work/sql/pgq_push1_$p.sql"
	echo "SELECT pgqueue.queue_push('push_$p', '$l');" > "$work/sql/pgqueue_push1_$p.sql"
	for b in 100 1000; do
		echo "INSERT INTO plain_jobs (key, priority, run_at, enqueued_at, payload)
		SELECT NULL, 0, NULL, now(), $p FROM payloads WHERE i <= $b;" > "$work/sql/plain_push${b}_$p.sql"
		echo "INSERT INTO classic_push (payload, priority, state)
		SELECT $p, 0, 'ready' FROM payloads WHERE i <= $b;" > "$work/sql/classic_push${b}_$p.sql"
		echo "SELECT count(pgq.insert_event('pq_push', 'job', $p::text)) FROM payloads WHERE i <= $b;" \
			> "$work/sql/pgq_push${b}_$p.sql"
		echo "SELECT cardinality(pgqueue.queue_push_batch('push_$p',
			(SELECT array_agg($p ORDER BY i) FROM payloads WHERE i <= $b)));" \
			> "$work/sql/pgqueue_push${b}_$p.sql"
	done
	# Single-row commits are the noisiest numbers: for one job per
	# transaction every contender runs twice (the second round after all
	# others ran once; quick mode: INSERT and pgqueue with 1 client only) and
	# the better run counts.
	for shape in "1 1" "1 16" "100 1" "1000 1"; do
		read -r b c <<< "$shape"
		if [ "$b" = 1 ]; then
			if [ "$quick" = no ]; then round2="plain2 classic2 pgq2 pgqueue2"
			elif [ "$c" = 1 ]; then round2="plain2 pgqueue2"
			else round2=""; fi
		else
			round2=""
		fi
		for who in plain classic pgq pgqueue $round2; do
			again=no
			case $who in *2) again=yes; who=${who%2} ;; esac
			case $who in
				plain) name="plain table" section=ladder ;;
				classic) name="classic queue" section=push ;;
				pgq) name="PgQ" section=push ;;
				pgqueue) name="pgqueue" section=push ;;
			esac
			if [ $who = plain ]; then
				id="ladder_ins${b}_${p}"
				scen="INSERT $b row$([ "$b" = 1 ] || echo s)/tx"
			else
				id="push_${who}_${b}_${p}"
				scen="push $b job$([ "$b" = 1 ] || echo s)/tx"
			fi
			[ "$b" != 1 ] || id="${id}_c$c"
			# quick mode: 16 clients only for INSERT and pgqueue; 2 KiB only
			# for batches of 1000 into the plain table and pgqueue
			if [ "$quick" = yes ]; then
				[ "$c" = 1 ] || [ $who = plain ] || [ $who = pgqueue ] || continue
				[ "$p" = small ] || { [ "$b" = 1000 ] && { [ $who = plain ] || [ $who = pgqueue ]; }; } || continue
			fi
			note=""
			case " $round2 " in *" ${who}2 "*) note="best of 2 runs" ;; esac
			if [ $again = no ]; then
				pgb "$id" "$c" "-T $T_PUSH" "$work/sql/${who}_push${b}_$p.sql"
				analyze "$id"
				rec "$id" "$section" "$scen" "$name" "$c" "$(plabel $p)" $((A_TX * b)) "$note"
			else
				pgb "${id}_2" "$c" "-T $T_PUSH" "$work/sql/${who}_push${b}_$p.sql"
				analyze "${id}_2"
				first=$(rate "$id")
				second=$(awk -v r=$((A_TX * b)) -v s="$A_SECS" 'BEGIN { print r / s }')
				say "$(printf '%-44s %10.0f rows/s (second run; first %s)' "$id" "$second" "$first")"
				if awk -v a="$second" -v b="$first" 'BEGIN { exit !(a > b) }'; then
					mv "$work/log/${id}_2.all" "$work/log/$id.all"
					awk -F'\t' -v id="$id" '$1 != id' "$work/results.tsv" > "$work/results.tmp"
					mv "$work/results.tmp" "$work/results.tsv"
					rec "$id" "$section" "$scen" "$name" "$c" "$(plabel $p)" $((A_TX * b)) "$note"
				fi
				rm -f "$work/log/${id}_2".*
			fi
		done
	done
	# COPY from the client, one transaction of N_COPY rows
	[ "$quick" = no ] || [ "$p" = small ] || continue
	# (2 KiB rows: a tenth as many, to keep the file small)
	n_copy=$N_COPY
	[ "$p" = small ] || n_copy=$((N_COPY / 10))
	psql -d "$db" -c "\copy (SELECT NULL, 0, NULL, now(), $p FROM payloads, generate_series(1, $((n_copy / 1000)))) TO '$work/copy_$p.tsv'"
	ms=$(psql -d "$db" -c '\timing on' -c "\copy plain_jobs (key, priority, run_at, enqueued_at, payload) FROM '$work/copy_$p.tsv'" |
		sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
	rm -f "$work/copy_$p.tsv"
	awk -v p="$(plabel $p)" -v n="$n_copy" -v s="$(awk -v m="$ms" 'BEGIN { print m / 1000 }')" -v id="ladder_copy_$p" 'BEGIN {
		printf "%s\tladder\tCOPY %d rows\tplain table\t1\t%s\t%d\t1\t%.3f\t%.0f\t%.2f\t-\t-\t-\t\n",
			id, n, p, n, s, n / s, 1 / s }' >> "$work/results.tsv"
	say "ladder_copy_$p: $n_copy rows in $ms ms"
done
sql "TRUNCATE plain_jobs"
# free the space; the pushed jobs are never consumed
qdrop push_small
qdrop push_big
sql "SELECT pgq.drop_queue('pq_push')" > /dev/null
sql "DROP TABLE classic_push"

# ---------------------------------------------------------------------------
# Drain scripts.  A consumer reads every payload (as text, like a driver
# would) and finishes what it claimed.  "sep": claim and ack in separate
# transactions; "one": in one transaction.  An empty pop is harmless.
# ---------------------------------------------------------------------------
# drain_script WHO N MODE TABLE_OR_QUEUE -> path of the script
drain_script() {
	local who=$1 n=$2 m=$3 t=$4 f="$work/sql/drain_$1_$2_$3_$4.sql"
	case "$who-$m" in
		pgqueue-sep)
			cat > "$f" <<-SQL
				SELECT coalesce(array_agg(job_id)::text, '{}') AS ids,
				       coalesce(sum(octet_length(payload::text)), 0) AS bytes
				  FROM pgqueue.queue_pop('$t', $n) \gset
				SELECT pgqueue.queue_ack('$t', :ids::bigint[]) WHERE cardinality(:ids::bigint[]) > 0;
			SQL
			;;
		pgqueue-one)
			cat > "$f" <<-SQL
				SELECT pgqueue.queue_ack('$t', ids), bytes
				  FROM (SELECT array_agg(job_id) AS ids, sum(octet_length(payload::text)) AS bytes
				          FROM pgqueue.queue_pop('$t', $n)) p
				 WHERE ids IS NOT NULL;
			SQL
			;;
		classic-sep)
			cat > "$f" <<-SQL
				WITH c AS (
				  UPDATE $t q SET state = 'running', locked_until = now() + interval '30 seconds'
				   WHERE q.id IN (SELECT id FROM $t WHERE state = 'ready'
				                   ORDER BY priority DESC, id LIMIT $n FOR UPDATE SKIP LOCKED)
				  RETURNING q.id, q.payload)
				SELECT coalesce(array_agg(id)::text, '{}') AS ids,
				       coalesce(sum(octet_length(payload::text)), 0) AS bytes FROM c \gset
				DELETE FROM $t WHERE id = ANY(:ids::bigint[]);
			SQL
			;;
		classic-one)
			# in one transaction the running state is invisible to everyone,
			# so the fair classic form claims by DELETE ... RETURNING
			cat > "$f" <<-SQL
				WITH d AS (
				  DELETE FROM $t q
				   WHERE q.id IN (SELECT id FROM $t WHERE state = 'ready'
				                   ORDER BY priority DESC, id LIMIT $n FOR UPDATE SKIP LOCKED)
				  RETURNING q.id, q.payload)
				SELECT count(*), coalesce(sum(octet_length(payload::text)), 0) FROM d;
			SQL
			;;
		pgq-*)
			cat > "$f" <<-SQL
				BEGIN;
				SELECT coalesce(pgq.next_batch('$t', 'c'), 0) AS bid \gset
				\if :bid > 0
				SELECT count(*) AS n, coalesce(sum(octet_length(ev_data)), 0) AS bytes
				  FROM pgq.get_batch_events(:bid) \gset
				SELECT pgq.finish_batch(:bid);
				\endif
				COMMIT;
			SQL
			;;
	esac
	echo "$f"
}

# preload_pgqueue QUEUE N PAYLOAD: push N jobs with queue_push_batch (from
# two clients in batches of 10000 if N is a multiple of 20000), then VACUUM
# ANALYZE the block tables
# (unless a fourth argument says noanalyze)
preload_pgqueue() {
	local q=$1 n=$2 p=$3 f
	if [ $((n % 20000)) -eq 0 ]; then
		f="$work/sql/preload10k_$p.sql"
		echo "SELECT cardinality(pgqueue.queue_push_batch(:q,
			(SELECT array_agg(p.$p) FROM payloads p, generate_series(1, 10) g)));" > "$f"
		pgbench -n -M prepared -c 2 -j 2 -t $((n / 20000)) -D q="$q" -f "$f" "$db" > "$work/out/preload.txt" 2>&1
	elif [ $((n % 1000)) -eq 0 ]; then
		f="$work/sql/preload1k_$p.sql"
		echo "SELECT cardinality(pgqueue.queue_push_batch(:q,
			(SELECT array_agg(p.$p) FROM payloads p)));" > "$f"
		pgbench -n -M prepared -c 1 -t $((n / 1000)) -D q="$q" -f "$f" "$db" > "$work/out/preload.txt" 2>&1
	else # fewer than 1000
		sql "SELECT cardinality(pgqueue.queue_push_batch('$q',
			(SELECT array_agg(p.$p ORDER BY i) FROM payloads p WHERE i <= $n)))" > /dev/null
	fi
	[ "${4:-}" = noanalyze ] ||
		echo "SELECT 'VACUUM ANALYZE ' || string_agg(t, ', ') FROM pgqueue_tables('$q') t \gexec" | psql -At -d "$db"
}

# preload_classic TABLE N PAYLOAD: a fresh classic queue table with N jobs
preload_classic() {
	local t=$1 n=$2 p=$3
	sql "SELECT classic_create('$t')" "INSERT INTO $t (payload, priority, state)
		 SELECT p.$p, 0, 'ready' FROM generate_series(1, $(( (n + 999) / 1000 ))) g, payloads p
		  LIMIT $n" \
		"VACUUM ANALYZE $t" > /dev/null
}

# preload_pgq QUEUE N PAYLOAD: a fresh PgQ queue with consumer c and N
# events pushed 1000 per transaction, the ticker called after each push
preload_pgq() {
	local q=$1 n=$2 p=$3 f="$work/sql/pgq_preload_$3.sql"
	sql "SELECT pgq.create_queue('$q');
		 SELECT pgq.set_queue_config('$q', 'ticker_max_count', '1000');
		 SELECT pgq.register_consumer('$q', 'c')" > /dev/null
	cat > "$f" <<-SQL
		SELECT count(pgq.insert_event(:q, 'job', $p::text)) FROM payloads;
		SELECT pgq.ticker(:q);
	SQL
	pgbench -n -M prepared -c 1 -t $((n / 1000)) -D q="$q" -f "$f" "$db" > "$work/out/preload.txt" 2>&1
}

# ---------------------------------------------------------------------------
# 3. Drain a fresh queue (backlog about 0: a small preload, drained to empty
#    by a fixed number of pops per consumer, a few of them empty at the end)
# ---------------------------------------------------------------------------
say "drain, fresh queues"
k=0
for d in "${drains[@]}"; do
	read -r n m c p <<< "$d"
	if [ "$n" = 1 ]; then N=$N_FRESH_ONE; else N=$N_FRESH_BATCH; fi
	# pops per consumer: enough for every job; the last ones may come back short
	per=$(( (N + n * c - 1) / (n * c) ))
	mname=$([ "$m" = sep ] && echo "separate tx" || echo "one tx")
	for who in classic pgqueue; do
		k=$((k + 1))
		id="drain_fresh_${who}_n${n}_${m}_c${c}_$p"
		if [ $who = pgqueue ]; then
			q="fresh$k"
			sql "SELECT pgqueue.queue_create('$q', block_size => 100000)" > /dev/null
			preload_pgqueue "$q" "$N" "$p"
			checkpoint
			pgb "$id" "$c" "-t $per" "$(drain_script pgqueue "$n" "$m" "$q")"
			done_n=$(sql "SELECT pgqueue_acked('$q')")
			qdrop "$q"
			name=pgqueue
		else
			preload_classic classic "$N" "$p"
			checkpoint
			pgb "$id" "$c" "-t $per" "$(drain_script classic "$n" "$m" classic)"
			done_n=$((N - $(sql "SELECT count(*) FROM classic")))
			name="classic queue"
		fi
		note=""
		[ "$done_n" -eq "$N" ] || note="$((N - done_n)) of $N jobs left"
		analyze "$id"
		rec "$id" drain-fresh "drain n=$n, $mname" "$name" "$c" "$(plabel "$p")" "$done_n" "$note"
	done
done

# pgqueue once more without VACUUM ANALYZE after the load: the block tables
# then have no statistics and the planner picks other plans for pop (full
# mode only)
if [ "$quick" = no ]; then
	id=drain_fresh_pgqueue_noanalyze_n100_sep_c4_small
	N=$N_FRESH_BATCH
	per=$(( (N + 399) / 400 ))
	sql "SELECT pgqueue.queue_create('noanalyze', block_size => 100000)" > /dev/null
	preload_pgqueue noanalyze "$N" small noanalyze
	checkpoint
	pgb "$id" 4 "-t $per" "$(drain_script pgqueue 100 sep noanalyze)"
	done_n=$(sql "SELECT pgqueue_acked('noanalyze')")
	qdrop noanalyze
	analyze "$id"
	rec "$id" drain-fresh "drain n=100, separate tx, no ANALYZE after the load" pgqueue 4 "100 B" "$done_n"
fi

# PgQ: one consumer drains batches (ticks every 1000 events)
for p in "${payloads_push[@]}"; do
	[ "$quick" = no ] || [ "$p" = small ] || continue
	q="pq_fresh_$p"
	N=$N_FRESH_BATCH
	preload_pgq "$q" "$N" "$p"
	checkpoint
	id="drain_fresh_pgq_$p"
	pgb "$id" 1 "-t $((N / 1000 + 3))" "$(drain_script pgq 0 one "$q")"
	done_n=$(sql "SELECT pgq_done('$q', 'c')")   # a fresh queue: events 1 to N
	analyze "$id"
	note="batches of about 1000 events (one tick per 1000)"
	[ "$done_n" -eq "$N" ] || note="$note; $((N - done_n)) of $N left"
	rec "$id" drain-fresh "drain batches (next_batch/get_batch_events/finish_batch)" "PgQ" 1 "$(plabel "$p")" "$done_n" "$note"
	sql "SELECT pgq.unregister_consumer('$q', 'c'); SELECT pgq.drop_queue('$q')" > /dev/null
done

# ---------------------------------------------------------------------------
# 4. Drain at a large backlog: n = 100, separate transactions, 4 consumers
# ---------------------------------------------------------------------------
say "drain, large backlog ($N_BIG jobs)"
t0=$(now_ns)
sql "SELECT pgqueue.queue_create('big', block_size => 100000)" > /dev/null
preload_pgqueue big "$N_BIG" small
t1=$(now_ns)
say "loaded pgqueue: $N_BIG jobs in $(( (t1 - t0) / 1000000 )) ms"
preload_classic classic_big "$N_BIG" small
t2=$(now_ns)
say "loaded classic: $N_BIG jobs in $(( (t2 - t1) / 1000000 )) ms"
echo "$N_BIG $(( (t1 - t0) / 1000000 )) $(( (t2 - t1) / 1000000 ))" > "$work/bigload.txt"
checkpoint
id=drain_big_pgqueue_n100_sep_c4_small
pgb "$id" 4 "-T $T_BIG" "$(drain_script pgqueue 100 sep big)"
done_n=$(sql "SELECT pgqueue_acked('big')")
analyze "$id"
rec "$id" drain-big "drain n=100, separate tx, backlog $N_BIG" pgqueue 4 "100 B" "$done_n"
qdrop big
checkpoint
id=drain_big_classic_n100_sep_c4_small
pgb "$id" 4 "-T $T_BIG" "$(drain_script classic 100 sep classic_big)"
done_n=$((N_BIG - $(sql "SELECT count(*) FROM classic_big")))
analyze "$id"
rec "$id" drain-big "drain n=100, separate tx, backlog $N_BIG" "classic queue" 4 "100 B" "$done_n"
sql "DROP TABLE classic_big"

# ---------------------------------------------------------------------------
# 5. Drain while one transaction holds xmin for T_XMIN seconds
# ---------------------------------------------------------------------------
say "drain, held xmin ($T_XMIN s)"
# The transaction starts first; the two queues are loaded while it already
# holds xmin (so even their VACUUM cannot mark the new rows all-visible), then
# each contender drains for half of the time that is left.
printf 'BEGIN;\nSELECT txid_current();\nSELECT pg_sleep(%s);\nCOMMIT;\n' "$T_XMIN" |
	psql -At -d "$db" > /dev/null &
holder=$!
for _ in $(seq 100); do
	[ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND query LIKE '%pg_sleep%'")" = 1 ] && break
	sleep 0.05
done
hold_start=$(now_ns)
d_max=$(( (T_XMIN - 2) / 2 ))
round20k() { awk -v r="$1" -v s="$2" 'BEGIN { n = int(r * s * 1.3 / 20000 + 1) * 20000; if (n < 40000) n = 40000; print n }'; }
nx_pgqueue=$(round20k "$(rate drain_fresh_pgqueue_n100_sep_c4_small)" "$d_max")
nx_classic=$(round20k "$(rate drain_fresh_classic_n100_sep_c4_small)" "$d_max")
sql "SELECT pgqueue.queue_create('xmin', block_size => 100000)" > /dev/null
preload_pgqueue xmin "$nx_pgqueue" small
preload_classic classic_xmin "$nx_classic" small
# as before every other drain, a checkpoint, so that neither drain pays for
# writing out what the loads (the other contender's too) left dirty; the
# second one's time is kept aside (at most a tenth of T_XMIN)
checkpoint
d_x=$(( (T_XMIN * 1000 * 9 / 10 - ($(now_ns) - hold_start) / 1000000 - 1500) / 2000 ))
[ "$d_x" -ge 2 ] || d_x=2
say "loaded $nx_pgqueue and $nx_classic jobs under the held xmin; $d_x s per drain"
id=drain_xmin_pgqueue_n100_sep_c4_small
pgb "$id" 4 "-T $d_x" "$(drain_script pgqueue 100 sep xmin)"
done_n=$(sql "SELECT pgqueue_acked('xmin')")
analyze "$id"
note=""
[ "$done_n" -lt "$nx_pgqueue" ] || note="backlog ran out"
rec "$id" drain-xmin "drain n=100, separate tx, xmin held" pgqueue 4 "100 B" "$done_n" "$note"
checkpoint
id=drain_xmin_classic_n100_sep_c4_small
pgb "$id" 4 "-T $d_x" "$(drain_script classic 100 sep classic_xmin)"
done_n=$((nx_classic - $(sql "SELECT count(*) FROM classic_xmin")))
analyze "$id"
note=""
[ "$done_n" -lt "$nx_classic" ] || note="backlog ran out"
rec "$id" drain-xmin "drain n=100, separate tx, xmin held" "classic queue" 4 "100 B" "$done_n" "$note"
sleep 1   # let the backends' table statistics arrive
sql "SELECT 'classic table ' ||
		(SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'classic_xmin') ||
		', pgqueue_data ' || (SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables WHERE schemaname = 'pgqueue_data')" \
	> "$work/xmin.txt"
cat "$work/xmin.txt"
wait "$holder"
say "the xmin-holding transaction ended after $(( ($(now_ns) - hold_start) / 1000000 )) ms"
qdrop xmin
sql "DROP TABLE classic_xmin"
say "dropped the held-xmin queues"

# ---------------------------------------------------------------------------
# 6. Sustained run: push and drain at once, in a database of its own
# ---------------------------------------------------------------------------
say "sustained run ($T_SUST s)"
sdb=sustained
ssql() { psql -At -d "$sdb" -c "$1"; }
psql -d postgres -c "CREATE DATABASE $sdb"
psql -d "$sdb" -c "$payloads_sql"
say "created database $sdb"
psql -d "$sdb" -v retention="$RETENTION" <<'SQL'
CREATE EXTENSION pgqueue;
SELECT pgqueue.queue_create('s', block_size => 100000, retention => :'retention') \g /dev/null

/* exact count of jobs not yet acked, over the blocks that are not done */
CREATE FUNCTION unfinished(q text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	b record;
	c bigint;
	total bigint;
BEGIN
	LOOP
		BEGIN
			total := 0;
			FOR b IN SELECT bl.queue_id, bl.block_no FROM pgqueue.block bl JOIN pgqueue.queue qu USING (queue_id)
					  WHERE qu.name = q AND bl.state <> 'done' LOOP
				EXECUTE format('SELECT (SELECT count(*) FROM pgqueue_data.%I)
									 - (SELECT count(*) FROM pgqueue_data.%I WHERE state = ''d'')
									 - (SELECT coalesce(sum(n), 0) FROM pgqueue_data.%I WHERE kind = ''d'')',
							   'j_' || b.queue_id || '_' || b.block_no, 's_' || b.queue_id || '_' || b.block_no,
							   'c_' || b.queue_id || '_' || b.block_no)
				   INTO c;
				total := total + c;
			END LOOP;
			RETURN total;
		EXCEPTION WHEN undefined_table THEN
			/* the worker compacted a block away while it was counted: again */
		END;
	END LOOP;
END $$;

/* jobs pushed and acked so far: pgqueue's shared-memory counters, or else
 * table statistics (job rows inserted; status rows inserted / 2, a claim
 * and an ack per job) */
CREATE FUNCTION progress(OUT pushed bigint, OUT acked bigint) LANGUAGE plpgsql AS $$
BEGIN
	IF to_regprocedure('pgqueue_internal._counters(text)') IS NOT NULL THEN
		EXECUTE 'SELECT pushed, acked FROM pgqueue_internal._counters(''s'')' INTO pushed, acked;
	END IF;
	IF pushed IS NULL THEN
		SELECT coalesce(sum(n_tup_ins) FILTER (WHERE relname LIKE 'j\_%'), 0),
			   coalesce(sum(n_tup_ins) FILTER (WHERE relname LIKE 's\_%'), 0) / 2
		  INTO pushed, acked
		  FROM pg_stat_user_tables WHERE schemaname = 'pgqueue_data';
	END IF;
END $$;

/* one sample: progress, bytes of the live block tables (j_, s_) and of the
 * archive (a_), dead tuples in the data schema, blocks */
CREATE VIEW sample AS
SELECT p.pushed, p.acked,
	   (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c
		 WHERE c.relnamespace = 'pgqueue_data'::regnamespace AND c.relkind = 'r'
		   AND c.relname ~ '^[js]_') AS live_bytes,
	   (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c
		 WHERE c.relnamespace = 'pgqueue_data'::regnamespace AND c.relkind = 'r'
		   AND c.relname ~ '^a_') AS archive_bytes,
	   (SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables
		 WHERE schemaname = 'pgqueue_data') AS dead,
	   (SELECT count(*) FROM pgqueue.block) AS blocks,
	   (SELECT count(*) FROM pgqueue.block WHERE state = 'done') AS blocks_done
  FROM progress() p;
SQL

# producer: batches of 100 at a fixed rate, about 55 % of what 4 consumers
# drained in the runs above (the lowest of pgqueue's fresh, large-backlog and
# held-xmin rates), so that the backlog stays near zero
tx_rate=$(awk -F'\t' '$1 ~ /^drain_(fresh|big|xmin)_pgqueue_n100_sep_c4_small$/ { if (!m || $10 < m) m = $10 }
	END { t = int(m * 0.55 / 100); if (t < 1) t = 1; print t }' "$work/results.tsv")
tail_s=$([ "$mode" = quick ] && echo 1 || echo 15)
echo "SELECT cardinality(pgqueue.queue_push_batch('s', (SELECT array_agg(small) FROM payloads WHERE i <= 100)));" \
	> "$work/sql/sust_push.sql"
# maintenance: the worker if it runs, else maintain() every I_MAINT seconds
worker=$(ssql "SELECT coalesce(current_setting('pgqueue.worker', true), 'off')
				 || ' ' || coalesce(current_setting('pgqueue.naptime', true), '-')")
if [ "${worker%% *}" = on ]; then
	maint="the maintenance worker (pgqueue.naptime $(echo "$worker" | cut -d' ' -f2))"
else
	maint="pgqueue.maintain() every $I_MAINT s from a pgbench script"
fi
printf 'SELECT pgqueue.maintain();\n\\sleep %s s\n' "$I_MAINT" > "$work/sql/sust_maint.sql"
spgb() { # like pgb, on the sustained database, no transaction log
	local id=$1 c=$2 lim=$3 f=$4
	shift 4
	# shellcheck disable=SC2086
	pgbench -n -M prepared -c "$c" -j $((c < 2 ? c : 2)) $lim -f "$f" "$@" "$sdb" > "$work/out/$id.txt" 2>&1 ||
		{ echo "pgbench run $id failed:" >&2; cat "$work/out/$id.txt" >&2; return 1; }
}
printf 't\tpushed\tdrained\tbacklog\tlive_bytes\tarchive_bytes\tdead\tblocks\tblocks_done\n' > "$work/sustained.tsv"
sample() { # sample SECONDS-SINCE-START
	psql -At -F $'\t' -d "$sdb" -c "SELECT $1, pushed, acked, pushed - acked, live_bytes,
		archive_bytes, dead, blocks, blocks_done FROM sample" >> "$work/sustained.tsv"
}
s_start=$(now_ns)
spgb sust_push 1 "-T $T_SUST" "$work/sql/sust_push.sql" -R "$tx_rate" &
p_push=$!
spgb sust_drain 4 "-T $((T_SUST + tail_s))" "$(drain_script pgqueue 100 sep s)" &
p_drain=$!
p_maint=
if [ "${worker%% *}" != on ]; then
	spgb sust_maint 1 "-T $((T_SUST + tail_s))" "$work/sql/sust_maint.sql" &
	p_maint=$!
fi
sample 0
next=$I_SUST
while kill -0 "$p_drain" 2> /dev/null; do
	el=$(( ($(now_ns) - s_start) / 1000000 ))
	if [ "$el" -ge $((next * 1000)) ]; then
		sample "$next"
		next=$((next + I_SUST))
	fi
	sleep 0.1
done
# shellcheck disable=SC2086
wait $p_push $p_drain $p_maint
# anything left: drain it, for at most a fifth of the run's length
tail_end=$(( $(now_ns) + T_SUST * 200000000 ))
while :; do
	left=$(ssql "SELECT unfinished('s')")
	[ "$left" -gt 0 ] && [ "$(now_ns)" -lt "$tail_end" ] || break
	spgb sust_drain_tail 4 "-T 1" "$(drain_script pgqueue 100 sep s)"
done
# then give maintenance the retention period and a few rounds to bring the
# storage back (until at most two blocks are left)
settle_end=$(( $(now_ns) + (SETTLE_S * 1000000000) ))
while [ "$(now_ns)" -lt "$settle_end" ]; do
	[ "${worker%% *}" = on ] || ssql "SELECT pgqueue.maintain()" > /dev/null
	[ "$(ssql "SELECT count(*) FROM pgqueue.block")" -le 2 ] && break
	sleep 1
done
[ "${worker%% *}" = on ] || ssql "SELECT pgqueue.maintain()" > /dev/null
sleep 1   # table statistics of the finished backends
s_secs=$(( ($(now_ns) - s_start) / 1000000000 ))
sample "$s_secs"
{
	echo "tx_rate $tx_rate"
	echo "jobs_per_s_target $((tx_rate * 100))"
	echo "seconds $T_SUST"
	echo "retention $RETENTION"
	echo "maintenance $maint"
	echo "pushed $(ssql "SELECT pushed FROM progress()")"
	echo "unfinished $(ssql "SELECT unfinished('s')")"
	echo "progress $(ssql "SELECT CASE WHEN to_regprocedure('pgqueue_internal._counters(text)') IS NULL
		THEN 'table statistics (acked = status rows / 2)' ELSE 'pgqueue''s shared-memory counters' END")"
	psql -At -F ' ' -d "$sdb" -c "SELECT 'blocks ' || blocks, 'blocks_done ' || blocks_done,
		'bytes ' || live_bytes, 'archive_bytes ' || archive_bytes, 'dead ' || dead FROM sample" |
		tr ' ' '\n' | paste -d' ' - -
	echo "blocks_by_state $(ssql "SELECT string_agg(state || ':' || n, ',') FROM
		(SELECT state, count(*) n FROM pgqueue.block GROUP BY state ORDER BY state) x")"
} > "$work/final.txt"
cat "$work/final.txt"
echo "load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$work/machine.txt"
say "done"
