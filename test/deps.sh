#!/usr/bin/env bash
# test/deps.sh: install the Debian packages pgqueue's build, tests, demo and
# benchmarks need, if any is missing, and define pgq_install (build and
# install the extension).  Sourced by test/run.sh, demo/run.sh and bench/.

pgq_packages=(
	postgresql-15 postgresql-server-dev-15 postgresql-15-cron
	postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl
	postgresql-15-pgq3 libipc-run-perl libdbd-pg-perl pgbouncer make gcc
)

pgq_missing=()
for p in "${pgq_packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
		pgq_missing+=("$p")
done
if [ ${#pgq_missing[@]} -gt 0 ]; then
	echo "installing: ${pgq_missing[*]}"
	sudo_cmd=""
	[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
	$sudo_cmd apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${pgq_missing[@]}" >/dev/null
fi
export PATH="/usr/lib/postgresql/15/bin:$PATH"

# pgq_install: build pgqueue and install it into the PostgreSQL 15 tree
pgq_install() {
	local sudo_cmd=""
	[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
	make -s "$@" >/dev/null && $sudo_cmd make -s install >/dev/null
}
