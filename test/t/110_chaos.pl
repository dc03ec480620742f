# 110_chaos.pl: the randomized oracle of issue 14, short seeds.
#
# Runs test/chaos/oracle.pl (its header says what it does and checks) on
# one cluster with pgqueue preloaded, the worker every 200 ms and
# log_error_verbosity = verbose (so that SQLSTATEs such as XX000 reach
# the log), for three seeds of 12 s of load each: three producers, four
# consumers, maintain() beside the worker, and a fault process that
# cancels statements, kill -9s client backends and the maintenance
# worker, and stops the server with -m immediate and starts it again.
# Each of the oracle's checks is one test per seed: pushes, terminal,
# once, history, ledger, stale_acks, key_order, errors, server_log.
# Wall time about 60 s on a 2-core machine (20 s a seed: load, drain,
# checks).  bash test/chaos.sh runs the
# same oracle for as long as asked.
#
# How the checks fail is in the oracle's header, with the mutations of
# the product that made them fail.
use strict;
use warnings;

use File::Basename qw(dirname);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $oracle = dirname(__FILE__) . '/../chaos/oracle.pl';
my @seeds = (1, 2, 3);
my @checks = qw(pushes terminal once history ledger stale_acks key_order errors server_log);

my $node = PostgreSQL::Test::Cluster->new('chaos');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'pgqueue'
pgqueue.naptime = 200
restart_after_crash = on
log_error_verbosity = verbose
max_connections = 40
});
$node->start;

my $bindir = $node->config_data('--bindir');
for my $seed (@seeds)
{
	my $workdir = "${PostgreSQL::Test::Utils::tmp_check}/chaos_$seed";
	my ($out, $err) = ('', '');
	IPC::Run::run(
		[
			$^X, $oracle,
			'--host' => $node->host,
			'--port' => $node->port,
			'--datadir' => $node->data_dir,
			'--bindir' => $bindir,
			'--logfile' => $node->logfile,
			'--seed' => $seed,
			'--seconds' => 12,
			'--drain-timeout' => 40,
			'--workdir' => $workdir
		],
		'>' => \$out,
		'2>' => \$err);
	note($out);
	diag($err) if $err ne '';
	for my $c (@checks)
	{
		my ($line) = $out =~ /^(check \Q$c\E: .*(?:\n  .*)*)/m;
		ok(defined $line && $line =~ /^check \Q$c\E: ok$/, "seed $seed: $c")
		  or diag($line // "no result for check $c");
	}
	my ($pushes) = $out =~ /^count pushes (\d+)$/m;
	my ($restarts) = $out =~ /^count crash_restarts (\d+)$/m;
	ok(($pushes // 0) > 0 && ($restarts // 0) > 0,
		"seed $seed: the load pushed jobs and the faults restarted the server");
}

$node->stop;
done_testing();
