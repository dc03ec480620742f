#!/usr/bin/env bash
# bench/latency.sh: push-commit-to-pop-return latency of pgqueue's waiting
# pop against polling consumers (10 ms and 100 ms) and a LISTEN/NOTIFY
# consumer, with 1, 8 and 32 consumers, on a throwaway cluster.
# Usage: bash bench/latency.sh [jobs per run, default 200]
set -euo pipefail
cd "$(dirname "$0")/.."
. test/deps.sh
pgq_install
bin=$(mktemp -d)/latency
gcc -O2 -Wall -I"$(pg_config --includedir)" bench/latency.c -L"$(pg_config --libdir)" -lpq -o "$bin"
export PGQ_LATENCY_BIN=$bin PGQ_LATENCY_JOBS=${1:-200}
pg_virtualenv -t -o shared_preload_libraries=pgqueue -o max_connections=100 bash -c '
	psql -X -q -c "CREATE EXTENSION pgqueue"
	echo "latency from push commit to pop return, one job every 20 ms ($(nproc) cores):"
	for consumers in 1 8 32; do
		for mode in wait poll10 poll100 notify; do
			"$PGQ_LATENCY_BIN" $mode $consumers "$PGQ_LATENCY_JOBS" 20
		done
	done'
