# 121_peer_cron_crash.pl: a consumer killed with SIGKILL, on a server where
# pgqueue is not preloaded and pg_cron drives maintenance: its job is
# claimable again within its lease plus the schedule's period.  From
# procrastinate #1518 and Oban #424, where the jobs of a crashed worker
# stayed "doing"/"executing" for good unless something outside the queue
# rescued them.
#
# The cluster preloads pg_cron only (no pgqueue worker, no shared memory).
# pg_cron runs pgqueue.maintain() every second: with a '1 seconds'
# schedule on pg_cron 1.5 and later; pg_cron 1.4 (Debian 12) knows
# minutes only, so there an '@reboot' job runs a procedure that calls
# maintain() every second, committing each round, and pg_cron starts it
# again after every restart, a crash restart included.  A consumer pops a
# job with a lease of 3 s and is killed with SIGKILL before it acks; the
# postmaster then restarts every backend (pg_cron's too).  Checks, and how
# each would fail:
#   - no pgqueue process runs and pgqueue.stats shows no counters (the
#     test would not test the path without preloading);
#   - after the kill, a pop claims the job again within lease + period +
#     10 s of slack for the crash restart (a maintenance that does not
#     expire the lease, or is not run again after the crash restart, never
#     gives it back: the poll times out);
#   - it is claimed as attempt 2 with one failure, and a further pop gets
#     nothing (claimed again exactly once);
#   - no pg_cron run of the maintenance failed, but one that the crash
#     restart ended ("server restarted").
# Mutations of the product, each built into a private install, made the
# test fail as listed:
#   - expire.c: pgq_expire_leases ending no lease (returns at once): the
#     job is never claimable again;
#   - expire.c: expire_sql ending only leases that ended a day ago ("due_at
#     < $1 - interval '1 day'"): the same (without preloading, every job is
#     claimed by a status row, so this is the expiry that counts).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $lease = 3;
my $period = 1;

my $node = PostgreSQL::Test::Cluster->new('cron_crash');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 16
restart_after_crash = on
});
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql('CREATE EXTENSION pg_cron');
sql('CREATE EXTENSION pgqueue');
is( sql(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'pgqueue%'}),
	'0', 'without shared_preload_libraries no pgqueue process runs');
sql(q{SELECT pgqueue.queue_create('crash', backoff_jitter => 0)});
is(sql(q{SELECT pushed IS NULL FROM pgqueue.stats WHERE queue = 'crash'}),
	't', 'there is no shared memory: no counters in pgqueue.stats');

my $version = sql(q{SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'});
my ($ret, $out, $err) = $node->psql('postgres',
	qq{SELECT cron.schedule('pgqueue-maintain', '$period seconds', 'SELECT pgqueue.maintain()')});
if ($ret != 0)
{
	like($err, qr/invalid schedule/, "pg_cron $version has no schedules in seconds");
	sql(qq{
		CREATE PROCEDURE public.maintain_every_second()
		LANGUAGE plpgsql AS \$\$
		BEGIN
			LOOP
				PERFORM pgqueue.maintain();
				COMMIT;
				PERFORM pg_sleep($period);
			END LOOP;
		END
		\$\$;
		SELECT cron.schedule('pgqueue-maintain', '\@reboot', 'CALL public.maintain_every_second()');
	});
	$node->restart;
}
else
{
	pass("pg_cron $version schedules pgqueue.maintain() every second");
}
ok( $node->poll_query_until(
		'postgres', q{
		SELECT count(*) > 0 FROM cron.job_run_details d JOIN cron.job j USING (jobid)
		 WHERE j.jobname = 'pgqueue-maintain'}),
	'pg_cron runs the maintenance');

# the consumer pops the job and dies before its ack
sql(q{SELECT pgqueue.queue_push('crash', '{"n": 1}')});
my $consumer = $node->background_psql('postgres');
my $pid = $consumer->query_safe('SELECT pg_backend_pid()');
is( $consumer->query_safe(
		qq{SELECT job_id || ' ' || attempt FROM pgqueue.queue_pop('crash', lease => '$lease s')}),
	'1 1', 'the consumer popped job 1');
my $killed_at = time();
kill 'KILL', $pid;
eval { $consumer->quit; };

# a pop that gets the job, tried every 100 ms through the crash restart
my $got = '';
while (time() - $killed_at < $lease + $period + 10)
{
	my ($r, $o, $e) = $node->psql('postgres',
		q{SELECT job_id || ' ' || attempt FROM pgqueue.queue_pop('crash', 10)});
	if ($r == 0 && $o ne '')
	{
		$got = $o;
		last;
	}
	usleep(100_000);
}
my $took = time() - $killed_at;
is($got, '1 2', 'after the kill the job is claimed again, as attempt 2');
is(sql(q{SELECT state || ' ' || failures FROM pgqueue.jobs WHERE queue = 'crash'}),
	'executing 1', 'with one failure: the expired lease');
ok( $got ne '' && $took <= $lease + $period + 10,
	sprintf('within lease + period + 10 s of slack: %.1f s after the kill', $took));
is(sql(q{SELECT count(*) FROM pgqueue.queue_pop('crash', 10)}),
	'0', 'a further pop gets nothing: the job was claimed again once');
like(
	slurp_file($node->logfile),
	qr/server process \(PID $pid\) was terminated by signal 9/,
	'the postmaster restarted the backends after the kill');
is( sql(q{
		SELECT string_agg(d.status || ': ' || d.return_message, '; ')
		  FROM cron.job_run_details d JOIN cron.job j USING (jobid)
		 WHERE j.jobname = 'pgqueue-maintain' AND d.status = 'failed'
		   AND d.return_message <> 'server restarted'}),
	'', 'no pg_cron run of the maintenance failed (but one that the crash restart ended)');

sql(q{SELECT cron.unschedule('pgqueue-maintain')});
$node->stop('immediate');
done_testing();
