# 130_peer_runway.pl: pushes that outrun the blocks made ahead of them
# (issue 14, peer failure 8: the runway overrun of pgmq's partition docs,
# where a queue whose partitions are made ahead by a scheduled job fails
# inserts once the ids outrun the partitions made).
#
# One cluster with pgqueue preloaded (naptime 100 ms), its worker off for
# the first part.  The queues have blocks of 100 jobs and retention 0, so
# a drained block is compacted and archived at the next round.  Checks,
# in order:
#   - one transaction pushes 10 x block_size jobs, 250 by queue_push_batch
#     (blocks 0 to 2), then, while maintain() runs beside it (it would make
#     block 3 ahead, but gives up after waiting half a second for the
#     parent tables, which the push holds), 250 more by a batch and 500 by
#     single queue_push calls (into blocks 3 to 9, none of them made
#     ahead): no error in the
#     push nor in maintain(), ids 1..1000 in their blocks, no block missing
#     or doubled.  The pushing transaction starts to wait only after
#     maintain()'s deadlock check ran, so a deadlock between the two would
#     abort the push;
#   - with the worker on but stalled (pgqueue.fault_injection =
#     'pause:maintain_queue:stall', held there by pg_advisory_lock), three
#     producers (pgbench, 3 s) push batches of 37 jobs in transactions of
#     their own, far past the one block made ahead: no failed transaction
#     (pgbench counts deadlocks and serialization failures as failed, not
#     as errors), every push committed its jobs, every block they crossed
#     into exists; a pop across the blocks works and both queues are
#     drained while the worker is still stalled;
#   - once the worker goes on, maintenance progresses on both queues:
#     every full block is closed, compacted and dropped, the jobs of the
#     full blocks are archived (job_history) as succeeded, every job pushed
#     succeeded, none twice, at most the open block and the one made ahead
#     are left, no queue's maintenance fails, and the server log has no
#     error.
#
# It failed against pgqueue before the fix of this bug: _block_create took
# the new block's lock, then CREATE TABLE ... INHERITS took SHARE UPDATE
# EXCLUSIVE on the parents pgqueue_data.job_store, status_store,
# claim_store; a transaction that made a block holds that lock on the
# parents to its end.  maintain() making block 3 held block 3's lock and
# waited for the parents; the push held the parents and waited for block
# 3's lock: deadlock, and the push of 1000 jobs was rolled back ("no
# error", "every push returned an id", "the 1000 jobs are there", "both
# queues are drained" failed).  When the worker was the one aborted, its
# maintenance of the queue failed for a backoff.  Maintenance now takes
# the parents first, and waits for them and for the block's lock half a
# second at most (_maintain_queue), so the push goes on.  It also found that a
# compaction that waited for the late pushes of a closed block moved all
# of them (block 0 compacted into block -1, "every id range crossed into
# has its block" failed); compaction now looks at the run again after
# that wait.
#
# Mutations of the product, each built into a private install, made the
# test fail as listed:
#   - _maintain_queue (sql/parts/maintenance.sql) closes an open block only
#     when it is the one just before the block the sequence is in (it
#     assumes at most one block fills between two rounds): the blocks the
#     overrun filled stay open, so on both queues "every full block was
#     closed, compacted and dropped", "the jobs of the full blocks are
#     archived" and "at most the open block and the one made ahead are
#     left" fail.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = PostgreSQL::Test::Cluster->new('runway');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'pgqueue'
pgqueue.naptime = 100
pgqueue.worker = off
deadlock_timeout = 200ms
max_connections = 30
});
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

# Run SQL that may fail: (exit code, stdout, stderr)
sub try_sql
{
	my ($out, $err) = ('', '');
	my $ret = $node->psql('postgres', $_[0], stdout => \$out, stderr => \$err);
	return ($ret, $out, $err);
}

# Run a query until it returns $expected or $secs pass
sub poll
{
	my ($sql, $expected, $secs) = @_;
	my $deadline = time() + ($secs // 30);
	my $got = '';
	while (time() < $deadline)
	{
		$got = sql($sql);
		return 1 if $got eq $expected;
		usleep(100_000);
	}
	diag("poll timed out: $sql\nexpected: $expected\nlast: $got");
	return 0;
}

sub set_conf
{
	sql("ALTER SYSTEM $_[0]");
	sql('SELECT pg_reload_conf()');
}

sql('CREATE EXTENSION pgqueue');
sql(q{SELECT pgqueue.queue_create('burst', block_size => 100, retention => '0')});
sql(q{SELECT pgqueue.queue_create('stall', block_size => 100, retention => '0')});

# (The checks read pgqueue.block, not the view pgqueue.blocks: the view
# fails with 42P01 when a compaction drops a block under it.)
#
# Block numbers from 0 to that of the queue's highest id with no block,
# and block numbers with more than one: "0 0" when every id range the
# pushes crossed into has its block, once
my $misplaced_sql = q{
	WITH b AS (SELECT block_no FROM pgqueue.block JOIN pgqueue.queue USING (queue_id) WHERE name = '%1$s')
	SELECT (SELECT count(*) FROM generate_series(0, (SELECT (max(job_id) - 1) / 100 FROM pgqueue.jobs
													 WHERE queue = '%1$s')) n
			 WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.block_no = n))
		   || ' ' || (SELECT count(*) FROM (SELECT block_no FROM b GROUP BY block_no
										 HAVING count(*) > 1) d)};

# Drain a queue in pops of 200, each acked in a transaction of its own
sub drain
{
	my ($q) = @_;
	my $acked = 0;
	for (1 .. 100)
	{
		my $n = sql(
			qq{WITH p AS (SELECT job_id, attempt FROM pgqueue.queue_pop('$q', 200, '10 minutes'))
			   SELECT count(*) FROM p});
		last if $n == 0;
	}
	return sql(
		qq{SELECT coalesce(sum(pgqueue.queue_ack('$q', ids, atts)), 0) FROM (
			 SELECT array_agg(job_id) ids, array_agg(attempt) atts FROM pgqueue.jobs
			  WHERE queue = '$q' AND state = 'executing') x WHERE ids IS NOT NULL});
}

# --- one transaction pushes 10 x block_size, maintenance beside it -----------

# s1 pushes 250 jobs (it makes blocks 1 and 2); s2 runs maintain(), which
# makes block 3 ahead (block 2 is half used); then s1 pushes 750 more,
# into blocks 3 to 9.  s1 starts waiting only after s2's deadlock check
# ran, so if the two wait for each other it is s1, the push, that the
# deadlock detector aborts.
my $s1 = $node->background_psql('postgres', on_error_stop => 0);
my $s2 = $node->background_psql('postgres', on_error_stop => 0);
my $s2_pid = $s2->query_safe('SELECT pg_backend_pid()');
$s1->query_safe(q{BEGIN});
is( $s1->query_safe(
		q{SELECT cardinality(pgqueue.queue_push_batch('burst',
				(SELECT array_agg(jsonb_build_object('i', i)) FROM generate_series(1, 250) i)))}),
	'250', 'a transaction pushes 250 jobs (blocks 0 to 2) and stays open');
$s2->query_until(qr/started/, qq{\\echo started\nSELECT pgqueue.maintain('burst');\n});
$s2->{stdout} = '';
my $s2_waits = poll(qq{SELECT wait_event_type IS NOT NULL FROM pg_stat_activity WHERE pid = $s2_pid},
	't', 10);
usleep(600_000);    # past deadlock_timeout
my ($s1_out, $s1_failed);
$s1->{stderr} = '';
($s1_out, $s1_failed) = $s1->query(
	q{SELECT cardinality(pgqueue.queue_push_batch('burst',
			(SELECT array_agg(jsonb_build_object('i', i)) FROM generate_series(251, 500) i)))
	  UNION ALL
	  SELECT count(pgqueue.queue_push('burst', jsonb_build_object('i', i)))
		FROM generate_series(501, 1000) i});
ok(!$s1_failed, 'the same transaction pushes 750 more while maintain() makes a block ahead: no error')
  or diag($s1->{stderr});
is($s1_out, "250\n500", 'and every push returned an id');
$s1->{stderr} = '';
$s1->query('COMMIT');
is($s1->{stderr}, '', 'the transaction commits');
# what maintain() returned, once it returned
$s2->{stderr} = '';
my $maintained = $s2->query(q{SELECT 'returned'});
my $s2_err = $s2->{stderr};
$s1->quit;
$s2->quit;
like($maintained, qr/"errors": \[\]/, 'maintain() beside it ends without a failure')
  or diag("s2 waited: $s2_waits\nstdout: $maintained\nstderr: $s2_err");
is(sql(q{SELECT count(*) || ' ' || min(job_id) || ' ' || max(job_id) FROM pgqueue.jobs WHERE queue = 'burst'}),
	'1000 1 1000', 'the 1000 jobs are there, ids 1..1000');
is(sql(sprintf($misplaced_sql, 'burst')), '0 0',
	'every id range crossed into has its block, once');

set_conf('SET pgqueue.worker = on');

# --- pushes outrun the worker while it is stalled ------------------------------

# the worker waits at the start of the maintenance of queue "stall" for as
# long as this session holds the advisory lock
my $holder = $node->background_psql('postgres');
$holder->query_safe('SELECT pg_advisory_lock(1885827445)');
set_conf(q{SET pgqueue.fault_injection = 'pause:maintain_queue:stall'});
ok( poll(
		q{SELECT count(*) FROM pg_stat_activity
		   WHERE backend_type = 'pgqueue maintenance' AND wait_event = 'advisory'},
		'1', 30),
	'the worker is stalled in the maintenance of queue "stall"');
my $ahead = sql(q{SELECT count(*) FROM pgqueue.block JOIN pgqueue.queue USING (queue_id) WHERE name = 'stall'});
ok($ahead <= 2, "before the pushes, queue \"stall\" has $ahead blocks");

my $script = $node->basedir . '/push.sql';
open(my $fh, '>', $script) or die "could not write $script: $!";
print $fh q{SELECT pgqueue.queue_push_batch('stall', array_fill('{"p": 1}'::jsonb, ARRAY[37]));}
  . "\n";
close($fh);
my ($bench_out, $bench_err) = ('', '');
my $bench_ok = IPC::Run::run(
	[
		'pgbench', '-n', '-c', '3', '-j', '3', '-T', '3', '-f', $script,
		'-h', $node->host, '-p', $node->port, 'postgres'
	],
	'>', \$bench_out, '2>', \$bench_err);
my ($txns) = $bench_out =~ /number of transactions actually processed: (\d+)/;
my ($failed) = $bench_out =~ /number of failed transactions: (\d+)/;
$txns //= 0;
ok($bench_ok && defined($failed) && $failed == 0,
	"three producers push while the worker is stalled, with no error ($txns pushes)")
  or diag("$bench_out\n$bench_err\n" . join("\n", slurp_file($node->logfile) =~ /^.*ERROR:.*$/mg));
my ($jobs, $top) = split /\|/, sql(q{SELECT count(*), max(job_id) FROM pgqueue.jobs WHERE queue = 'stall'});
is($jobs, 37 * $txns, "every push committed its 37 jobs ($txns pushes, $jobs jobs)");
ok($top >= 100 * ($ahead + 3), "the pushes outran the blocks made ahead by far (highest id $top)");
is(sql(sprintf($misplaced_sql, 'stall')), '0 0',
	'every id range crossed into has its block, once');
is( sql(
		q{SELECT count(*) FROM pgqueue.queue_pop('stall', 10000, '10 minutes')}),
	$jobs < 10000 ? $jobs : 10000,
	'a pop across the blocks takes jobs while the worker is still stalled');
is(drain('stall') + drain('burst'), $jobs + 1000, 'both queues are drained and acked');
# every job pushed, for the checks after maintenance
sql(q{CREATE TABLE pushed AS SELECT queue, job_id FROM pgqueue.jobs});

$holder->query_safe('SELECT pg_advisory_unlock(1885827445)');
$holder->quit;
set_conf('RESET pgqueue.fault_injection');

# --- maintenance progresses afterwards -------------------------------------------

for my $q ('burst', 'stall')
{
	# the jobs of the blocks that filled up: every block below the one
	# of the highest id pushed (ids of pushes that rolled back are gaps)
	my ($full, $n) = split /\|/, sql(
		qq{SELECT f, count(*) FILTER (WHERE job_id <= f)
			 FROM pushed, (SELECT 100 * (max(job_id) / 100) f FROM pushed WHERE queue = '$q') m
			WHERE queue = '$q' GROUP BY f});
	($full, $n) = (0, 0) if !defined($n);    # nothing pushed (an earlier check failed)
	ok( poll(
			qq{SELECT count(*) FROM pgqueue.block b JOIN pgqueue.queue q USING (queue_id)
				WHERE q.name = '$q' AND b.last_id <= $full},
			'0', 60),
		"$q: every full block was closed, compacted and dropped");
	ok( poll(
			qq{SELECT count(DISTINCT job_id) FROM pgqueue.job_history
				WHERE queue = '$q' AND archived AND state = 'succeeded'},
			$n, 30),
		"$q: the $n jobs of the full blocks are archived as succeeded");
	is( sql(
			qq{SELECT count(*) FROM pushed p WHERE queue = '$q'
				 AND NOT EXISTS (SELECT 1 FROM pgqueue.job_history h
								  WHERE h.queue = p.queue AND h.job_id = p.job_id
									AND h.state = 'succeeded')}),
		'0', "$q: every job pushed succeeded (archived or live)");
	is( sql(
			qq{SELECT count(*) FROM (SELECT job_id FROM pgqueue.job_history
									  WHERE queue = '$q' AND state = 'succeeded'
									  GROUP BY job_id HAVING count(*) > 1) d}),
		'0', "$q: no job succeeded twice");
	ok( sql(
			qq{SELECT count(*) FROM pgqueue.block b JOIN pgqueue.queue q USING (queue_id)
				WHERE q.name = '$q'}) <= 2,
		"$q: at most the open block and the one made ahead are left");
}
is(sql(q{SELECT count(*) FROM pgqueue.maintenance}), '0', 'no maintenance failed');
unlike(slurp_file($node->logfile), qr/PANIC|TRAP:|ERROR:/, 'the server log has no error');

$node->stop;
done_testing();
