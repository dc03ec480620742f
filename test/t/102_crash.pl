# 102_crash.pl: crashes in the middle of maintenance lose nothing.
#
# pgqueue.fault_injection names a maintenance step at which the server
# PANICs.  For each step, a queue is brought to a state whose next
# maintenance reaches it (pushes, claims, acks, fails, aborts, recorded in
# a plain table "expected" in the same transactions), maintenance is run
# with the fault set, the server crash-restarts, and then:
#   - every committed job is there exactly once: live in pgqueue.jobs with
#     its recorded state, or (finished) only in the archive with its last
#     state; no status row twice; nothing that was not pushed;
#   - no orphans: every j_/s_ table in pgqueue_data has its pgqueue.block
#     row and every block row both tables; every a_ table its
#     pgqueue.archive row and every archive row its table;
#   - the blocks are as before the crash (the step was one transaction);
#   - the next maintenance round finishes the job, with the same checks.
# Steps: block_created, compact_locked, compact_created, compact_copied,
# compact_archived, compact_caught_up, compact_swapped through
# pgqueue.maintain() in a session (SET pgqueue.fault_injection);
# archive_dropped too, with an archive table made to look two days old
# (renamed, and its catalog row changed) and archive_retention '1 day'.  compact_copied once more through the worker
# (ALTER SYSTEM + reload), which also checks that a worker crashing the
# server again and again is held back instead of crash-looping.  Last, an
# immediate shutdown under load (two clients pushing, claiming and acking
# in blocks of 100 while the worker compacts and archives), then the same
# checks after restart.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = PostgreSQL::Test::Cluster->new('crash');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'pgqueue'
pgqueue.naptime = 100
pgqueue.worker = off
restart_after_crash = on
max_connections = 30
});
$node->start;

# Run a query until it returns $expected or $secs pass; connection errors
# (during a crash restart) count as a wrong answer.
sub poll
{
	my ($sql, $expected, $secs) = @_;
	my $deadline = time() + ($secs // 30);
	my $got = '';
	while (time() < $deadline)
	{
		my ($out, $err) = ('', '');
		my $ret = $node->psql('postgres', $sql, stdout => \$out, stderr => \$err);
		$got = $ret == 0 ? $out : "error: $err";
		return 1 if $ret == 0 && $out eq $expected;
		usleep(100_000);
	}
	diag("poll timed out: $sql\nexpected: $expected\nlast: $got");
	return 0;
}

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub set_conf
{
	sql("ALTER SYSTEM $_[0]");
	sql('SELECT pg_reload_conf()');
}

sql(q{CREATE EXTENSION pgqueue});
sql(q{CREATE TABLE expected (queue text, job_id bigint, state text, PRIMARY KEY (queue, job_id))});

# The problems found in one queue (see the header); no rows when all is well.
sql(<<'EOS');
CREATE FUNCTION problems(q text) RETURNS SETOF text LANGUAGE sql AS $$
	WITH cur AS (
		SELECT j.job_id, j.state, 'live' AS src FROM pgqueue.jobs j WHERE j.queue = q
		UNION ALL
		(SELECT DISTINCT ON (h.job_id) h.job_id, h.state, 'archive'
		   FROM pgqueue.job_history h
		  WHERE h.queue = q AND h.archived
			AND NOT EXISTS (SELECT 1 FROM pgqueue.jobs j WHERE j.queue = q AND j.job_id = h.job_id)
		  ORDER BY h.job_id, h.seq DESC))
	SELECT format('job %s: expected %s, found %s', e.job_id, e.state,
				  coalesce(string_agg(c.state || ' (' || c.src || ')', ', '), 'nothing'))
	  FROM expected e LEFT JOIN cur c ON c.job_id = e.job_id
	 WHERE e.queue = q
	 GROUP BY e.job_id, e.state
	HAVING count(c.job_id) <> 1 OR min(c.state) <> e.state
	UNION ALL
	SELECT format('job %s (%s) was never pushed', c.job_id, c.state)
	  FROM cur c
	 WHERE NOT EXISTS (SELECT 1 FROM expected e WHERE e.queue = q AND e.job_id = c.job_id)
	UNION ALL
	SELECT format('job %s is only in the archive but %s', c.job_id, c.state)
	  FROM cur c WHERE c.src = 'archive' AND c.state NOT IN ('succeeded', 'aborted')
	UNION ALL
	SELECT format('status row %s/%s appears %s times', h.job_id, h.seq, count(*))
	  FROM pgqueue.job_history h WHERE h.queue = q
	 GROUP BY h.job_id, h.seq HAVING count(*) > 1
$$;
EOS

# Tables and catalog rows without each other, in every queue.
sql(<<'EOS');
CREATE FUNCTION orphans() RETURNS SETOF text LANGUAGE sql AS $$
	SELECT 'table ' || t.tablename || ' has no block row'
	  FROM pg_tables t
	 WHERE t.schemaname = 'pgqueue_data' AND t.tablename ~ '^[js]_'
	   AND NOT EXISTS (SELECT 1 FROM pgqueue.block b
						WHERE pgqueue_internal._rel(left(t.tablename, 1), b.queue_id, b.block_no)
							  = 'pgqueue_data.' || t.tablename)
	UNION ALL
	SELECT format('block %s/%s lacks a table', b.queue_id, b.block_no)
	  FROM pgqueue.block b
	 WHERE to_regclass(pgqueue_internal._rel('j', b.queue_id, b.block_no)) IS NULL
		OR to_regclass(pgqueue_internal._rel('s', b.queue_id, b.block_no)) IS NULL
	UNION ALL
	SELECT 'table ' || t.tablename || ' has no archive row'
	  FROM pg_tables t
	 WHERE t.schemaname = 'pgqueue_data' AND t.tablename ~ '^a_'
	   AND NOT EXISTS (SELECT 1 FROM pgqueue.archive a
						WHERE pgqueue_internal._archive_rel(a.queue_id, a.day) = 'pgqueue_data.' || t.tablename)
	UNION ALL
	SELECT format('archive %s/%s lacks its table', a.queue_id, a.day)
	  FROM pgqueue.archive a
	 WHERE to_regclass(pgqueue_internal._archive_rel(a.queue_id, a.day)) IS NULL
$$;
EOS

# Bring queue q to a state whose next maintenance closes blocks 0 and 1,
# creates block 3 ahead and compacts blocks 0 and 1 into block -1 (moving
# 19 unfinished jobs, archiving 362 status rows).  Records every job's
# state in "expected", in the same transactions.
sql(<<'EOS');
CREATE FUNCTION build(q text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pgqueue.queue_create(q, block_size => 100, retention => '0', max_attempts => 3);
	INSERT INTO expected
	SELECT q, unnest(pgqueue.queue_push_batch(q, array_agg(jsonb_build_object('n', i) ORDER BY i))),
		   'available'
	  FROM generate_series(1, 250) i;
	PERFORM count(*) FROM pgqueue.queue_pop(q, 200, lease => '1 hour');
	UPDATE expected SET state = 'executing' WHERE queue = q AND job_id <= 200;
	-- 90 of each block succeed; 91, 92 fail (retry in an hour); 191 is
	-- aborted; 93..100 and 192..200 stay executing, 201..250 available
	PERFORM pgqueue.queue_ack(q, array_agg(i::bigint))
	   FROM generate_series(1, 200) i WHERE i % 100 BETWEEN 1 AND 90;
	UPDATE expected SET state = 'succeeded' WHERE queue = q AND job_id % 100 BETWEEN 1 AND 90
	   AND job_id <= 200;
	PERFORM pgqueue.queue_fail(q, 91, 'later', retry_in => '1 hour'),
			pgqueue.queue_fail(q, 92, 'later', retry_in => '1 hour');
	UPDATE expected SET state = 'failed' WHERE queue = q AND job_id IN (91, 92);
	PERFORM pgqueue.queue_abort(q, 191, 'operator');
	UPDATE expected SET state = 'aborted' WHERE queue = q AND job_id = 191;
END
$$;
EOS

my $blocks_sql = q{
	SELECT string_agg(b.block_no || ' ' || b.state, ', ' ORDER BY b.first_id)
	  FROM pgqueue.block b JOIN pgqueue.queue q USING (queue_id) WHERE q.name = '%s'};

sub check
{
	my ($q, $what) = @_;
	is(sql("SELECT string_agg(p, E'\\n') FROM problems('$q') p"),
		'', "$what: every job once, in its state");
	is(sql(q{SELECT string_agg(o, E'\n') FROM orphans() o}), '', "$what: no orphan tables");
}

# Crash maintain(q) at a step, in a session.
sub crash_at
{
	my ($step, $q) = @_;
	my $offset = -s $node->logfile;
	my ($out, $err) = ('', '');
	my $ret = $node->psql(
		'postgres',
		"SET pgqueue.fault_injection = '$step'; SELECT pgqueue.maintain('$q')",
		stdout => \$out,
		stderr => \$err);
	isnt($ret, 0, "$step: maintain() does not return");
	# wait for the crash restart to finish, then for connections
	my $deadline = time() + 30;
	my $log = '';
	while (time() < $deadline)
	{
		$log = slurp_file($node->logfile, $offset);
		last if $log =~ /all server processes terminated; reinitializing.*database system is ready to accept connections/s;
		usleep(100_000);
	}
	like($log, qr/PANIC:  pgqueue fault injection at step "$step"/, "$step: it PANICked there");
	ok(poll('SELECT 1', '1', 30), "$step: the server is back after the crash restart");
}

my @compaction_steps =
  qw(compact_locked compact_created compact_copied compact_archived compact_caught_up
  compact_swapped);
for my $step ('block_created', @compaction_steps)
{
	sql("SELECT build('$step')");
}

# --- each step, through maintain() in a session ------------------------------

for my $step ('block_created', @compaction_steps)
{
	my $before = sql(sprintf($blocks_sql, $step));
	is($before, '0 open, 1 open, 2 open', "$step: blocks before");
	crash_at($step, $step);
	is(sql(sprintf($blocks_sql, $step)), $before,
		"$step: after the crash the blocks are as before (the round was one transaction)");
	check($step, "$step, after the crash");
	my $m = sql("SELECT pgqueue.maintain('$step') - 'expired_leases' - 'done_blocks' - 'errors'");
	is( $m,
		qq({"compacted": ["$step: 2 blocks 0..1: 19 jobs moved to block -1, 362 status rows archived"], "closed_blocks": 2, "created_blocks": 1, "archives_dropped": 0}),
		"$step: the next round does all of it");
	is(sql(sprintf($blocks_sql, $step)), '-1 closed, 2 open, 3 open', "$step: blocks after");
	check($step, "$step, after the next round");
}

# --- archive_dropped -----------------------------------------------------------

sql(q{SELECT build('archive_dropped')});
sql(q{SELECT pgqueue.maintain('archive_dropped')});
sql(q{SELECT pgqueue.queue_alter('archive_dropped', archive_retention => '1 day')});
# the archive, two days old
sql(<<'EOS');
DO $$
DECLARE
	a record;
BEGIN
	SELECT ar.* INTO STRICT a FROM pgqueue.archive ar JOIN pgqueue.queue q USING (queue_id)
	 WHERE q.name = 'archive_dropped';
	EXECUTE format('ALTER TABLE %s RENAME TO %I', pgqueue_internal._archive_rel(a.queue_id, a.day),
				   'a_' || a.queue_id || '_' || to_char(a.day - 2, 'YYYYMMDD'));
	UPDATE pgqueue.archive ar SET day = a.day - 2
	 WHERE ar.queue_id = a.queue_id AND ar.day = a.day;
END
$$;
EOS
my $archive_sql = q{SELECT count(*) || ' ' || (SELECT count(*) FROM pgqueue.job_history
											   WHERE queue = 'archive_dropped' AND archived)
					  FROM pgqueue.archive a JOIN pgqueue.queue q USING (queue_id)
					 WHERE q.name = 'archive_dropped'};
is(sql($archive_sql), '1 362', 'archive_dropped: one archive table, 362 archived rows');
check('archive_dropped', 'archive_dropped, before');
crash_at('archive_dropped', 'archive_dropped');
is(sql($archive_sql), '1 362', 'archive_dropped: after the crash the archive is still there');
check('archive_dropped', 'archive_dropped, after the crash');
is(sql(q{SELECT pgqueue.maintain('archive_dropped') -> 'archives_dropped'}),
	'1', 'archive_dropped: the next round drops the archive');
is(sql($archive_sql), '0 0', 'archive_dropped: with its rows');
# the jobs that were only in the dropped archive are gone for good
sql(q{DELETE FROM expected e WHERE queue = 'archive_dropped'
	   AND NOT EXISTS (SELECT 1 FROM pgqueue.jobs j
						WHERE j.queue = 'archive_dropped' AND j.job_id = e.job_id)});
is(sql(q{SELECT count(*) FROM expected WHERE queue = 'archive_dropped'}),
	'69', 'archive_dropped: the 69 live jobs remain');
check('archive_dropped', 'archive_dropped, after the next round');

# --- compact_copied through the worker, which must not crash-loop ----------------

sql(q{SELECT build('by_worker')});
# a clean restart first, so that the crashes above do not count against
# the worker (a launcher may hold back workers after crashes in a row)
$node->restart;
my $offset = -s $node->logfile;
set_conf(q{SET pgqueue.fault_injection = 'compact_copied'});
set_conf(q{SET pgqueue.worker = on});
my $deadline = time() + 20;
while (time() < $deadline
	&& slurp_file($node->logfile, $offset) !~ /PANIC:  pgqueue fault injection/)
{
	usleep(100_000);
}
like(slurp_file($node->logfile, $offset),
	qr/PANIC:  pgqueue fault injection at step "compact_copied"/,
	'by_worker: the worker PANICs at compact_copied');
# leave the fault in place for 4 seconds: the worker is started again after
# the crash restart, but must back off instead of crashing the server in a
# loop (DESIGN 5: "restarts after a crash, backs off instead of
# crash-looping")
usleep(4_000_000);
my @panics = slurp_file($node->logfile, $offset) =~ /PANIC:  pgqueue fault injection/g;
ok(@panics <= 3,
	'by_worker: a worker that crashes the server is held back, not restarted at once: '
	  . scalar(@panics) . ' crashes in 4 s');
# turn the fault off: retry while the server is restarting
$deadline = time() + 30;
my $reset = 0;
while (!$reset && time() < $deadline)
{
	my ($out, $err) = ('', '');
	$reset = $node->psql(
		'postgres',
		"ALTER SYSTEM RESET pgqueue.fault_injection; SELECT pg_reload_conf()",
		stdout => \$out,
		stderr => \$err) == 0;
	usleep(100_000) unless $reset;
}
ok($reset, 'by_worker: ALTER SYSTEM RESET pgqueue.fault_injection');
ok( poll(sprintf($blocks_sql, 'by_worker'), '-1 closed, 2 open, 3 open', 20),
	'by_worker: once the fault is off the worker finishes the compaction');
# (the worker has nothing more to do: checking while it runs is safe)
check('by_worker', 'by_worker, after the crashes and the next round');

# --- immediate shutdown under load -------------------------------------------------

sql(q{SELECT pgqueue.queue_create('load', block_size => 100, retention => '0')});
sql(q{CREATE TABLE load_errors (sqlstate text, message text)});
# One unit of load: push 50, claim up to 50, ack 45 of them and fail one
# (retry in an hour), recorded in "expected" in the same transaction.  An
# error rolls the unit back and is recorded in load_errors, so that the
# clients keep going.
sql(<<'EOS');
CREATE FUNCTION load_step() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	ids bigint[];
	atts integer[];
BEGIN
	INSERT INTO expected
	SELECT 'load', unnest(pgqueue.queue_push_batch('load', array_agg(jsonb_build_object('i', i)))),
		   'available'
	  FROM generate_series(1, 50) i;
	SELECT array_agg(job_id ORDER BY job_id), array_agg(attempt ORDER BY job_id) INTO ids, atts
	  FROM pgqueue.queue_pop('load', 50, lease => '1 hour');
	IF ids IS NULL THEN
		RETURN;
	END IF;
	UPDATE expected SET state = 'executing' WHERE queue = 'load' AND job_id = ANY (ids);
	PERFORM pgqueue.queue_ack('load', ids[1:45], atts[1:45]);
	UPDATE expected SET state = 'succeeded' WHERE queue = 'load' AND job_id = ANY (ids[1:45]);
	IF cardinality(ids) > 45 THEN
		PERFORM pgqueue.queue_fail('load', ids[46], 'later', retry_in => '1 hour');
		UPDATE expected SET state = 'failed' WHERE queue = 'load' AND job_id = ids[46];
	END IF;
EXCEPTION WHEN OTHERS THEN
	INSERT INTO load_errors VALUES (SQLSTATE, SQLERRM);
END
$$;
EOS
my $script = $node->basedir . '/load.sql';
open(my $fh, '>', $script) or die "could not write $script: $!";
print $fh "SELECT load_step();\n";
close($fh);
my $load_offset = -s $node->logfile;
my ($bench_out, $bench_err) = ('', '');
my $bench = IPC::Run::start(
	[
		'pgbench', '-n', '-c', '2', '-j', '2', '-T', '60', '-f', $script,
		'-h', $node->host, '-p', $node->port, 'postgres'
	],
	'>', \$bench_out, '2>', \$bench_err);
ok( poll(
		q{SELECT count(*) > 1000 FROM pgqueue.job_history WHERE queue = 'load' AND archived},
		't', 10),
	'load: the worker archives while the clients run');
usleep(500_000);
my $pushed = sql(q{SELECT count(*) FROM expected WHERE queue = 'load'});
my $load_log = slurp_file($node->logfile, $load_offset);
$node->stop('immediate');
$bench->finish;
ok($pushed > 1000, "load: $pushed jobs pushed before the immediate shutdown");
my @exits = $load_log =~ /background worker "pgqueue maintenance" \(PID \d+\) exited with exit code 1/g;
is(scalar(@exits), 0, 'load: the maintenance worker did not fail while the clients ran')
  or diag(join("\n", grep { /(?:ERROR|FATAL):/ } split /\n/, $load_log));
# start with the worker off, to check the state recovery left
$node->append_conf('postgresql.auto.conf', "pgqueue.worker = off\n");
$node->start;
check('load', 'load, after the immediate shutdown');
is( sql(q{SELECT coalesce(string_agg(DISTINCT sqlstate || ' ' || regexp_replace(message, '\d+', 'N', 'g'), E'\n'), '')
			FROM load_errors}),
	'',
	'load: push, pop, ack and fail never failed while the worker compacted');
like(sql(q{SELECT pgqueue.maintain('load') -> 'compacted'}),
	qr/^\[.*\]$/, 'load: maintain() after the restart compacts what is left');
check('load', 'load, after the next round');
is(sql(q{SELECT count(*) FROM orphans()}), '0', 'no orphans in any queue at the end');
$node->stop;
done_testing();
