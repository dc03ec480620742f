#!/usr/bin/env bash
# bench/cost-n-inner.sh: body of cost-n.sh, run inside pg_virtualenv.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
B=$COST_BACKLOG
psql -c 'CREATE EXTENSION pgqueue'
echo "backlog $B jobs a queue; one client, pop n then ack in a separate transaction;" \
	"$(psql -At -c "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings
	 WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers', 'pgqueue.worker')")"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-8s %6s %6s %10s %9s %8s  %s\n' variant n pops jobs/pop "us/job" ratio checks
for v in $COST_VARIANTS; do
	keys=NULL tenants=NULL
	case $v in keys | both) keys="array_agg('k' || (g % 1000) ORDER BY g)" ;; esac
	case $v in tenants | both) tenants="array_agg('t' || (g % 50) ORDER BY g)" ;; esac
	base=
	for n in 100 1000 10000; do
		q=cost_${v}_$n
		psql -c "SELECT pgqueue.queue_create('$q', default_lease => '1 hour')" > /dev/null
		for ((lo = 1; lo <= B; lo += 10000)); do
			hi=$((lo + 9999 < B ? lo + 9999 : B))
			echo "SELECT cardinality(pgqueue.queue_push_batch('$q',
	array_agg(jsonb_build_object('n', g, 'body', repeat('x', 64)) ORDER BY g), $keys, NULL, NULL,
	$tenants)) FROM generate_series($lo, $hi) g;"
		done | psql > /dev/null
		psql -c 'VACUUM ANALYZE' -c 'CHECKPOINT'
		cat > "$work/pa.sql" <<SQL
SELECT coalesce(array_agg(job_id)::text, '{}') AS ids FROM pgqueue.queue_pop('$q', $n) \\gset
SELECT pgqueue.queue_ack('$q', :ids::bigint[]) WHERE cardinality(:ids::bigint[]) > 0;
SQL
		pops=$((30000 / n))
		((pops >= 3)) || pops=3
		t0=$(date +%s%6N)
		pgbench -n -M prepared -c 1 -t $pops -f "$work/pa.sql" postgres > "$work/pgbench.log" 2>&1 ||
			{ cat "$work/pgbench.log" >&2; exit 1; }
		t1=$(date +%s%6N)
		read -r popped acked <<< "$(psql -At -F' ' -c "SELECT popped, acked FROM pgqueue_internal._counters('$q')")"
		check=ok
		((popped == acked && acked > 0)) || check="FAIL: popped $popped, acked $acked"
		us=$(awk -v t=$((t1 - t0)) -v j="$acked" 'BEGIN { printf "%.2f", t / j }')
		[ -n "$base" ] || base=$us
		printf '%-8s %6d %6d %10.1f %9s %8s  %s\n' "$v" "$n" "$pops" \
			"$(awk -v a="$acked" -v p=$pops 'BEGIN { print a / p }')" "$us" \
			"$(awk -v u="$us" -v b="$base" 'BEGIN { printf "%.2f", u / b }')" "$check"
		psql -c "SELECT pgqueue.queue_drop('$q', force => true)" > /dev/null
	done
done
echo "load after:  $(cut -d' ' -f1-3 /proc/loadavg)"
echo "target: us/job at n=10000 at most 1.5 times that at n=100 (ratio column)"
