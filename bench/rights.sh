#!/usr/bin/env bash
# bench/rights.sh [jobs]: what the per-queue rights check costs on the hot
# path, on a throwaway cluster (synchronous_commit on).  Drains the same
# number of jobs (default 100000; pop n=100 and ack in separate
# transactions, 4 pgbench consumers) three ways, taking turns, three times:
#   super:    a superuser, queue without grants (the check finds all rights
#             at once);
#   open:     a role in pgqueue_consumer, queue without grants;
#   granted:  the same role, queue whose consume right is granted to a role
#             it is a member of (and push to another), so the check resolves
#             a membership;
# and times 20000 pops of an empty queue, one client, for the cost per call.
# Prints medians and the ratios to "super".
set -euo pipefail
cd "$(dirname "$0")/.."
. test/deps.sh
pgq_install
pg_virtualenv -t -o shared_preload_libraries=pgqueue -o synchronous_commit=on \
	-o pgqueue.worker=off bash bench/rights-inner.sh "${1:-100000}"
