
# 001_wait.pl: waiting pops across sessions and processes, where the
# isolation specs cannot go: wake-up latency seen by a client, cancellation
# by pg_cancel_backend, pg_terminate_backend and a lost client, a fast
# shutdown while a pop waits, NOTIFY on push, the shared counters since
# server start, and the polling fallback of a server that does not preload
# pgqueue.
#
# What a breakage would change:
#  - no wake-up at commit: the waiter returns after its 20 s wait, or
#    empty; the latency check fails;
#  - a sleep that does not check for interrupts: pg_cancel_backend, a lost
#    client (client_connection_check_interval) or a fast shutdown take the
#    whole wait, and the timing checks fail;
#  - a waiter that stays counted after its backend ended (FATAL skips the
#    PG_FINALLY cleanup): "waiters" stays 1;
#  - NOTIFY missing, sent before commit, sent for a rolled-back push or for
#    a queue without the option: the notification checks;
#  - counters that count uncommitted work, or are NULL with pgqueue
#    preloaded: the counter checks;
#  - without shared_preload_libraries, a waiting pop that hangs, returns at
#    once, or does not poll: the 300 ms and poll_interval checks; keys and
#    limits without it: refused with 55000 and a hint.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

# Run a DO loop on the server until the SQL condition holds (true) or the
# time is up (false); pg_stat_activity is re-read at each round.
sub wait_until
{
	my ($node, $cond, $secs) = @_;
	$secs //= 10;
	my $rounds = $secs * 200;
	my ($ret, $out, $err) = $node->psql(
		'postgres', qq{
DO \$\$
BEGIN
	FOR i IN 1 .. $rounds LOOP
		PERFORM pg_stat_clear_snapshot();
		IF ($cond) THEN
			RETURN;
		END IF;
		PERFORM pg_sleep(0.005);
	END LOOP;
	RAISE EXCEPTION 'condition not met after $secs s: %', \$c\$$cond\$c\$;
END
\$\$;
});
	diag($err) if $ret != 0;
	return $ret == 0;
}

# Whether the backend with this pid sleeps in a waiting pop.
sub sleeping
{
	my ($pid) = @_;
	return "EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $pid"
	  . " AND wait_event_type = 'Extension')";
}

# Start a background psql session that runs $sql (a waiting pop) and
# return it with its backend pid, once the pop sleeps.
sub start_waiter
{
	my ($node, $sql, @setup) = @_;
	my $w = $node->background_psql('postgres', on_error_stop => 0,
		timeout => 120);
	my $pid = $w->query_safe('SELECT pg_backend_pid()');
	$w->query_safe($_) for @setup;
	$w->query_until(qr/started/, "\\echo started\n$sql;\n");
	ok(wait_until($node, sleeping($pid)), "waiter $pid sleeps in its pop");
	return ($w, $pid);
}

# A queue with a priority-0 job pushed, popped and acked.
sub seeded_queue
{
	my ($node, $queue, $opts) = @_;
	$opts //= '';
	$node->safe_psql(
		'postgres', qq{
SELECT pgqueue.queue_create('$queue' $opts);
SELECT pgqueue.queue_push('$queue', '{"seed": true}');
SELECT pgqueue.queue_ack('$queue', job_id, attempt) FROM pgqueue.queue_pop('$queue');
});
	return;
}

sub waiters
{
	my ($node, $queue) = @_;
	return $node->safe_psql('postgres',
		"SELECT coalesce(waiters::text, 'NULL') FROM pgqueue.stats WHERE queue = '$queue'");
}

###########################################################################
# A server with pgqueue preloaded
###########################################################################

my $node = PostgreSQL::Test::Cluster->new('preloaded');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'pgqueue'
max_connections = 30
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pgqueue');

# --- latency: a committed push wakes a pop waiting 20 s
seeded_queue($node, 'lat');
my ($w, $pid) = start_waiter($node,
	"SELECT job_id, payload->>'n' FROM pgqueue.queue_pop('lat', wait => '20 s')");
is(waiters($node, 'lat'), '1', 'stats shows one waiter on lat');
$node->safe_psql('postgres', q{SELECT pgqueue.queue_push('lat', '{"n": "x"}')});
my $t0 = time;
my $out = $w->query("SELECT 'end'");
my $took = time - $t0;
is($out, "2|x\nend", 'the waiter returns the job pushed and committed by another session');
cmp_ok($took, '<', 5, 'the waiter returns well before its 20 s wait ends');
note(sprintf('wake-up latency seen by the client: %.1f ms', $took * 1000));
is(waiters($node, 'lat'), '0', 'no waiter left on lat');

# --- a wait needs READ COMMITTED: SQLSTATE 0A000 under the other levels
# (the isolation spec wait_timeout shows the message; psql shows the code)
for my $level ('REPEATABLE READ', 'SERIALIZABLE')
{
	my ($ret, $o, $e) = $node->psql(
		'postgres', qq{
\\set VERBOSITY verbose
BEGIN ISOLATION LEVEL $level;
SELECT * FROM pgqueue.queue_pop('lat', wait => '1 s');
});
	like($e,
		qr/ERROR:  0A000: queue_pop with a wait requires the READ COMMITTED isolation level/,
		"a wait under $level fails with 0A000");
}
my ($ret, $o, $e) = $node->psql(
	'postgres', q{
\set VERBOSITY verbose
SET default_transaction_isolation = 'repeatable read';
SELECT * FROM pgqueue.queue_pop('lat', wait => '1 s');
});
like($e, qr/ERROR:  0A000: /,
	'a wait in a single-statement transaction under repeatable read fails too');

# --- pg_cancel_backend ends a waiting pop; the session goes on
($w, $pid) = start_waiter($node,
	"SELECT job_id FROM pgqueue.queue_pop('lat', wait => '20 s')");
$t0 = time;
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
$out = $w->query("SELECT 'alive'");
$took = time - $t0;
is($out, 'alive', 'the canceled session can run the next query');
like($w->{stderr}, qr/ERROR:  canceling statement due to user request/,
	'pg_cancel_backend cancels the waiting pop');
cmp_ok($took, '<', 5, 'the cancellation ends the wait at once');
is(waiters($node, 'lat'), '0', 'no waiter left after the cancellation');
$w->quit;

# --- pg_terminate_backend ends a waiting pop and its backend
($w, $pid) = start_waiter($node,
	"SELECT job_id FROM pgqueue.queue_pop('lat', wait => '20 s')");
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok( wait_until(
		$node, "NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $pid)", 5),
	'pg_terminate_backend ends the waiting backend');
ok( wait_until(
		$node, "(SELECT waiters FROM pgqueue.stats WHERE queue = 'lat') = 0", 2),
	'no waiter left after pg_terminate_backend');
$w->{run}->kill_kill;

# --- a lost client is noticed with client_connection_check_interval
$node->safe_psql('postgres', q{SELECT pgqueue.queue_create('lost')});
($w, $pid) = start_waiter(
	$node,
	"SELECT job_id FROM pgqueue.queue_pop('lost', wait => '20 s')",
	"SET client_connection_check_interval = '100ms'");
$w->{run}->kill_kill;
ok( wait_until(
		$node, "NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $pid)", 5),
	'with client_connection_check_interval, a waiting pop whose client is gone ends');
ok( wait_until(
		$node, "(SELECT waiters FROM pgqueue.stats WHERE queue = 'lost') = 0", 2),
	'no waiter left after the client was lost');

# --- NOTIFY pgqueue, '<queue>' at commit, for queues with notify => true
$node->safe_psql('postgres', q{
SELECT pgqueue.queue_create('n_on', notify => true);
SELECT pgqueue.queue_create('n_off');
});
my $note_re = qr/Asynchronous notification "pgqueue" with payload "([^"]*)" received/;
$out = $node->safe_psql('postgres', q{
LISTEN pgqueue;
SELECT pgqueue.queue_push('n_on', '{}');
});
my @got = $out =~ /$note_re/g;
is_deeply(\@got, ['n_on'], 'a committed push to a notify queue sends NOTIFY pgqueue with the queue name');
$out = $node->safe_psql('postgres', q{
LISTEN pgqueue;
BEGIN;
SELECT pgqueue.queue_push_batch('n_on', ARRAY['{}', '{}', '{}']::jsonb[]);
SELECT pgqueue.queue_push('n_on', '{}');
\echo before commit
COMMIT;
\echo after commit
});
like($out, qr/before commit\n.*$note_re.*\nafter commit/s,
	'the notification is sent at commit, not at push time');
@got = $out =~ /$note_re/g;
is(scalar(@got), 1, 'four pushes in one transaction send one notification');
$out = $node->safe_psql('postgres', q{
LISTEN pgqueue;
BEGIN;
SELECT pgqueue.queue_push('n_on', '{}');
ROLLBACK;
SELECT pgqueue.queue_push('n_off', '{}');
SELECT 'done';
});
unlike($out, $note_re,
	'no notification for a rolled-back push, nor for a queue without notify');
$node->safe_psql('postgres', q{SELECT pgqueue.queue_alter('n_on', notify => false)});
$out = $node->safe_psql('postgres', q{
LISTEN pgqueue;
SELECT pgqueue.queue_push('n_on', '{}');
SELECT 'done';
});
unlike($out, $note_re, 'queue_alter(notify => false) stops the notifications');
$node->safe_psql('postgres', q{SELECT pgqueue.queue_alter('n_off', notify => true)});
$out = $node->safe_psql('postgres', q{
LISTEN pgqueue;
SELECT pgqueue.queue_push('n_off', '{}');
});
@got = $out =~ /$note_re/g;
is_deeply(\@got, ['n_off'], 'queue_alter(notify => true) starts them');

# --- the shared counters count committed work, since server start
$node->safe_psql('postgres', q{SELECT pgqueue.queue_create('cnt', backoff_jitter => 0)});
$node->safe_psql('postgres', q{
SELECT pgqueue.queue_push_batch('cnt', ARRAY['{}', '{}', '{}', '{}']::jsonb[]);
BEGIN;
SELECT pgqueue.queue_push('cnt', '{"rolled": "back"}');
SELECT * FROM pgqueue.queue_pop('cnt', 4);
ROLLBACK;
SELECT * FROM pgqueue.queue_pop('cnt', 3);
SELECT pgqueue.queue_ack('cnt', 1, attempt => 1);
SELECT pgqueue.queue_fail('cnt', 2, 'later', retry_in => '1 hour', attempt => 1);
SELECT pgqueue.queue_abort('cnt', 4, 'not needed');
});
is( $node->safe_psql(
		'postgres', q{
SELECT pushed, popped, acked, failed_attempts, aborted_jobs, waiters
  FROM pgqueue.stats WHERE queue = 'cnt'}),
	'4|3|1|1|1|0',
	'counters: 4 pushed, 3 popped, 1 acked, 1 failed attempt, 1 aborted; the rolled-back push and pops are not counted'
);

$node->restart;
is( $node->safe_psql(
		'postgres', q{
SELECT pushed, popped, acked, failed_attempts, aborted_jobs, waiters
  FROM pgqueue.stats WHERE queue = 'cnt'}),
	'0|0|0|0|0|0',
	'after a restart the counters start again from 0');

# --- a fast shutdown does not wait for a waiting pop
seeded_queue($node, 'down');
($w, $pid) = start_waiter($node,
	"SELECT job_id FROM pgqueue.queue_pop('down', wait => '60 s')");
$t0 = time;
$node->stop('fast');
$took = time - $t0;
cmp_ok($took, '<', 10, 'a fast shutdown while a pop waits 60 s completes within seconds');
$w->{run}->kill_kill;

###########################################################################
# A server without shared_preload_libraries: waiting pops poll
###########################################################################

my $plain = PostgreSQL::Test::Cluster->new('not_preloaded');
$plain->init;
$plain->start;
$plain->safe_psql('postgres', 'CREATE EXTENSION pgqueue');
is($plain->safe_psql('postgres', 'SHOW shared_preload_libraries'), '',
	'pgqueue is not preloaded on this server');
seeded_queue($plain, 'poll');

is( $plain->safe_psql(
		'postgres', q{
SELECT count(*), clock_timestamp() - statement_timestamp() >= interval '300 ms',
	   clock_timestamp() - statement_timestamp() < interval '1300 ms'
  FROM pgqueue.queue_pop('poll', wait => '300 ms')}),
	'0|t|t',
	'without preload, a 300 ms wait on an empty queue returns no rows after 300 ms');

# a push during a 5 s wait is picked up within about poll_interval (50 ms)
($w, $pid) = start_waiter(
	$plain,
	"SELECT job_id, clock_timestamp() - statement_timestamp() < interval '4 s'"
	  . " FROM pgqueue.queue_pop('poll', wait => '5 s')",
	'SET pgqueue.poll_interval = 50');
$plain->safe_psql('postgres', q{SELECT pgqueue.queue_push('poll', '{}')});
$t0 = time;
$out = $w->query("SELECT 'end'");
$took = time - $t0;
is($out, "2|t\nend", 'without preload, the waiter gets a job pushed during its wait');
cmp_ok($took, '<', 1, 'within about pgqueue.poll_interval of the commit');
note(sprintf('latency with polling every 50 ms: %.1f ms', $took * 1000));

# the same on a queue that never had a job
$plain->safe_psql('postgres', q{SELECT pgqueue.queue_create('poll_new')});
$w->query_safe('SET pgqueue.poll_interval = 50');
$w->query_until(qr/started/,
	"\\echo started\nSELECT job_id FROM pgqueue.queue_pop('poll_new', wait => '3 s');\n");
ok(wait_until($plain, sleeping($pid)), 'waiter sleeps on poll_new');
$plain->safe_psql('postgres', q{SELECT pgqueue.queue_push('poll_new', '{}')});
$out = $w->query("SELECT 'end'");
is($out, "1\nend", 'without preload, a waiter on a new queue gets its first job');

# cancellation works while polling
$w->query_until(qr/started/,
	"\\echo started\nSELECT job_id FROM pgqueue.queue_pop('poll', wait => '20 s');\n");
ok(wait_until($plain, sleeping($pid)), 'waiter sleeps on poll');
$t0 = time;
$plain->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
$out = $w->query("SELECT 'alive'");
$took = time - $t0;
like($w->{stderr}, qr/ERROR:  canceling statement due to user request/,
	'without preload, pg_cancel_backend cancels a waiting pop');
cmp_ok($took, '<', 5, 'at once');
$w->quit;

$plain->safe_psql('postgres', q{
SELECT pgqueue.queue_push('poll', '{}');
SELECT * FROM pgqueue.queue_pop('poll');
});
is( $plain->safe_psql(
		'postgres', q{
SELECT pushed IS NULL AND popped IS NULL AND acked IS NULL AND failed_attempts IS NULL
	   AND aborted_jobs IS NULL AND waiters IS NULL
  FROM pgqueue.stats WHERE queue = 'poll'}),
	't',
	'without preload, the shared counters are NULL');

# keys and limits need shared memory: the guard says so, as PostgreSQL's
# own extensions do (55000), and pushes nothing
($ret, $o, $e) = $plain->psql('postgres',
	q{SELECT pgqueue.queue_push('poll', '{}', key => 'k')}, extra_params => ['-v', 'VERBOSITY=verbose']);
like($e, qr/ERROR:  55000: ordering keys of queue "poll" need pgqueue in shared_preload_libraries/,
	'without preload, a keyed push fails with 55000');
like($e, qr/HINT:  Add pgqueue to shared_preload_libraries and restart the server\./,
	'with a hint to preload pgqueue');
$plain->safe_psql('postgres', q{SELECT pgqueue.queue_alter('poll', max_in_flight => 1)});
($ret, $o, $e) = $plain->psql('postgres', q{SELECT * FROM pgqueue.queue_pop('poll')},
	extra_params => ['-v', 'VERBOSITY=verbose']);
like($e, qr/ERROR:  55000: the limits of queue "poll" need pgqueue in shared_preload_libraries/,
	'without preload, a pop of a queue with limits fails with 55000');
is($plain->safe_psql('postgres', q{SELECT count(*) FROM pgqueue.jobs WHERE queue = 'poll' AND key IS NOT NULL}),
	'0', 'the refused push left nothing');

$plain->stop;

done_testing();
