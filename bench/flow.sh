#!/usr/bin/env bash
# bench/flow.sh: the cost of flow control in a drain (issue 5), on one
# throwaway cluster (fsync and synchronous_commit on, the maintenance worker
# off, the same settings for every variant).  Each variant gets a fresh
# queue and the same jobs, pushed with queue_push_batch in batches of 1000
# (timed apart), then drained by 4 concurrent pgbench consumers (pop n=100,
# ack of the array in a separate transaction):
#   plain    no key, no tenant (the baseline)
#   keys     a key on every job, 1000 keys: 'k' || (i % 1000)
#   tenants  50 tenants: 't' || (i % 50), without tenant limits
#   both     keys and tenants
# Each variant runs FLOW_REPEAT times (default 3), the variants taking
# turns; prints each run's jobs/s and ratio to the plain run of the same
# turn, then the medians and their ratios (target >= 0.85), and
# checks that every job was claimed and acked exactly once and that, within
# each key, each job's claim committed after the previous job's ack
# (track_commit_timestamp is on for that).
# Usage: bash bench/flow.sh [jobs]        (default 100000)
# FLOW_VARIANTS="plain keys" limits the variants (plain is always first);
# FLOW_FSYNC=off runs without fsync (commits cost less, CPU shows more);
# FLOW_MAX_S (default 40) stops a drain that takes longer and reports the
# rate of what it acked; FLOW_STATEMENTS=1 adds pg_stat_statements
# (track=all, so pop's inner statements count) and prints each drain's
# costliest statements; FLOW_ANALYZE=0 skips the VACUUM ANALYZE before
# each drain.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/deps.sh
pgq_install
export FLOW_JOBS=${1:-100000}
export FLOW_VARIANTS=${FLOW_VARIANTS:-plain keys tenants both}
export FLOW_STATEMENTS=${FLOW_STATEMENTS:-0}
opts=(-o shared_preload_libraries=pgqueue)
[ "$FLOW_STATEMENTS" = 1 ] &&
	opts=(-o shared_preload_libraries=pgqueue,pg_stat_statements -o pg_stat_statements.track=all)
pg_virtualenv -t "${opts[@]}" -o pgqueue.worker=off \
	-o synchronous_commit=on -o fsync="${FLOW_FSYNC:-on}" -o shared_buffers=1GB \
	-o max_wal_size=8GB -o track_commit_timestamp=on bash bench/flow-inner.sh
