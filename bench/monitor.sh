#!/usr/bin/env bash
# bench/monitor.sh [backlog]: what polling pgqueue.stats costs (issue 14,
# peer failure 10: hexpm #1773, where the queue's monitoring queries slowed
# the workers), on a throwaway cluster (fsync and synchronous_commit on,
# the maintenance worker on, as in production).
#
# One queue gets a backlog (default 10 000 000 jobs of about 100 B, pushed
# with queue_push_batch in batches of 1000 by 2 clients).  Then three
# drains of the same number of jobs (MONITOR_DRAIN, default 400 000; pop
# n=100 and ack in separate transactions, 4 pgbench consumers) take turns:
#   unpolled, polled, unpolled
# where "polled" runs 5 sessions beside the drain, each doing
# SELECT * FROM pgqueue.stats every 5 s (MONITOR_PERIOD; the next poll
# starts 5 s after the previous one started, or at once if it took
# longer; polls under way when the drain ends are waited for and
# counted).  Prints each poll's time (max and median, and how many polls
# exceeded the budget, MONITOR_BUDGET_MS, default 1000 ms: at 5 sessions
# every 5 s a poll of 1 s keeps a core busy), each drain's rate and the
# ratio of the polled drain to the mean of the two unpolled ones (target:
# at least 0.95), and checks that every job drained was acked once.
# The backlog left after the drains is still above backlog - 3 x drain.
#
# Usage: bash bench/monitor.sh [backlog]   (e.g. 1000000 for a quick look)
set -euo pipefail
cd "$(dirname "$0")/.."
. test/deps.sh
pgq_install
pg_virtualenv -t -o shared_preload_libraries=pgqueue -o synchronous_commit=on \
	-o fsync=on -o shared_buffers=1GB -o max_wal_size=8GB \
	bash bench/monitor-inner.sh "${1:-10000000}"
