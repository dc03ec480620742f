#!/usr/bin/env bash
# bench/compaction.sh: 1 M jobs pushed and finished while the maintenance
# worker compacts and archives; reports live queue storage afterwards (no
# VACUUM FULL) and the slowest push and pop+ack transactions seen while
# compaction ran.  Usage: bash bench/compaction.sh [jobs]
set -euo pipefail
cd "$(dirname "$0")/.."
. test/deps.sh
pgq_install
export PGQ_JOBS=${1:-1000000}
pg_virtualenv -t -o shared_preload_libraries=pgqueue -o synchronous_commit=on \
	-o pgqueue.naptime=1000 -o max_wal_size=4GB bash bench/compaction-inner.sh
