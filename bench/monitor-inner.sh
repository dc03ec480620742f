#!/usr/bin/env bash
# bench/monitor-inner.sh: body of monitor.sh, run inside pg_virtualenv (or
# against any server the PG* variables name, with pgqueue preloaded).
set -euo pipefail
backlog=$1
drain_jobs=${MONITOR_DRAIN:-400000}
period=${MONITOR_PERIOD:-5}
budget=${MONITOR_BUDGET_MS:-1000}
db=${PGDATABASE:-postgres}
work=$(mktemp -d)
pollers=()
cleanup() {
	touch "$work/stop" 2>/dev/null || true
	for p in "${pollers[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
ms() { date +%s%3N; }

psql -c 'CREATE EXTENSION IF NOT EXISTS pgqueue' >/dev/null
psql -c "SELECT pgqueue.queue_create('mon')" >/dev/null

t0=$(ms)
cat > "$work/push.sql" <<'SQL'
SELECT pgqueue.queue_push_batch('mon',
	(SELECT array_agg(jsonb_build_object('n', g, 'body', repeat('x', 80))) FROM generate_series(1, 1000) g));
SQL
pgbench -n -c 2 -j 2 -t $((backlog / 2000)) -f "$work/push.sql" "$db" >/dev/null
t1=$(ms)
pushed=$(psql -At -c "SELECT last_value FROM pgqueue_data.seq_$(psql -At -c "SELECT queue_id FROM pgqueue.queue WHERE name = 'mon'")")
echo "backlog: $pushed jobs pushed in $(((t1 - t0) / 1000)) s"
psql -c 'CHECKPOINT' >/dev/null

cat > "$work/drain.sql" <<'SQL'
SELECT pgqueue.queue_ack('mon', ids, atts)
  FROM (SELECT array_agg(job_id) AS ids, array_agg(attempt) AS atts
		  FROM pgqueue.queue_pop('mon', 100)) p
 WHERE ids IS NOT NULL;
SQL

# drain: take $drain_jobs jobs with 4 consumers, print jobs/s
drain() {
	local a b
	a=$(ms)
	pgbench -n -c 4 -j 2 -t $((drain_jobs / 400)) -f "$work/drain.sql" "$db" >/dev/null
	b=$(ms)
	echo $((drain_jobs * 1000 / (b - a)))
}

# poller <n>: SELECT * FROM pgqueue.stats every $period s, until the file
# $work/stop appears; each poll's ms
poller() {
	local n=$1 a b wait
	while [ ! -e "$work/stop" ]; do
		a=$(ms)
		psql -c 'SELECT * FROM pgqueue.stats' >/dev/null
		b=$(ms)
		echo $((b - a)) >>"$work/polls.$n"
		wait=$((period * 1000 - (b - a)))
		[ $wait -gt 0 ] && sleep "$(awk "BEGIN {print $wait / 1000}")"
	done
}

r1=$(drain)
echo "drain 1, unpolled: $r1 jobs/s"
for n in 1 2 3 4 5; do
	poller $n &
	pollers+=($!)
	sleep 0.2
done
r2=$(drain)
echo "drain 2, polled by 5 sessions: $r2 jobs/s"
# let the polls under way end (their times count), then stop the pollers
touch "$work/stop"
a=$(ms)
wait "${pollers[@]}" 2>/dev/null || true
pollers=()
echo "the pollers' last polls ended $(( ($(ms) - a) / 1000 )) s after the drain"
r3=$(drain)
echo "drain 3, unpolled: $r3 jobs/s"

cat "$work"/polls.* 2>/dev/null | sort -n >"$work/polls" || true
n=$(wc -l <"$work/polls")
if [ "$n" -gt 0 ]; then
	med=$(awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}' "$work/polls")
	max=$(tail -1 "$work/polls")
	over=$(awk -v b="$budget" '$1 > b' "$work/polls" | wc -l)
	echo "polls of pgqueue.stats: $n, median $med ms, max $max ms (budget $budget ms: $over over) $( [ "$over" -eq 0 ] && echo PASS || echo MISS)"
else
	echo "polls of pgqueue.stats: none MISS"
fi
echo "polled / unpolled drain rate: $(awk "BEGIN {printf \"%.3f\", $r2 / (($r1 + $r3) / 2)}") (target >= 0.95) $(awk "BEGIN {print ($r2 / (($r1 + $r3) / 2) >= 0.95) ? \"PASS\" : \"MISS\"}")"
psql -At -c "SELECT 'jobs acked: ' || count(*) || ', every one once: ' || coalesce(bool_and(n = 1), true)
	FROM (SELECT count(*) n FROM pgqueue.job_history WHERE queue = 'mon' AND state = 'succeeded' GROUP BY job_id) s"
