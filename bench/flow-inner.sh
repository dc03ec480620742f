#!/usr/bin/env bash
# bench/flow-inner.sh: body of flow.sh, run inside pg_virtualenv.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
ms() { date +%s%3N; }
N=$FLOW_JOBS
consumers=4
n=100
# a lease longer than any pop: a slow pop must show as a slow drain, not as
# expired leases that abort the consumers
lease='5 minutes'
max_s=${FLOW_MAX_S:-40}
repeat=${FLOW_REPEAT:-3}
max_ms=$((max_s * 1000))
variants="plain ${FLOW_VARIANTS//plain/}"

psql -c 'CREATE EXTENSION pgqueue'
[ "$FLOW_STATEMENTS" = 1 ] && psql -c 'CREATE EXTENSION pg_stat_statements'
echo "jobs $N per variant and run, $repeat runs each; $consumers consumers, pop n=$n + ack in separate transactions;" \
	"$(psql -At -c "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings
	 WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers', 'pgqueue.worker',
					'track_commit_timestamp')")"
echo "VACUUM ANALYZE before each drain: $([ "${FLOW_ANALYZE:-1}" = 1 ] && echo yes || echo no);" \
	"a drain stops after $max_s s"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

# run VARIANT REPETITION: push and drain one fresh queue; appends a line to
# $work/results
run() {
	local v=$1 q=flow_$1_$2 keys=NULL tenants=NULL
	case $v in
		keys | both) keys="array_agg('k' || (g % 1000) ORDER BY g)" ;;
	esac
	case $v in
		tenants | both) tenants="array_agg('t' || (g % 50) ORDER BY g)" ;;
	esac
	psql -c "SELECT pgqueue.queue_create('$q')" > /dev/null
	: > "$work/push-$v.sql"
	for ((lo = 1; lo <= N; lo += 1000)); do
		hi=$((lo + 999 < N ? lo + 999 : N))
		echo "SELECT cardinality(pgqueue.queue_push_batch('$q',
	array_agg(jsonb_build_object('n', g, 'body', repeat('x', 64)) ORDER BY g), $keys, NULL, NULL,
	$tenants)) FROM generate_series($lo, $hi) g;" >> "$work/push-$v.sql"
	done
	cat > "$work/drain-$v.sql" <<SQL
SELECT coalesce(array_agg(job_id)::text, '{}') AS ids FROM pgqueue.queue_pop('$q', $n, '$lease') \\gset
SELECT pgqueue.queue_ack('$q', :ids::bigint[]) WHERE cardinality(:ids::bigint[]) > 0;
SQL

	local t0 t1 t2 left rounds=0 pops=0 per
	t0=$(ms)
	psql -f "$work/push-$v.sql" > /dev/null
	t1=$(ms)
	# as autovacuum would soon do (pop's plans depend on the statistics)
	if [ "${FLOW_ANALYZE:-1}" = 1 ]; then
		psql -c 'VACUUM ANALYZE'
	fi
	psql -c 'CHECKPOINT'
	[ "$FLOW_STATEMENTS" = 1 ] && psql -c 'SELECT pg_stat_statements_reset()' -c 'SELECT pg_stat_reset()' > /dev/null

	# drain: rounds of pgbench until everything is acked; each round asks for
	# the pops that the jobs left would need if every pop got n.  A drain
	# that runs past FLOW_MAX_S is stopped and reported as incomplete, with
	# the rate of what it acked.
	left=$N
	local stopped=""
	t2=$(ms)
	while ((left > 0)); do
		local budget_ms=$((t2 + max_ms - $(ms)))
		if ((budget_ms <= 0)); then
			stopped=" (stopped after ${max_s} s: $((N - left)) acked)"
			break
		fi
		per=$(((left + consumers * n - 1) / (consumers * n)))
		rounds=$((rounds + 1))
		if ! timeout "$((budget_ms / 1000)).$(printf %03d $((budget_ms % 1000)))" \
			pgbench -n -M prepared -c $consumers -j 2 -t $per -f "$work/drain-$v.sql" \
			postgres > "$work/drain-$v.log" 2>&1; then
			# out of time (or failed): end the consumers' sessions as well
			psql -At -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
						  WHERE application_name = 'pgbench'" > /dev/null
			while [ "$(psql -At -c "SELECT count(*) FROM pg_stat_activity
									 WHERE application_name = 'pgbench'")" != 0 ]; do
				sleep 0.1
			done
			grep -q 'aborted' "$work/drain-$v.log" && { cat "$work/drain-$v.log" >&2; exit 1; }
			pops=-1	# unknown
		elif ((pops >= 0)); then
			pops=$((pops + per * consumers))
		fi
		left=$((N - $(psql -At -c "SELECT acked FROM pgqueue_internal._counters('$q')")))
	done
	t3=$(ms)
	if [ "$FLOW_STATEMENTS" = 1 ]; then
		psql -c "SELECT calls, round(total_exec_time) AS ms, round(mean_exec_time::numeric, 3) AS mean_ms,
						rows, shared_blks_hit AS hit,
						left(regexp_replace(query, '\s+', ' ', 'g'), 90) AS query
				   FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 8" \
			-c "SELECT relname, seq_scan, seq_tup_read, idx_scan, n_live_tup
				  FROM pg_stat_user_tables WHERE relname ~ '^[jsc]_' AND seq_scan + idx_scan > 0"
	fi

	# exactly once: one claim and one success per job, whether by a claim
	# record (a range of a lane: the jobs in it without a status row of seq
	# 1; an ack record names them, or takes all that were left) or by status
	# rows ('e', 'd'); holes (jobs a range passed over, "available") are not
	# claims.  Key order, from commit timestamps: within each key, in job id
	# order, a job's claim committed after the previous job's ack (so one job
	# of a key in flight at a time, claimed in id order); "ties" (the same
	# microsecond) are only counted.
	local check jobs claimed acked rows disorder ties nkeys ntenants ok=ok
	check=$(psql -At -F' ' <<SQL
WITH q AS (SELECT queue_id FROM pgqueue.queue WHERE name = '$q'),
j AS (SELECT j.* FROM pgqueue_data.job_store j, q WHERE j.queue_id = q.queue_id),
s AS (SELECT s.*, pg_xact_commit_timestamp(s.xmin) AS committed
		FROM pgqueue_data.status_store s, q WHERE s.queue_id = q.queue_id),
c AS (SELECT c.*, pg_xact_commit_timestamp(c.xmin) AS committed
		FROM pgqueue_data.claim_store c, q WHERE c.queue_id = q.queue_id),
r AS (SELECT j.job_id, c.claim_id, pg_xact_commit_timestamp(c.xmin) AS committed
		FROM j CROSS JOIN LATERAL (
			SELECT c.claim_id, c.hi, c.xmin FROM pgqueue_data.claim_store c
			 WHERE c.queue_id = j.queue_id AND c.seq = 0 AND c.priority = j.priority
			   AND coalesce(c.tenant, '') = coalesce(j.tenant, '') AND c.lo <= j.job_id
			 ORDER BY c.lo DESC LIMIT 1) c
	   WHERE c.hi >= j.job_id
		 AND NOT EXISTS (SELECT 1 FROM s WHERE s.job_id = j.job_id AND s.seq = 1)),
e AS (SELECT s.job_id, s.committed FROM s WHERE s.state = 'e'
	  UNION ALL
	  SELECT r.job_id, r.committed FROM r),
d AS (SELECT s.job_id, s.committed FROM s WHERE s.state = 'd'
	  UNION ALL
	  (SELECT DISTINCT ON (r.job_id) r.job_id, a.committed
		 FROM r JOIN c a ON a.claim_id = r.claim_id AND a.kind = 'd'
						 AND (a.ids IS NULL OR r.job_id = ANY (a.ids))
		ORDER BY r.job_id, a.seq)),
ee AS (SELECT job_id, max(committed) AS claimed FROM e GROUP BY job_id),
dd AS (SELECT job_id, max(committed) AS acked FROM d GROUP BY job_id),
k AS (SELECT j.job_id, j.key, ee.claimed, dd.acked
		FROM j LEFT JOIN ee USING (job_id) LEFT JOIN dd USING (job_id)
	   WHERE j.key IS NOT NULL),
o AS (SELECT claimed, lag(acked) OVER w AS prev_acked, lag(job_id) OVER w AS prev_id
		FROM k WINDOW w AS (PARTITION BY key ORDER BY job_id))
SELECT (SELECT count(*) FROM j),
	   (SELECT count(DISTINCT job_id) FROM e),
	   (SELECT count(DISTINCT job_id) FROM d),
	   (SELECT count(*) FROM e) + (SELECT count(*) FROM d),
	   (SELECT count(*) FROM o WHERE claimed IS NOT NULL AND prev_id IS NOT NULL
										AND (prev_acked IS NULL OR claimed < prev_acked)),
	   (SELECT count(*) FROM o WHERE claimed = prev_acked),
	   (SELECT count(DISTINCT key) FROM j),
	   (SELECT count(DISTINCT tenant) FROM j)
SQL
	)
	read -r jobs claimed acked rows disorder ties nkeys ntenants <<< "$check"
	if [ -n "$stopped" ]; then
		# the stopped consumers' last claims rolled back or stay executing
		((rows == claimed + acked && acked <= claimed)) ||
			ok="FAIL: claimed $claimed, acked $acked, claims and acks $rows"
	elif ((jobs != N || claimed != N || acked != N || rows != 2 * N)); then
		ok="FAIL: jobs $jobs, claimed $claimed, acked $acked, claims and acks $rows (want $N, $N, $N, $((2 * N)))"
	fi
	if ((disorder > 0)); then
		ok="FAIL: $disorder claims before the previous job of their key was acked"
	fi
	((ties == 0)) || ok="$ok ($ties claims committed at the same microsecond as the ack before)"
	echo "$v $((t1 - t0)) $((t3 - t2)) $rounds $pops $nkeys $ntenants $acked $ok$stopped" \
		>> "$work/results"
	echo "$v: pushed in $((t1 - t0)) ms, $acked acked in $((t3 - t2)) ms, $rounds rounds, $ok$stopped"
}

# the variants take turns, so that drift of the machine's load hits each
for ((r = 1; r <= repeat; r++)); do
	for v in $variants; do
		run "$v" "$r"
	done
done
echo "load after:  $(cut -d' ' -f1-3 /proc/loadavg)"

echo
awk -v N="$N" '
	function median(v,    i, j, k, t, a) {
		for (i = 1; i <= cnt[v]; i++) a[i] = rate[v, i]
		for (i = 2; i <= cnt[v]; i++)
			for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
		k = int((cnt[v] + 1) / 2)
		return cnt[v] % 2 ? a[k] : (a[k] + a[k + 1]) / 2
	}
	BEGIN {
		printf "%-8s %5s %7s %9s %8s %9s %6s %8s %6s  %s\n", "variant", "keys", "tenants",
			"push j/s", "drain s", "jobs/s", "ratio", "jobs/pop", "rounds", "checks"
	}
	{
		v = $1; push = N * 1000 / $2; r = $8 * 1000 / $3
		if (!(v in cnt)) order[++nv] = v
		rate[v, ++cnt[v]] = r
		if (v == "plain") base[cnt[v]] = r
		jp = $5 > 0 ? sprintf("%.1f", $8 / $5) : "-"
		ok = $9; for (i = 10; i <= NF; i++) ok = ok " " $i
		printf "%-8s %5d %7d %9.0f %8.2f %9.0f %6.2f %8s %6d  %s\n", v, $6, $7, push,
			$3 / 1000, r, r / base[cnt[v]], jp, $4, ok
	}
	END {
		printf "\nmedian of %d runs per variant:\n", cnt["plain"]
		for (i = 1; i <= nv; i++) {
			v = order[i]; m = median(v)
			if (v == "plain") mb = m
			printf "%-8s %9.0f jobs/s  ratio %.2f\n", v, m, m / mb
			if (v != "plain" && m / mb < 0.85) miss = miss " " v
		}
		print (miss == "" ? "target (ratio >= 0.85): PASS" : "target (ratio >= 0.85): MISS:" miss)
	}
' "$work/results"
if grep -q FAIL "$work/results"; then
	exit 1
fi
