#!/usr/bin/env bash
# demo/scenario.sh: the demo itself; run by demo/run.sh inside pg_virtualenv.
set -euo pipefail
cd "$(dirname "$0")"
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }

psql -f setup.sql
echo "== producers (2 clients, 40 batches of 50 a second) and consumers (3 clients) for 8 seconds"
pgbench -n -c 2 -j 1 -T 8 -R 40 -f produce.sql postgres > produce.log 2>&1 &
producers=$!
pgbench -n -c 3 -j 1 -T 8 -f consume.sql postgres > consume.log 2>&1 &
consumers=$!
for i in 1 2 3 4; do
	sleep 2
	if [ $i = 1 ]; then
		# a consumer that claims jobs under a 1 second lease and "crashes"
		psql -c "SELECT count(*) AS claimed_by_crashing_consumer FROM pgqueue.queue_pop('emails', 25, lease => '1 second')"
	fi
	psql -c "SELECT available, executing, failed, succeeded, aborted, blocks, pushed, acked FROM pgqueue.stats WHERE queue = 'emails'"
done
wait $producers $consumers
grep -h -E '^(number of transactions actually processed|tps)' produce.log consume.log | sed 's/^/  /'

echo "== draining what is left (poison jobs end as dead letters after max_attempts)"
psql -f drain.sql
echo "== the maintenance worker compacts finished blocks and archives their history"
for i in $(seq 1 30); do
	[ "$(psql -At -c "SELECT count(*) FROM pgqueue.block")" -le 2 ] &&
		[ "$(psql -At -c "SELECT count(*) > 0 FROM pgqueue.job_history WHERE archived")" = t ] && break
	sleep 1
done
psql -f report.sql
rm -f produce.log consume.log
