#!/usr/bin/env bash
# bench/report.sh MODE WORKDIR STEM ELAPSED_MS: turn what bench/scenarios.sh
# measured into STEM.md (machine, settings, ratios against the targets of
# DESIGN.md section 6, raw numbers, the sustained run) and the plots
# STEM-push.png, STEM-drain.png, STEM-latency.png, STEM-sustained.png.
set -euo pipefail
mode=$1
work=$2
stem=$3
elapsed_ms=$4
base=$(basename "$stem")
res="$work/results.tsv"
md="$stem.md"

# v ID COLUMN: one field of a measurement (10 = rows/s); empty if absent
v() { awk -F'\t' -v id="$1" -v c="$2" '$1 == id { print $c }' "$res"; }
fin() { awk -v k="$1" '$1 == k { print $2 }' "$work/final.txt"; }

# ---------------------------------------------------------------------------
# Ratios against the targets
# ---------------------------------------------------------------------------
# ratio LABEL NUM_ID DEN_ID MIN: a row of the ratio table; MIN empty = info
ratio_rows=""
ratio() {
	local label=$1 a b need=$4
	a=$(v "$2" 10)
	b=$(v "$3" 10)
	[ -n "$a" ] && [ -n "$b" ] || return 0
	ratio_rows+=$(awk -v l="$label" -v a="$a" -v b="$b" -v need="$need" 'BEGIN {
		r = a / b
		if (need == "") { res = "info"; n = "-" } else { res = (r >= need ? "PASS" : "MISS"); n = sprintf("≥ %.2f", need) }
		printf "| %s | %.0f / %.0f | %.2f | %s | %s |\n", l, a, b, r, n, res }')$'\n'
}
ratio "drain n=100, separate tx, 4 consumers, fresh queue: pgqueue / classic" \
	drain_fresh_pgqueue_n100_sep_c4_small drain_fresh_classic_n100_sep_c4_small 2.0
ratio "drain at a backlog of $(awk '{print $1}' "$work/bigload.txt") jobs / pgqueue fresh" \
	drain_big_pgqueue_n100_sep_c4_small drain_fresh_pgqueue_n100_sep_c4_small 0.9
ratio "drain while xmin is held / pgqueue fresh" \
	drain_xmin_pgqueue_n100_sep_c4_small drain_fresh_pgqueue_n100_sep_c4_small 0.9
ratio "queue_push_batch of 1000 / INSERT of the same 1000 rows (100 B)" \
	push_pgqueue_1000_small ladder_ins1000_small 0.7
ratio "queue_push_batch of 100 / INSERT of the same 100 rows (100 B)" \
	push_pgqueue_100_small ladder_ins100_small 0.7
ratio "queue_push_batch of 1000 / INSERT of the same 1000 rows (2 KiB)" \
	push_pgqueue_1000_big ladder_ins1000_big 0.7
ratio "queue_push_batch of 100 / INSERT of the same 100 rows (2 KiB)" \
	push_pgqueue_100_big ladder_ins100_big 0.7
ratio "queue_push 1/tx / INSERT 1 row/tx, 1 client (100 B)" \
	push_pgqueue_1_small_c1 ladder_ins1_small_c1 0.9
ratio "queue_push 1/tx / INSERT 1 row/tx, 16 clients (100 B)" \
	push_pgqueue_1_small_c16 ladder_ins1_small_c16 0.9
ratio "queue_push 1/tx / INSERT 1 row/tx, 1 client (2 KiB)" \
	push_pgqueue_1_big_c1 ladder_ins1_big_c1 0.9
ratio "queue_push 1/tx / INSERT 1 row/tx, 16 clients (2 KiB)" \
	push_pgqueue_1_big_c16 ladder_ins1_big_c16 0.9

# live storage and dead tuples after the sustained run
pushed=$(fin pushed)
blocks=$(fin blocks)
bytes=$(fin bytes)
archive_bytes=$(fin archive_bytes)
dead=$(fin dead)
ratio_rows+=$(awk -v b="$blocks" -v by="$bytes" -v ab="$archive_bytes" -v p="$pushed" 'BEGIN {
	printf "| live storage after the sustained run (%d jobs pushed and finished) | %d blocks, %.1f MB (archive %.1f MB) | - | ≤ 2 blocks | %s |\n",
		p, b, by / 1048576, ab / 1048576, (b <= 2 ? "PASS" : "MISS") }')$'\n'
ratio_rows+=$(awk -v d="$dead" -v p="$pushed" 'BEGIN {
	lim = p * 0.001; if (lim < 1000) lim = 1000
	printf "| dead tuples in pgqueue_data after the sustained run | %d | %.4f per job pushed | ≤ %d (0.1 %% of jobs, at least 1000) | %s |\n",
		d, (p > 0 ? d / p : 0), lim, (d <= lim ? "PASS" : "MISS") }')$'\n'

# the other drain shapes and PgQ, for information
info_rows=""
saved=$ratio_rows
ratio_rows=""
for id in $(awk -F'\t' '$1 ~ /^drain_fresh_pgqueue_n/ && $1 !~ /noanalyze/ { print $1 }' "$res"); do
	cid=${id/pgqueue/classic}
	label=$(awk -F'\t' -v id="$id" '$1 == id { printf "%s, %s consumers, %s", $3, $5, $6 }' "$res")
	ratio "$label: pgqueue / classic" "$id" "$cid" ""
done
ratio "drain at the large backlog: pgqueue / classic" drain_big_pgqueue_n100_sep_c4_small drain_big_classic_n100_sep_c4_small ""
ratio "drain while xmin is held: pgqueue / classic" drain_xmin_pgqueue_n100_sep_c4_small drain_xmin_classic_n100_sep_c4_small ""
ratio "classic queue: xmin held / fresh" drain_xmin_classic_n100_sep_c4_small drain_fresh_classic_n100_sep_c4_small ""
ratio "pgqueue fresh drain: with ANALYZE / without ANALYZE after the load" \
	drain_fresh_pgqueue_n100_sep_c4_small drain_fresh_pgqueue_noanalyze_n100_sep_c4_small ""
ratio "drain: pgqueue (4 consumers, n=100) / PgQ (1 consumer, batches)" drain_fresh_pgqueue_n100_sep_c4_small drain_fresh_pgq_small ""
for b in 1 100 1000; do
	for p in small big; do
		if [ $b = 1 ]; then sfx="_c1"; else sfx=""; fi
		ratio "push $b/tx ($p): pgqueue / PgQ" "push_pgqueue_${b}_${p}$sfx" "push_pgq_${b}_${p}$sfx" ""
		ratio "push $b/tx ($p): pgqueue / classic queue" "push_pgqueue_${b}_${p}$sfx" "push_classic_${b}_${p}$sfx" ""
	done
done
info_rows=$ratio_rows
ratio_rows=$saved

# ---------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------
S="$work/series"
gp() { gnuplot 2> "$work/gnuplot.err" || { cat "$work/gnuplot.err" >&2; return 1; }; }
# plot clause for one series if it exists
pl() { [ -s "$S/$1.dat" ] && printf "'%s' using 1:2 with linespoints title '%s', " "$S/$1.dat" "$2"; return 0; }

{
	echo "set terminal pngcairo noenhanced size 1200,500 font ',10'"
	echo "set output '$stem-push.png'"
	echo "set multiplot layout 1,2 title 'push throughput over time ($mode mode)'"
	echo "set xlabel 'seconds'; set ylabel 'rows or jobs per second'; set grid; set key bottom right; set yrange [0:*]"
	echo "set title '1 row or job per transaction, 16 clients, 100 B'"
	echo "plot $(pl ladder_ins1_small_c16 'INSERT (plain table)')$(pl push_classic_1_small_c16 'classic queue')$(pl push_pgq_1_small_c16 'PgQ insert_event')$(pl push_pgqueue_1_small_c16 'pgqueue queue_push')" | sed 's/, $//'
	echo "set title '1000 rows or jobs per transaction, 1 client, 100 B'"
	echo "plot $(pl ladder_ins1000_small 'INSERT (plain table)')$(pl push_classic_1000_small 'classic queue')$(pl push_pgq_1000_small 'PgQ insert_event')$(pl push_pgqueue_1000_small 'pgqueue queue_push_batch')" | sed 's/, $//'
	echo "unset multiplot"
} | gp

{
	echo "set terminal pngcairo noenhanced size 1200,500 font ',10'"
	echo "set output '$stem-drain.png'"
	echo "set multiplot layout 1,2 title 'drain throughput over time: n=100, claim and ack in separate transactions, 4 consumers ($mode mode)'"
	echo "set xlabel 'seconds'; set ylabel 'jobs per second'; set grid; set key top right; set yrange [0:*]"
	echo "set title 'pgqueue'"
	echo "plot $(pl drain_fresh_pgqueue_n100_sep_c4_small 'fresh queue')$(pl drain_big_pgqueue_n100_sep_c4_small 'large backlog')$(pl drain_xmin_pgqueue_n100_sep_c4_small 'xmin held')" | sed 's/, $//'
	echo "set title 'classic SKIP LOCKED queue'"
	echo "plot $(pl drain_fresh_classic_n100_sep_c4_small 'fresh queue')$(pl drain_big_classic_n100_sep_c4_small 'large backlog')$(pl drain_xmin_classic_n100_sep_c4_small 'xmin held')" | sed 's/, $//'
	echo "unset multiplot"
} | gp

# latency percentiles of selected runs
awk -F'\t' '
	function short(id) {
		s = id; sub(/_small/, "", s); sub(/_sep_c4/, "", s); gsub(/_/, " ", s); return s }
	$1 ~ /^(ladder_ins1_small_c1|ladder_ins1000_small|push_(classic|pgq|pgqueue)_1_small_c1|push_(classic|pgq|pgqueue)_1000_small|drain_(fresh|big|xmin)_(classic|pgqueue)_n100_sep_c4_small|drain_fresh_(classic|pgqueue)_n1_sep_c4_small|drain_fresh_pgq_small)$/ && $12 != "-" {
		printf "\"%s\" %s %s %s\n", short($1), $12, $13, $14 }' "$res" > "$work/latency.dat"
{
	echo "set terminal pngcairo noenhanced size 1300,600 font ',10'"
	echo "set output '$stem-latency.png'"
	echo "set title 'latency per pgbench script execution (a drain script is a pop and an ack) ($mode mode)'"
	echo "set style data histogram; set style histogram cluster gap 1; set style fill solid 0.8 border -1"
	echo "set logscale y; set ylabel 'ms (log scale)'; set grid ytics; set xtics rotate by -35 scale 0"
	echo "set bmargin 9; set key top left"
	echo "plot '$work/latency.dat' using 2:xtic(1) title 'p50', '' using 3 title 'p95', '' using 4 title 'p99'"
} | gp

# sustained run: rates from consecutive samples
# t push/s drain/s backlog live_MB archive_MB dead blocks
awk -F'\t' 'NR > 1 {
		bl = ($4 > 0 ? $4 : 0)   # table statistics may lag a little: clamp at 0
		r1 = 0; r2 = 0
		if (NR > 2 && $1 > t) { r1 = ($2 - p) / ($1 - t); r2 = ($3 - d) / ($1 - t) }
		printf "%s %.1f %.1f %d %.2f %.2f %d %d\n", $1, r1, r2, bl, $5 / 1048576, $6 / 1048576, $7, $8
		t = $1; p = $2; d = $3 }' "$work/sustained.tsv" > "$work/sustained.dat"
{
	echo "set terminal pngcairo noenhanced size 1200,900 font ',10'"
	echo "set output '$stem-sustained.png'"
	echo "set multiplot layout 3,1 title 'sustained run: push and drain at once ($mode mode; last point after the final drain and the wait for maintenance)'"
	echo "set xlabel 'seconds'; set grid; set key top left"
	echo "set ylabel 'jobs per second'; set yrange [0:*]"
	echo "plot '$work/sustained.dat' using 1:2 with linespoints title 'pushed', '' using 1:3 with linespoints title 'acked'"
	echo "set ylabel 'MB'; set y2label 'jobs waiting'; set ytics nomirror; set y2tics; set y2range [0:*]"
	echo "plot '$work/sustained.dat' using 1:5 with linespoints title 'live block tables (MB)', '' using 1:6 with linespoints title 'archive (MB)', '' using 1:4 axes x1y2 with linespoints title 'backlog (jobs, right axis)'"
	echo "unset y2label; unset y2tics; set ytics mirror"
	echo "set ylabel 'count'"
	echo "plot '$work/sustained.dat' using 1:7 with linespoints title 'dead tuples in pgqueue_data', '' using 1:8 with linespoints title 'blocks'"
	echo "unset multiplot"
} | gp

# ---------------------------------------------------------------------------
# The results file
# ---------------------------------------------------------------------------
table() { # table SECTION-REGEX
	echo "| scenario | contender | clients | payload | rows/s | tx/s | p50 ms | p95 ms | p99 ms | rows | seconds | note |"
	echo "|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|---|"
	awk -F'\t' -v re="$1" 'NR > 1 && $2 ~ re {
		printf "| %s | %s | %s | %s | %.0f | %.1f | %s | %s | %s | %d | %.2f | %s |\n",
			$3, $4, $5, $6, $10, $11, $12, $13, $14, $7, $9, $15 }' "$res"
}

{
	echo "# pgqueue benchmark, $(date +%Y-%m-%d) on $(hostname -s) ($mode mode)"
	echo
	if [ -s "$work/overrides.txt" ] && [ -n "$(tr -d ' \n' < "$work/overrides.txt")" ]; then
		echo "**Sizes overridden from the environment: $(cat "$work/overrides.txt")** (not the standard $mode mode)."
		echo
	fi
	echo "\`bash bench/run.sh$([ "$mode" = quick ] && echo " --quick")\` took $((elapsed_ms / 1000)) s up to this report"
	echo "(build, throwaway cluster, every scenario).  How to read this file:"
	echo "bench/README.md."
	echo
	echo "## Machine"
	echo
	sed 's/^/- /' "$work/machine.txt"
	echo "- PostgreSQL: $(cat "$work/version.txt")"
	echo
	echo "## Settings"
	echo
	echo "One throwaway cluster (pg_virtualenv) for every contender, pgqueue"
	echo "preloaded, autovacuum on; requested: $(paste -sd' ' "$work/settings-requested.txt")."
	echo "Effective non-default and notable settings:"
	echo
	echo '```'
	cat "$work/settings.txt"
	echo '```'
	echo
	echo "Every measurement is a pgbench run (\`-M prepared\`, custom script,"
	echo "every transaction logged) from this machine over TCP to localhost.  rows/s"
	echo "counts rows or jobs actually written or finished (drains count the jobs"
	echo "acked, deleted or consumed in the database); seconds run from the first"
	echo "transaction's start to the last one's end (connection setup excluded);"
	echo "latency is per script execution (for a drain with separate transactions:"
	echo "a pop and its ack).  pgqueue queues use block_size 100000."
	echo
	echo "## Targets"
	echo
	echo "| target | measured | ratio | needed | result |"
	echo "|---|--:|--:|--:|---|"
	printf '%s' "$ratio_rows"
	echo
	echo "Fresh queue = \"backlog 0\": a new queue or table gets a small preload"
	echo "($(v drain_fresh_pgqueue_n100_sep_c4_small 7) jobs for n=100) and is drained to empty; the large-backlog"
	echo "and held-xmin drains run for a fixed time on a queue holding many more jobs"
	echo "than they can drain.  The storage rows are what this build of pgqueue"
	echo "really leaves behind after the sustained run (below)."
	echo
	echo "### Other ratios (information)"
	echo
	echo "| comparison | measured | ratio | needed | result |"
	echo "|---|--:|--:|--:|---|"
	printf '%s' "$info_rows"
	echo
	echo "## Raw numbers"
	echo
	echo "### Physical ladder (plain table shaped like a job)"
	echo
	table '^ladder$'
	echo
	echo "### Push"
	echo
	table '^push$'
	echo
	echo "### Drain"
	echo
	table '^drain-'
	echo
	echo "Large backlog load ($(awk '{print $1}' "$work/bigload.txt") jobs): pgqueue (queue_push_batch of 10000, 2 clients)"
	echo "$(awk '{print $2}' "$work/bigload.txt") ms, classic queue (INSERT ... SELECT) $(awk '{print $3}' "$work/bigload.txt") ms, each"
	echo "including the VACUUM ANALYZE that follows the load.  Dead tuples at the end of"
	echo "the held-xmin drains: $(cat "$work/xmin.txt")."
	echo
	echo "## Sustained run"
	echo
	echo "One producer pushes batches of 100 at $(fin jobs_per_s_target) jobs/s (55 % of the slowest"
	echo "pgqueue drain rate above) for $(fin seconds) s while 4 consumers drain (n=100, separate"
	echo "transactions); maintenance: $(sed -n 's/^maintenance //p' "$work/final.txt"); the queue's"
	echo "retention is $(sed -n 's/^retention //p' "$work/final.txt").  Then the consumers finish the backlog and"
	echo "maintenance gets a little time to bring the storage back.  Samples (pushed"
	echo "and acked are cumulative, from $(sed -n 's/^progress //p' "$work/final.txt"); the last row is after"
	echo "that wait):"
	echo
	echo "| s | pushed | acked | backlog | live MB | archive MB | dead tuples | blocks | blocks done |"
	echo "|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
	awk -F'\t' 'NR > 1 { printf "| %s | %d | %d | %d | %.1f | %.1f | %d | %d | %d |\n", $1, $2, $3, $4, $5 / 1048576, $6 / 1048576, $7, $8, $9 }' "$work/sustained.tsv"
	echo
	echo "Final state: $(fin pushed) jobs pushed, $(fin unfinished) unfinished, blocks by state"
	echo "$(fin blocks_by_state), $(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }') MB in live block tables,"
	echo "$(awk -v b="$archive_bytes" 'BEGIN { printf "%.1f", b / 1048576 }') MB in the archive, $dead dead tuples in pgqueue_data."
	echo
	if [ -s "$work/observations.txt" ]; then
		echo "## Observations during the run"
		echo
		cat "$work/observations.txt"
		echo
	fi
	echo "## Plots"
	echo
	echo "![push throughput]($base-push.png)"
	echo
	echo "![drain throughput]($base-drain.png)"
	echo
	echo "![latency]($base-latency.png)"
	echo
	echo "![sustained run]($base-sustained.png)"
} > "$md"
