#!/usr/bin/env bash
# bench/drain100k.sh: the core queue's acceptance measurement, on a throwaway
# cluster (synchronous_commit on): push 100k jobs with queue_push_batch in
# batches of 1000 and time it against a plain multi-row INSERT of the same
# rows into a table shaped like a job; then drain them with 4 concurrent
# pgbench consumers (pop n=100, ack in a separate transaction) and check that
# every job was acked exactly once.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/deps.sh
pgq_install
pg_virtualenv -t -o shared_preload_libraries=pgqueue -o synchronous_commit=on \
	bash bench/drain100k-inner.sh
