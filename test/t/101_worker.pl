# 101_worker.pl: the maintenance launcher and its per-database workers.
#
# One cluster with pgqueue preloaded and pgqueue.naptime = 100 ms.  Checks,
# in order:
#   - the launcher runs (visible in pg_stat_activity) and, while
#     pgqueue.worker is off, starts no worker;
#   - pgqueue.worker = on by reload starts one "pgqueue maintenance" worker
#     in every database with the extension;
#   - the worker does maintenance: expires a lease, and compacts and
#     archives a queue with blocks of 100 and retention '0' back to two
#     blocks, with every job accounted for;
#   - a queue whose maintenance fails on every round (a block table dropped
#     by hand) is retried after a doubling backoff, shown in
#     pgqueue.maintenance, and the worker goes on;
#   - a reload of pgqueue.naptime reaches the running worker (a naptime of
#     an hour stops its rounds, going back to 100 ms resumes them at once),
#     and the worker stays the same process;
#   - DROP DATABASE and CREATE DATABASE ... TEMPLATE of a database whose
#     worker is idle between rounds succeed, even with a long naptime;
#   - SIGTERM ends the worker and the launcher starts it again;
#   - SIGKILL of a worker: crash-restart, recovery, the workers come back
#     and no committed job is lost;
#   - DROP DATABASE of a database with the extension while its worker runs;
#   - DROP EXTENSION while the worker runs, which then leaves the database;
#   - pgqueue.worker = off by reload stops the workers (not the launcher),
#     and no maintenance happens any more.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = PostgreSQL::Test::Cluster->new('worker');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'pgqueue'
pgqueue.naptime = 100
pgqueue.worker = off
restart_after_crash = on
max_worker_processes = 16
max_connections = 30
});
$node->start;

# Run a query until it returns $expected or $secs pass; connection errors
# (during a crash restart) count as a wrong answer.
sub poll
{
	my ($db, $sql, $expected, $secs) = @_;
	my $deadline = time() + ($secs // 30);
	my $got = '';
	while (time() < $deadline)
	{
		my ($ret, $out, $err) = (0, '', '');
		$ret = $node->psql($db, $sql, stdout => \$out, stderr => \$err);
		$got = $ret == 0 ? $out : "error: $err";
		return 1 if $ret == 0 && $out eq $expected;
		usleep(100_000);
	}
	diag("poll timed out: $sql\nexpected: $expected\nlast: $got");
	return 0;
}

# the "database:pid" of every maintenance worker, sorted
my $workers_sql = q{
	SELECT coalesce(string_agg(datname, ',' ORDER BY datname), '')
	  FROM pg_stat_activity WHERE backend_type = 'pgqueue maintenance'};

sub worker_pid
{
	my ($db) = @_;
	return $node->safe_psql('postgres',
		"SELECT coalesce(max(pid), 0) FROM pg_stat_activity"
		  . " WHERE backend_type = 'pgqueue maintenance' AND datname = '$db'");
}

sub set_conf
{
	my ($setting) = @_;
	$node->safe_psql('postgres', "ALTER SYSTEM $setting");
	$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
}

# --- the launcher, and pgqueue.worker = off --------------------------------

ok( poll(
		'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgqueue launcher'",
		'1', 10),
	'the launcher is visible in pg_stat_activity');

$node->safe_psql('postgres', 'CREATE EXTENSION pgqueue');
for my $db (qw(broken dropext other))
{
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, 'CREATE EXTENSION pgqueue');
}
usleep(500_000);
is($node->safe_psql('postgres', $workers_sql),
	'', 'with pgqueue.worker = off the launcher starts no worker');

# --- pgqueue.worker = on ---------------------------------------------------

set_conf('SET pgqueue.worker = on');
ok(poll('postgres', $workers_sql, 'broken,dropext,other,postgres', 10),
	'pgqueue.worker = on (reload) starts one maintenance worker per database with the extension'
);
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM pg_stat_activity
		  WHERE backend_type = 'pgqueue launcher' AND datname IS NULL}),
	'1',
	'one launcher, connected to no database');

# lease expiry by the worker
$node->safe_psql(
	'postgres', q{
	SELECT pgqueue.queue_create('lease', backoff_jitter => 0);
	SELECT pgqueue.queue_push('lease', '{}');
	SELECT count(*) FROM pgqueue.queue_pop('lease', lease => '10 milliseconds');
});
ok( poll(
		'postgres',
		q{SELECT state || ' ' || failures FROM pgqueue.jobs WHERE queue = 'lease'},
		'available 1', 10),
	'the worker expires a lease');

# compaction and archiving by the worker: 350 jobs in blocks of 100, all
# acked; blocks 0..2 are archived, block 3 (open) and 4 (made ahead) stay
$node->safe_psql(
	'postgres', q{
	SELECT pgqueue.queue_create('w', block_size => 100, retention => '0');
	SELECT pgqueue.queue_push_batch('w', array_agg(jsonb_build_object('n', i)))
	  FROM generate_series(1, 350) i;
	SELECT pgqueue.queue_ack('w', array_agg(job_id), array_agg(attempt))
	  FROM pgqueue.queue_pop('w', 350);
});
ok( poll(
		'postgres', q{
		SELECT string_agg(block_no || ' ' || state, ', ' ORDER BY first_id)
		  FROM pgqueue.blocks WHERE queue = 'w'},
		'3 open, 4 open', 15),
	'the worker compacts the finished blocks: two blocks left');
is( $node->safe_psql(
		'postgres', q{
		SELECT count(DISTINCT job_id) FILTER (WHERE archived) || ' '
			   || count(DISTINCT job_id) FILTER (WHERE NOT archived) || ' '
			   || count(DISTINCT job_id) || ' '
			   || count(*) FILTER (WHERE state = 'succeeded')
		  FROM pgqueue.job_history WHERE queue = 'w'}),
	'300 50 350 350',
	'job_history: 300 jobs archived, 50 live, each succeeded once');
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FROM pgqueue.archive a JOIN pgqueue.queue q USING (queue_id)
		   WHERE q.name = 'w'}),
	'1',
	'one archive table for the day');
ok($node->log_contains(qr/pgqueue: queue "w": _compact_step: \d+ blocks 0\.\.\d: 0 jobs moved, \d+ status rows archived/),
	'the worker logs what it compacted');

# --- backoff of a queue whose maintenance fails ------------------------------

$node->safe_psql(
	'broken', q{
	SELECT pgqueue.queue_create('b', block_size => 100);
	SELECT pgqueue.queue_push('b', '{}');
});
my $broken_pid = worker_pid('broken');
my $log_offset = -s $node->logfile;
$node->safe_psql(
	'broken', q{
	DO $$ BEGIN
		EXECUTE 'DROP TABLE ' || pgqueue_internal._rel('s', (SELECT queue_id FROM pgqueue.queue WHERE name = 'b'), 0);
	END $$;
});
usleep(4_500_000);
my $log = slurp_file($node->logfile, $log_offset);
my $failures = () = $log =~ /pgqueue maintenance of queue "b" failed in _maintain_queue: relation "pgqueue_data\.s_\d+_0" does not exist/g;
ok($failures >= 2 && $failures <= 3,
	"a queue whose maintenance fails on every round is retried after a backoff: $failures failures in 4.5 s"
);
is(worker_pid('broken'), $broken_pid, 'the worker goes on: it is the same process');
like($node->safe_psql('broken', q{SELECT failures || ' ' || last_error FROM pgqueue.maintenance WHERE queue = 'b'}),
	qr/^[23] relation "pgqueue_data\.s_\d+_0" does not exist$/,
	'pgqueue.maintenance shows the failures in a row and the last error');
$node->safe_psql('broken', q{SELECT pgqueue.queue_drop('b', force => true)});

# --- reload of pgqueue.naptime ---------------------------------------------

my $pid = worker_pid('postgres');
set_conf("SET pgqueue.naptime = '1h'");
usleep(1_000_000);    # the worker runs one round on the reload, then sleeps
$node->safe_psql('postgres',
	q{SELECT count(*) FROM pgqueue.queue_pop('lease', lease => '10 milliseconds')});
usleep(1_500_000);
is( $node->safe_psql(
		'postgres',
		q{SELECT state || ' ' || failures FROM pgqueue.jobs WHERE queue = 'lease'}),
	'executing 1',
	'with pgqueue.naptime = 1h (reload) no round runs: the lease stays expired but unhandled');

# DROP DATABASE and CREATE DATABASE ... TEMPLATE while the worker of the
# database sleeps for an hour: the worker must get out of their way
$node->safe_psql('postgres', 'CREATE DATABASE sleepy');
$node->safe_psql('sleepy',   'CREATE EXTENSION pgqueue');
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');  # wake the launcher
ok(poll('postgres', $workers_sql, 'broken,dropext,other,postgres,sleepy', 10),
	'a worker starts for a database made while the others sleep');
usleep(300_000);
my $t0 = time();
my ($ret, $out, $err) = $node->psql('postgres', 'CREATE DATABASE sleepy_copy TEMPLATE sleepy');
is($ret, 0, 'CREATE DATABASE ... TEMPLATE of a database whose worker sleeps (naptime 1h) succeeds')
  or diag($err);
$t0 = time();
($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE sleepy');
is($ret, 0, 'DROP DATABASE of a database whose worker sleeps (naptime 1h) succeeds') or diag($err);
ok(time() - $t0 < 4, 'and does not wait long: ' . sprintf('%.1f s', time() - $t0));
$node->psql('postgres', 'DROP DATABASE IF EXISTS sleepy WITH (FORCE)');
$node->psql('postgres', 'DROP DATABASE IF EXISTS sleepy_copy');

set_conf('RESET pgqueue.naptime');
ok( poll(
		'postgres',
		q{SELECT state || ' ' || failures FROM pgqueue.jobs WHERE queue = 'lease'},
		'available 2', 5),
	'back to 100 ms (reload): the worker wakes up and expires the lease');
is(worker_pid('postgres'), $pid, 'the same worker process kept running across the reloads');

# --- SIGTERM ---------------------------------------------------------------

$pid = worker_pid('postgres');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok( poll(
		'postgres', q{
		SELECT count(*) FROM pg_stat_activity
		 WHERE backend_type = 'pgqueue maintenance' AND datname = 'postgres'
		   AND pid <> } . $pid, '1', 10),
	'a worker ended by SIGTERM is started again');
ok($node->log_contains(qr/terminating background worker "pgqueue maintenance.*" due to administrator command/),
	'the SIGTERM shows in the log');

# --- SIGKILL: crash restart --------------------------------------------------

$node->safe_psql(
	'postgres', q{
	SELECT pgqueue.queue_create('crash', block_size => 100, retention => '0');
	SELECT pgqueue.queue_push_batch('crash', array_agg(jsonb_build_object('n', i)))
	  FROM generate_series(1, 250) i;
	SELECT pgqueue.queue_ack('crash', array_agg(job_id), array_agg(attempt))
	  FROM pgqueue.queue_pop('crash', 185);
	SELECT count(*) FROM pgqueue.queue_pop('crash', 10, lease => '1 hour');
});
$pid = worker_pid('postgres');
ok($pid > 0, 'the worker of database postgres runs');
$log_offset = -s $node->logfile;
kill 'KILL', $pid;
ok( poll(
		'postgres', 'SELECT 1', '1', 30),
	'the cluster accepts connections again after SIGKILL of the worker');
$log = slurp_file($node->logfile, $log_offset);
like($log, qr/background worker "pgqueue maintenance" \(PID $pid\) was terminated by signal 9/,
	'the postmaster saw the worker killed');
like($log, qr/all server processes terminated; reinitializing/, 'and restarted the cluster');
ok(poll('postgres', $workers_sql, 'broken,dropext,other,postgres', 10),
	'the launcher starts the workers again after the crash restart');
ok( poll(
		'postgres', q{
		SELECT string_agg(block_no || ' ' || state, ', ' ORDER BY first_id)
		  FROM pgqueue.blocks WHERE queue = 'crash'},
		'-1 closed, 2 open, 3 open', 10),
	'and maintenance goes on: block 0 archived, block 1 compacted');
is( $node->safe_psql(
		'postgres', q{
		WITH s AS (SELECT job_id, state FROM pgqueue.jobs WHERE queue = 'crash'
				   UNION ALL
				   SELECT DISTINCT job_id, 'succeeded' FROM pgqueue.job_history h
				    WHERE queue = 'crash' AND archived
					  AND NOT EXISTS (SELECT 1 FROM pgqueue.jobs j
									   WHERE j.queue = 'crash' AND j.job_id = h.job_id))
		SELECT count(*) || ' ' || count(DISTINCT job_id) || ' '
			   || count(*) FILTER (WHERE state = 'succeeded') || ' '
			   || count(*) FILTER (WHERE state = 'executing') || ' '
			   || count(*) FILTER (WHERE state = 'available')
		  FROM s}),
	'250 250 185 10 55',
	'no job lost or doubled: 185 succeeded, 10 executing, 55 available');

# --- DROP DATABASE while the worker runs -------------------------------------

ok(worker_pid('other') > 0, 'the worker of database other runs');
$t0 = time();
($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE other');
is($ret, 0, 'DROP DATABASE of a database whose worker runs succeeds') or diag($err);
ok(time() - $t0 < 4, 'within a few seconds: ' . sprintf('%.1f s', time() - $t0));
usleep(500_000);
is($node->safe_psql('postgres', $workers_sql),
	'broken,dropext,postgres', 'no worker for the dropped database');

# --- DROP EXTENSION while the worker runs ------------------------------------

$node->safe_psql(
	'dropext', q{
	SELECT pgqueue.queue_create('d', block_size => 100, retention => '0');
	SELECT pgqueue.queue_push_batch('d', array_agg(jsonb_build_object('n', i)))
	  FROM generate_series(1, 300) i;
	SELECT pgqueue.queue_ack('d', array_agg(job_id), array_agg(attempt))
	  FROM pgqueue.queue_pop('d', 250);
});
ok(worker_pid('dropext') > 0, 'the worker of database dropext runs');
($ret, $out, $err) = $node->psql('dropext', 'DROP EXTENSION pgqueue CASCADE');
is($ret, 0, 'DROP EXTENSION pgqueue CASCADE while the worker runs') or diag($err);
ok(poll('postgres', $workers_sql, 'broken,postgres', 5),
	'the worker leaves the database without the extension');
is( $node->safe_psql(
		'dropext', q{
		SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 'pgqueue_data') + count(*)
		  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		 WHERE n.nspname IN ('pgqueue', 'pgqueue_data')}),
	'0',
	'the extension\'s data schema and every table of it are gone');

# --- pgqueue.worker = off ----------------------------------------------------

set_conf('SET pgqueue.worker = off');
ok(poll('postgres', $workers_sql, '', 5), 'pgqueue.worker = off (reload) stops the workers');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgqueue launcher'"),
	'1',
	'the launcher stays');
$node->safe_psql('postgres',
	q{SELECT count(*) FROM pgqueue.queue_pop('lease', lease => '10 milliseconds')});
usleep(1_000_000);
is( $node->safe_psql(
		'postgres',
		q{SELECT state FROM pgqueue.jobs WHERE queue = 'lease'}),
	'executing',
	'no maintenance runs while pgqueue.worker is off');
is($node->safe_psql('postgres', $workers_sql), '', 'and no worker came back');

$node->stop;
done_testing();
