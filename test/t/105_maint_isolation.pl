# 105_maint_isolation.pl: one queue whose maintenance fails never stops the
# maintenance of the others (issue 11, finding 3).
#
# pgqueue.fault_injection = 'error:maintain_queue:bad' makes
# _maintain_queue of queue "bad" raise an error (XX000) on every call.  Each
# database gets three queues, made in this order (the order of a round):
#   bad    blocks of 100, retention 0, lease 1 s: 350 jobs, 300 acked, one
#          leased (job 301);
#   good   the same;
#   good2  blocks of 100, lease 1 s: 150 jobs, none finished, one leased
#          (job 1).
# Checks, in order:
#   - with the worker off, SELECT pgqueue.maintain() in a session (database
#     "manual") returns instead of failing: the error of "bad" is under
#     "errors" (queue, duty, error), and the duties of good and good2 are
#     done all the same (two leases expired, four full blocks closed, the
#     finished blocks compacted and archived, two blocks made ahead);
#     "bad" is left as it was and shown in pgqueue.maintenance;
#   - with the worker on (pgqueue.naptime = 100 ms) in database "postgres",
#     while "bad" keeps failing:
#       good:  its expired lease is expired (job 301 available again), its
#              three full blocks are closed, compacted and archived (blocks
#              back to "3 open, 4 open", 300 jobs archived in job_history)
#              and block 4 is made ahead;
#       good2: its lease is expired, its full block 0 is closed and block 2
#              is made ahead;
#       bad:   nothing of its maintenance runs: its lease stays executing,
#              its blocks stay open, nothing is archived; pgqueue.maintenance
#              shows it with failures >= 2 and the fault's error text;
#   - the worker is the same process all along (pg_stat_activity), and the
#     log shows each failure with the queue's name, spaced by the backoff
#     (about 1 s, then 2 s, ...), not once per 100 ms round;
#   - after RESET pgqueue.fault_injection (reload), the worker maintains
#     "bad" again at its retry time (lease expired, blocks compacted, jobs
#     archived) and its row leaves pgqueue.maintenance;
#   - while a session holds the maintenance of good2 (maintain() in an open
#     transaction), the worker leaves good2 for later rounds and goes on
#     with good: no failure, no wait, no new worker (issue 14, bug 2; with
#     the worker's duty not taking the lock of the queue's maintenance, it
#     expires good2's lease while the session holds on).
#
# Against pgqueue 0.1.0 (git show 019fb96:src/worker.c) this fails: its
# worker ran the queues in order and died at the first error, so "good" and
# "good2", which come after "bad", never got maintenance (their leases
# stayed executing, their blocks open), the worker was restarted after a
# backoff with a new pid, and maintain() failed as a whole for every queue.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = PostgreSQL::Test::Cluster->new('maint_isolation');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'pgqueue'
pgqueue.naptime = 100
pgqueue.worker = off
});
$node->start;

# Run a query until it returns $expected or $secs pass.
sub poll
{
	my ($db, $sql, $expected, $secs) = @_;
	my $deadline = time() + ($secs // 30);
	my $got = '';
	while (time() < $deadline)
	{
		my ($out, $err) = ('', '');
		my $ret = $node->psql($db, $sql, stdout => \$out, stderr => \$err);
		$got = $ret == 0 ? $out : "error: $err";
		return 1 if $ret == 0 && $out eq $expected;
		usleep(100_000);
	}
	diag("poll timed out: $sql\nexpected: $expected\nlast: $got");
	return 0;
}

sub set_conf
{
	my ($setting) = @_;
	$node->safe_psql('postgres', "ALTER SYSTEM $setting");
	$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
}

sub worker_pid
{
	my ($db) = @_;
	return $node->safe_psql('postgres',
		"SELECT coalesce(max(pid), 0) FROM pg_stat_activity"
		  . " WHERE backend_type = 'pgqueue maintenance' AND datname = '$db'");
}

# The three queues, made in this order, with their work; the leases are
# taken last.
sub build
{
	my ($db) = @_;
	$node->safe_psql(
		$db, q{
	CREATE EXTENSION pgqueue;
	SELECT pgqueue.queue_create('bad', block_size => 100, retention => '0',
								default_lease => '1 second', backoff_jitter => 0);
	SELECT pgqueue.queue_create('good', block_size => 100, retention => '0',
								default_lease => '1 second', backoff_jitter => 0);
	SELECT pgqueue.queue_create('good2', block_size => 100, default_lease => '1 second',
								backoff_jitter => 0);
	SELECT pgqueue.queue_push_batch(q, array_agg(jsonb_build_object('n', i)))
	  FROM unnest(ARRAY['bad', 'good']) q, generate_series(1, 350) i GROUP BY q;
	SELECT pgqueue.queue_push_batch('good2', array_agg(jsonb_build_object('n', i)))
	  FROM generate_series(1, 150) i;
	SELECT pgqueue.queue_ack('bad', array_agg(job_id), array_agg(attempt))
	  FROM pgqueue.queue_pop('bad', 300, lease => '1 hour');
	SELECT pgqueue.queue_ack('good', array_agg(job_id), array_agg(attempt))
	  FROM pgqueue.queue_pop('good', 300, lease => '1 hour');
	SELECT count(*) FROM unnest(ARRAY['bad', 'good', 'good2']) q, pgqueue.queue_pop(q);
});
}

my $blocks_sql = q{
	SELECT string_agg(block_no || ' ' || state, ', ' ORDER BY first_id)
	  FROM pgqueue.blocks WHERE queue = '%s'};
my $lease_sql = q{
	SELECT job_id || ' ' || state || ' ' || failures FROM pgqueue.jobs
	 WHERE queue = '%s' AND job_id = %d};
my $archived_sql = q{
	SELECT count(DISTINCT job_id) FROM pgqueue.job_history WHERE queue = '%s' AND archived};

sub lease_of
{
	my ($db, $q) = @_;
	return $node->safe_psql($db, sprintf($lease_sql, $q, $q eq 'good2' ? 1 : 301));
}

# the state of queue "bad" that no maintenance has touched
sub bad_untouched
{
	my ($db, $what) = @_;
	is($node->safe_psql($db, sprintf($blocks_sql, 'bad')),
		'0 open, 1 open, 2 open, 3 open', "$what: bad: its full blocks are not closed");
	is(lease_of($db, 'bad'), '301 executing 0', "$what: bad: its expired lease is not expired");
	is($node->safe_psql($db, sprintf($archived_sql, 'bad')), '0', "$what: bad: nothing archived");
}

# the state of the queues before any maintenance
sub before
{
	my ($db) = @_;
	is( $node->safe_psql(
			$db, q{
		SELECT string_agg(queue || ': ' || blocks, '; ' ORDER BY queue)
		  FROM (SELECT queue, string_agg(block_no || ' ' || state, ', ' ORDER BY first_id) blocks
				  FROM pgqueue.blocks GROUP BY queue) b}),
		'bad: 0 open, 1 open, 2 open, 3 open; good: 0 open, 1 open, 2 open, 3 open; good2: 0 open, 1 open',
		"$db, before any maintenance: every block open, none made ahead");
	is( $node->safe_psql(
			$db, q{
		SELECT string_agg(queue || ' ' || job_id || ' ' || state, ', ' ORDER BY queue)
		  FROM pgqueue.jobs WHERE state = 'executing'}),
		'bad 301 executing, good 301 executing, good2 1 executing',
		"$db, before any maintenance: one job leased in each queue");
}

my $fault_error = 'pgqueue fault injection at step "maintain_queue:bad"';

# --- maintain() in a session -------------------------------------------------

$node->safe_psql('postgres', 'CREATE DATABASE manual');
build('manual');
set_conf(q{SET pgqueue.fault_injection = 'error:maintain_queue:bad'});
is($node->safe_psql('manual', 'SHOW pgqueue.fault_injection'),
	'error:maintain_queue:bad', 'the fault is set for every session (ALTER SYSTEM, reload)');
before('manual');
usleep(1_200_000);    # the leases of 1 s expire
my ($ret, $out, $err) = (0, '', '');
$ret = $node->psql('manual', 'CREATE TABLE result AS SELECT pgqueue.maintain() AS m',
	stderr => \$err);
is($ret, 0, 'maintain() with one failing queue returns instead of failing') or diag($err);
is( $node->safe_psql(
		'manual', q{
	SELECT e ->> 'queue', e ->> 'duty', e ->> 'error'
	  FROM result, jsonb_array_elements(m -> 'errors') e}),
	qq{bad|_maintain_queue|$fault_error},
	'maintain(): "errors" holds the failure of bad alone: queue, duty and error');
is( $node->safe_psql(
		'manual', q{
	SELECT concat_ws(' ', m -> 'expired_leases', m -> 'closed_blocks', m -> 'done_blocks',
					 m -> 'created_blocks', jsonb_array_length(m -> 'compacted'))
	  FROM result}),
	'2 4 3 2 1',
	'maintain(): the other queues\' duties are done: 2 leases expired, 4 blocks closed, 3 done, 2 made ahead, 1 compaction'
);
like($node->safe_psql('manual', q{SELECT m -> 'compacted' ->> 0 FROM result}),
	qr/^good: 3 blocks 0\.\.2: 0 jobs moved/, 'maintain(): good\'s finished blocks compacted');
is($node->safe_psql('manual', sprintf($blocks_sql, 'good')),
	'3 open, 4 open', 'maintain(): good: blocks 0..2 closed and compacted away, block 4 made ahead');
is(lease_of('manual', 'good'), '301 available 1', 'maintain(): good: its lease expired');
is($node->safe_psql('manual', sprintf($archived_sql, 'good')), '300',
	'maintain(): good: 300 jobs archived');
is($node->safe_psql('manual', sprintf($blocks_sql, 'good2')),
	'0 closed, 1 open, 2 open', 'maintain(): good2: block 0 closed, block 2 made ahead');
is(lease_of('manual', 'good2'), '1 available 1', 'maintain(): good2: its lease expired');
bad_untouched('manual', 'maintain()');
is( $node->safe_psql(
		'manual', q{SELECT failures || ' ' || last_error || ' ' || (retry_at > last_error_at)
					  FROM pgqueue.maintenance}),
	"1 $fault_error true",
	'maintain(): pgqueue.maintenance shows bad alone, with one failure, the error and a retry time');
($ret, $out, $err) = $node->psql('manual', q{SELECT pgqueue.maintain('bad') -> 'errors'});
is($ret, 0, 'maintain(\'bad\') returns too') or diag($err);
like($out, qr/^\[\{.*"queue": "bad".*\}\]$/, 'maintain(\'bad\') reports the failure of bad');
$node->safe_psql('postgres', 'DROP DATABASE manual');

# --- the worker --------------------------------------------------------------

build('postgres');
before('postgres');
my $offset = -s $node->logfile;
my $t0 = time();
set_conf('SET pgqueue.worker = on');
ok( poll(
		'postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgqueue maintenance'},
		'1', 10),
	'worker: pgqueue.worker = on starts the maintenance worker');
my $pid = worker_pid('postgres');

ok( poll(
		'postgres', q{SELECT coalesce(max(failures), 0) >= 2 FROM pgqueue.maintenance
					   WHERE queue = 'bad'}, 't', 10),
	'worker: bad fails again and again: failures >= 2 in pgqueue.maintenance');
is( $node->safe_psql(
		'postgres', q{
	SELECT string_agg(queue || ' ' || last_error || ' ' || (retry_at > last_error_at), ', ')
	  FROM pgqueue.maintenance}),
	"bad $fault_error true",
	'worker: pgqueue.maintenance lists bad alone, with the error and a retry time');

ok(poll('postgres', sprintf($blocks_sql, 'good'), '3 open, 4 open', 10),
	'worker: good: its full blocks 0..2 are closed, compacted and archived, block 4 made ahead');
is($node->safe_psql('postgres', sprintf($archived_sql, 'good')),
	'300', 'worker: good: 300 jobs archived in job_history');
ok(poll('postgres', sprintf($lease_sql, 'good', 301), '301 available 1', 10),
	'worker: good: its expired lease is expired');
ok(poll('postgres', sprintf($blocks_sql, 'good2'), '0 closed, 1 open, 2 open', 10),
	'worker: good2: its full block 0 is closed, block 2 made ahead');
ok(poll('postgres', sprintf($lease_sql, 'good2', 1), '1 available 1', 10),
	'worker: good2: its expired lease is expired');

# good keeps being maintained at every round while bad waits for its retry
$node->safe_psql('postgres',
	q{SELECT count(*) FROM pgqueue.queue_pop('good', lease => '200 milliseconds')});
is($node->safe_psql('postgres', sprintf($lease_sql, 'good', 301)),
	'301 executing 1', 'worker: good: job 301 leased again, for 200 ms');
ok(poll('postgres', sprintf($lease_sql, 'good', 301), '301 available 2', 3),
	'worker: good: that lease is expired too, within a few rounds');

bad_untouched('postgres', 'worker');

# the backoff: failures after about 1 s, then 2 s (then 4 s), not at every
# round of 100 ms
ok( poll(
		'postgres', q{SELECT failures FROM pgqueue.maintenance WHERE queue = 'bad'}, '3', 10),
	'worker: bad has failed 3 times in a row');
my $elapsed = time() - $t0;
my $log = slurp_file($node->logfile, $offset);
my @at;
while ($log =~ /^\d{4}-\d\d-\d\d (\d\d):(\d\d):(\d\d\.\d+) \S+ \[(\d+)\] .*?LOG:  pgqueue maintenance of queue "bad" failed in _maintain_queue: \Q$fault_error\E$/mg)
{
	push @at, [ $1 * 3600 + $2 * 60 + $3, $4 ];
}
is(scalar(@at), 3,
	sprintf('worker: the log shows 3 failures of bad with its name in %.1f s (%d rounds of 100 ms)',
		$elapsed, $elapsed * 10));
is(join(',', map { $_->[1] } @at), join(',', ($pid) x scalar(@at)),
	'worker: all logged by the same worker process');
my @gaps = map { my $g = $at[$_][0] - $at[ $_ - 1 ][0]; $g < 0 ? $g + 86400 : $g } 1 .. $#at;
ok( @gaps == 2 && $gaps[0] >= 0.9 && $gaps[0] < 1.9 && $gaps[1] >= 1.9 && $gaps[1] < 3.0,
	'worker: spaced by the backoff: about 1 s, then 2 s: ' . join(', ', map { sprintf('%.2f s', $_) } grep { defined } @gaps[0 .. 4]));
ok($pid > 0 && worker_pid('postgres') == $pid, 'worker: the worker is the same process all along');
unlike($log, qr/background worker "pgqueue maintenance" \(PID \d+\) exited/,
	'worker: no maintenance worker exited');

# --- the fault is gone ---------------------------------------------------------

set_conf('RESET pgqueue.fault_injection');
ok(poll('postgres', sprintf($blocks_sql, 'bad'), '3 open, 4 open', 10),
	'after RESET: bad is maintained at its retry time: blocks 0..2 closed, compacted, block 4 made ahead');
is(lease_of('postgres', 'bad'), '301 available 1', 'after RESET: bad: its lease is expired');
is($node->safe_psql('postgres', sprintf($archived_sql, 'bad')), '300',
	'after RESET: bad: 300 jobs archived');
ok(poll('postgres', q{SELECT count(*) FROM pgqueue.maintenance}, '0', 5),
	'after RESET: bad\'s row leaves pgqueue.maintenance');
$log = slurp_file($node->logfile, $offset);
my $failures = () = $log =~ /pgqueue maintenance of queue "bad" failed/g;
is($failures, 3, 'after RESET: no more failures logged');
ok($pid > 0 && worker_pid('postgres') == $pid, 'after RESET: still the same worker process');

# --- a queue's maintenance held by a session (issue 14, bug 2) ------------------

# a session's maintain('good2') holds the lock of good2's maintenance until
# it commits: the worker leaves good2 for a later round instead of waiting
# (and stalling every queue) or failing on blocks the session changed.  A
# lease of 300 ms in each of good and good2, taken after the session's
# round: good's is expired, good2's is not while the session holds on.
my $holder = $node->background_psql('postgres', on_error_stop => 0);
$holder->query_safe(q{BEGIN});
$holder->query_safe(q{SELECT pgqueue.maintain('good2')});
$offset = -s $node->logfile;
my %leased;
for my $q ('good', 'good2')
{
	$leased{$q} = $node->safe_psql('postgres',
		qq{SELECT job_id FROM pgqueue.queue_pop('$q', lease => '300 milliseconds')});
}
my $lease1_sql = q{SELECT state FROM pgqueue.jobs WHERE queue = '%s' AND job_id = %d};
ok(poll('postgres', sprintf($lease1_sql, 'good', $leased{good}), 'available', 5),
	'held: the worker expires the lease of good');
usleep(1_000_000);
is($node->safe_psql('postgres', sprintf($lease1_sql, 'good2', $leased{good2})),
	'executing', 'held: the worker leaves good2, whose maintenance a session holds');
$holder->query_safe(q{COMMIT});
$holder->quit;
ok(poll('postgres', sprintf($lease1_sql, 'good2', $leased{good2}), 'available', 5),
	'after the session commits, the worker expires the lease of good2');
$log = slurp_file($node->logfile, $offset);
unlike($log, qr/pgqueue maintenance of queue "good2" failed/,
	'held: no failure of good2 logged');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pgqueue.maintenance}), '0',
	'held: pgqueue.maintenance stays empty');
ok($pid > 0 && worker_pid('postgres') == $pid, 'held: still the same worker process');

$node->stop;
done_testing();
