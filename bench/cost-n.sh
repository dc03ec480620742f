#!/usr/bin/env bash
# bench/cost-n.sh: the cost of a job in pop and ack against the pop's n
# (issue 13: per-job cost at n = 10 000 at most 1.5 times that at n = 100),
# with and without flow control, on one throwaway cluster (fsync and
# synchronous_commit on, the maintenance worker off).  For each variant
# (plain; keys: 1000 keys 'k' || (i % 1000); tenants: 50 tenants
# 't' || (i % 50); both) and each n of 100, 1000 and 10 000, a fresh queue
# gets COST_BACKLOG jobs (default 300 000), pushed with queue_push_batch;
# one pgbench client then pops n and acks the array in a second
# transaction, about 30 000 jobs' worth.  Prints the microseconds a job at
# each n, their ratios to n = 100, and checks that every job popped was
# acked once.  A keyed queue whose pops ask for more jobs than its keys
# let out (keys and both at n >= 1000: 1000 keys, one job of a key in
# flight) returns fewer jobs a pop; the cost is a job actually drained.
# Usage: bash bench/cost-n.sh; COST_VARIANTS="plain keys" limits the variants.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/deps.sh
pgq_install
export COST_BACKLOG=${COST_BACKLOG:-300000}
export COST_VARIANTS=${COST_VARIANTS:-plain keys tenants both}
pg_virtualenv -t -o shared_preload_libraries=pgqueue -o pgqueue.worker=off \
	-o synchronous_commit=on -o fsync=on -o shared_buffers=1GB -o max_wal_size=8GB \
	bash bench/cost-n-inner.sh
