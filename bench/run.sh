#!/usr/bin/env bash
# bench/run.sh: pgqueue's benchmark suite (DESIGN.md section 6).
#
#   bash bench/run.sh            full mode (about 30 minutes on 2 cores)
#   bash bench/run.sh --quick    quick mode (under 2 minutes)
#
# Builds and installs the extension, installs gnuplot-nox if it is missing,
# then runs every scenario (bench/scenarios.sh) on one throwaway cluster with
# the same settings for every contender, and writes
# bench/results/<date>-<host>.md plus PNG plots (bench/report.sh).  Working
# files (pgbench logs, data series) go to bench/work/<mode>/, which is not
# part of the repository.  See bench/README.md for what is measured and how
# to read the results.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)

mode=full
case "${1:-}" in
	--quick) mode=quick ;;
	--full | "") mode=full ;;
	*)
		echo "usage: bash bench/run.sh [--quick]" >&2
		exit 2
		;;
esac

t_start=$(date +%s%N)
. test/deps.sh
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
if ! command -v gnuplot >/dev/null 2>&1; then
	echo "installing: gnuplot-nox"
	$sudo_cmd apt-get update -qq
	$sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gnuplot-nox >/dev/null
fi
pgq_install

work="$top/bench/work/$mode"
rm -rf "$work"
mkdir -p "$work" "$top/bench/results"
chmod 755 "$work"

# The same server settings for every contender.  pg_virtualenv turns fsync
# off for its throwaway clusters; it is turned back on here so that commits
# cost what they cost in production (synchronous_commit on).
settings=(
	shared_preload_libraries=pgqueue
	fsync=on
	synchronous_commit=on
	shared_buffers=1GB
	max_wal_size=8GB
	max_connections=100
)
opts=()
for s in "${settings[@]}"; do opts+=(-o "$s"); done
printf '%s\n' "${settings[@]}" > "$work/settings-requested.txt"

# a port that nothing listens on, so that clusters of other sessions on this
# machine do not collide with ours
port=""
for _ in $(seq 50); do
	p=$((54000 + RANDOM % 1000))
	if ! (exec 3<> "/dev/tcp/127.0.0.1/$p") 2> /dev/null && [ ! -e "/var/run/postgresql/.s.PGSQL.$p" ]; then
		port=$p
		break
	fi
done

pg_virtualenv -t ${port:+-p "$port"} "${opts[@]}" bash ${BENCH_TRACE:+-x} "$top/bench/scenarios.sh" "$mode" "$work"

t_end=$(date +%s%N)
elapsed=$(( (t_end - t_start) / 1000000 ))
stem="$top/bench/results/$(date +%Y-%m-%d)-$(hostname -s)"
bash "$top/bench/report.sh" "$mode" "$work" "$stem" "$elapsed"
echo "results: ${stem#"$top"/}.md (total $((elapsed / 1000)) s)"
