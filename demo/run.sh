#!/usr/bin/env bash
# demo/run.sh: build pgqueue and run the demo on a throwaway cluster with
# pgqueue preloaded: producers and consumers at once, some jobs failing and
# retrying, a crashed consumer whose leases expire, poison jobs ending as
# dead letters, an operator's forced retry; then the inspection views.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/deps.sh
pgq_install
pg_virtualenv -t -o shared_preload_libraries=pgqueue bash demo/scenario.sh
