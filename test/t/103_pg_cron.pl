# 103_pg_cron.pl: pgqueue without shared_preload_libraries, maintained by
# pg_cron calling pgqueue.maintain().
#
# The cluster preloads pg_cron only: pgqueue is loaded by each backend that
# uses it, so there is no launcher, no maintenance worker and no shared
# memory (watermarks, wake-ups).  Checks that:
#   - no pgqueue background process runs;
#   - pgqueue.maintain() scheduled every second by pg_cron expires leases
#     and compacts and archives a queue with blocks of 100 and retention
#     '0' back to two blocks, with every job accounted for, and its runs
#     succeed;
#   - a pop with a wait works in polling mode: it returns a job pushed
#     while it waits, soon after the push (in a queue whose block already
#     has jobs, and in an empty queue), and returns nothing once its wait
#     is over when nothing comes.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = PostgreSQL::Test::Cluster->new('cron');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 16
});
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql('CREATE EXTENSION pg_cron');
sql('CREATE EXTENSION pgqueue');
is( sql(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'pgqueue%'}),
	'0', 'without shared_preload_libraries no pgqueue process runs');

# a queue with 350 jobs in blocks of 100, all finished, and one expired lease
sql(q{
	SELECT pgqueue.queue_create('cron', block_size => 100, retention => '0');
	SELECT pgqueue.queue_push_batch('cron', array_agg(jsonb_build_object('n', i)))
	  FROM generate_series(1, 350) i;
	SELECT pgqueue.queue_ack('cron', array_agg(job_id), array_agg(attempt))
	  FROM pgqueue.queue_pop('cron', 350);
	SELECT pgqueue.queue_create('lease', backoff_jitter => 0);
	SELECT pgqueue.queue_push('lease', '{}');
	SELECT count(*) FROM pgqueue.queue_pop('lease', lease => '10 milliseconds');
});

is(sql(q{SELECT pushed IS NULL FROM pgqueue.stats WHERE queue = 'cron'}),
	't', 'there is no shared memory: no counters in pgqueue.stats');

# pg_cron 1.5 and later take '1 seconds'; 1.4 (Debian 12's
# postgresql-15-cron) knows minutes only, so there the job runs '@reboot'
# and the server is restarted (runs every minute would make this test
# wait up to a minute).
my $version = sql(q{SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'});
my ($ret, $out, $err) = $node->psql('postgres',
	q{SELECT cron.schedule('pgqueue-maintain', '1 seconds', 'SELECT pgqueue.maintain()')});
if ($ret != 0)
{
	like($err, qr/invalid schedule: 1 seconds/,
		"pg_cron $version has no schedules in seconds");
	ok( sql(q{SELECT cron.schedule('pgqueue-maintain', '@reboot', 'SELECT pgqueue.maintain()')}) > 0,
		"pg_cron $version schedules pgqueue.maintain() at start");
	$node->restart;
}
else
{
	pass("pg_cron $version schedules pgqueue.maintain() every second");
	pass('(no restart needed)');
}

ok( $node->poll_query_until(
		'postgres', q{
		SELECT string_agg(block_no || ' ' || state, ', ' ORDER BY first_id) = '3 open, 4 open'
		  FROM pgqueue.blocks WHERE queue = 'cron'}),
	'pg_cron maintenance compacts the queue to two blocks');
is( sql(q{
		SELECT count(DISTINCT job_id) FILTER (WHERE archived) || ' '
			   || count(DISTINCT job_id) FILTER (WHERE NOT archived) || ' '
			   || count(*) FILTER (WHERE state = 'succeeded')
		  FROM pgqueue.job_history WHERE queue = 'cron'}),
	'300 50 350',
	'job_history: 300 jobs archived, 50 live, each succeeded once');
is(sql(q{SELECT state || ' ' || failures FROM pgqueue.jobs WHERE queue = 'lease'}),
	'available 1', 'pg_cron maintenance expired the lease');
ok( $node->poll_query_until(
		'postgres', q{
		SELECT count(*) > 0 FROM cron.job_run_details d JOIN cron.job j USING (jobid)
		 WHERE j.jobname = 'pgqueue-maintain' AND d.status = 'succeeded'}),
	'cron.job_run_details shows succeeded runs');
is( sql(q{
		SELECT count(*) FROM cron.job_run_details d JOIN cron.job j USING (jobid)
		 WHERE j.jobname = 'pgqueue-maintain' AND d.status = 'failed'}),
	'0', 'and no failed run');

# A waiting pop, in polling mode: the job pushed while it waits is
# returned soon after the push.  Once in a queue whose block already has
# jobs of that priority (all claimed), once in a queue that is empty.
sub waiting_pop
{
	my ($queue, $what) = @_;
	my ($out, $err) = ('', '');
	my $t0 = time();
	my $h = IPC::Run::start(
		[
			'psql', '-XAtq', '-d', $node->connstr('postgres'), '-c',
			"SELECT payload FROM pgqueue.queue_pop('$queue', wait => '3 seconds')"
		],
		'>', \$out, '2>', \$err);
	usleep(500_000);
	my $pushed_at = time();
	sql(qq{SELECT pgqueue.queue_push('$queue', '{"late": true}')});
	$h->finish;
	my $done = time();
	is($out, qq({"late": true}\n), "$what: a waiting pop returns the job pushed while it waited")
	  or diag($err);
	ok($done - $t0 >= 0.45, "$what: after waiting for it");
	ok($done - $pushed_at < 2, sprintf("$what: soon after the push: %.2f s", $done - $pushed_at));
}
sql(q{SELECT pgqueue.queue_create('wait')});
sql(q{SELECT pgqueue.queue_push('wait', '{}')});
sql(q{SELECT count(*) FROM pgqueue.queue_pop('wait')});
waiting_pop('wait', 'queue with claimed jobs');
sql(q{SELECT pgqueue.queue_create('wait_empty')});
waiting_pop('wait_empty', 'empty queue');

sql(q{SELECT pgqueue.queue_create('wait_none')});
my $t0 = time();
is(sql(q{SELECT count(*) FROM pgqueue.queue_pop('wait_none', wait => '300 milliseconds')}),
	'0', 'a waiting pop with nothing to claim returns nothing');
ok(time() - $t0 >= 0.29, sprintf('once its wait is over: %.2f s', time() - $t0));

sql(q{SELECT cron.unschedule('pgqueue-maintain')});
$node->stop;
done_testing();
