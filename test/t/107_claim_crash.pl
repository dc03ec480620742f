# 107_claim_crash.pl: crashes lose and double nothing with claim records.
#
# Pops of never-claimed jobs write one claim record per id range of a lane,
# from lane cursors kept in shared memory; a crash loses the cursors, and
# the claims of transactions that did not commit.  Consumers here note
# what they popped and acked in plain tables (got, acked, pushed), in the
# same transactions, so the ledger holds exactly what committed.  One
# cluster with pgqueue preloaded, blocks of 100, the maintenance worker off
# (maintain() runs the rounds) but while the load of 3 runs.  Checks, and
# how each would fail:
#
# 1. kill -9 of an idle backend between pop and ack (k1): A popped 1-10 and
#    acked 1-5, C popped 21-35 and acked 31-35 (leases of 4 s), B popped
#    11-20 and had not committed.  After the crash restart: 6-10 and 21-30
#    are executing under their claims with the leases pop gave and B's
#    jobs have no history (a wrong state string or lease); the next pops
#    return exactly 11-20 and 36-60, all attempt 1 (a cursor rebuilt short
#    of a committed claim hands out 6-10 or 21-30 again, or fails on its
#    claim record; a rebuild that ignores the ranges of lost claims never
#    returns 11-20); job 6 is acked by its holder after the crash; once
#    the leases end maintain() expires exactly 14, the holder's late ack is
#    PQ001, and they come back as attempt 2 (a wrong count or attempt);
#    in the end every job succeeded exactly once (check_once, below).
# 2. kill -9 of a backend in the middle of a pop transaction (k2): Y popped
#    in two priorities, between and after committed claims, and acked some,
#    then was killed before COMMIT.  After recovery its jobs are available
#    with no history, the next pop takes them first, attempt 1, and goes on
#    after the last committed claim: no gap is left (the exact pop result
#    and state strings), then check_once.
# 3. immediate stop under load (load): 8 pgbench clients push, pop (leases
#    of 3 s) and, in a transaction of their own 50 ms later, ack, while the
#    worker closes, compacts and archives blocks of claims; one more client
#    (P) pops 5 jobs and does not ack, one more (L) pops 5 and does not
#    commit.  After the restart: no client error happened before the stop
#    (load_errors: a job acked twice shows there first); L's jobs are
#    available, never claimed; the jobs in flight are executing at their
#    attempt with their leases; no pushed job is missing (neither live nor
#    succeeded in the archive); maintain() expires every executing lease; a
#    drain (pop and ack until nothing is left) ends, and check_once: every
#    pushed job succeeded exactly once in job_history (live and archived),
#    none is left in another state, no (job_id, seq) twice, no (job_id,
#    attempt) popped twice, no job acked twice.
# 4. a crash at every compaction step (compact_created, compact_copied,
#    compact_archived, compact_caught_up, compact_locked, compact_swapped;
#    pgqueue.fault_injection PANICs there) of blocks 0 and 1 that hold
#    claims of 25 jobs: acked whole, in parts and one by one, 91 failed and
#    92 extended (status rows of their own), 191 aborted, 93-100 and
#    192-200 executing under their claims.  After the crash restart the
#    blocks and every job's state (pgqueue.jobs) and history
#    (pgqueue.job_history) are as before; the next maintain() compacts
#    them into block -1 (19 jobs moved) and they are still as before: live
#    jobs unchanged, archived jobs finished with the same last state, the
#    same history rows, none twice (changes(), below); a pop then hands out
#    only the never-claimed 201-250; the executing jobs of the moved claims
#    are acked and succeed, each once.
#
# Mutations of the product, each built into a private install, made the
# test fail as listed (and it passed again once they were undone):
#   - pgq_claims_lane rebuilds a lane's cursor from the start of its last
#     claim (next = lo, not hi + 1): 1, 2 and 4 fail: the first pop after
#     a crash writes a claim record again (duplicate claim_id), or hands
#     out again 93-100 and 192-200 of the claims compaction moved;
#   - the same off by one (next = hi): 1, 2 and 4 fail, the last job of a
#     committed claim is handed out again;
#   - pgq_claims_lane keeps no gaps (the ranges of lost claims): 1, 2 and 3
#     fail: 11-20 of k1, 1-5 of k2 and L's jobs in 3 are never popped
#     again ("succeeded 0 times");
#   - _compact_step copies no claim records (kc): 4 fails at every step:
#     after compaction 93-100 and 192-200 look never claimed, their history
#     is gone and the next pop hands them out;
#   - claim_reserved writes the start of its range as the record's end: 1,
#     2 and 3 fail (acks of the claims' jobs are refused before any crash,
#     the claims' jobs are handed out again after it), and 4 stops at its
#     setup.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = PostgreSQL::Test::Cluster->new('claim_crash');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'pgqueue'
pgqueue.naptime = 100
pgqueue.worker = off
restart_after_crash = on
max_connections = 40
});
$node->start;

# setup: dies on an error
sub sql { return $node->safe_psql('postgres', $_[0]); }

# a value to check: the output, or the error
sub val
{
	my ($out, $err) = ('', '');
	my $ret = $node->psql('postgres', $_[0], stdout => \$out, stderr => \$err);
	return $ret == 0 ? $out : "error: $err";
}

# the same, in a session of its own
sub sval
{
	my ($s, $sql) = @_;
	$s->{stderr} = '';
	my ($out, $failed) = $s->query($sql);
	return $failed ? "error: $s->{stderr}" : $out;
}

# Run a query until it returns $expected or $secs pass; connection errors
# (during a crash restart) count as a wrong answer.
sub poll
{
	my ($sql, $expected, $secs) = @_;
	my $deadline = time() + ($secs // 30);
	my $got = '';
	while (time() < $deadline)
	{
		$got = val($sql);
		return 1 if $got eq $expected;
		usleep(50_000);
	}
	diag("poll timed out: $sql\nexpected: $expected\nlast: $got");
	return 0;
}

# Wait for the crash restart that began after log offset $offset to end.
sub wait_crash_restart
{
	my ($offset, $what) = @_;
	my $deadline = time() + 30;
	my $log = '';
	while (time() < $deadline)
	{
		$log = slurp_file($node->logfile, $offset);
		last
		  if $log =~
		  /all server processes terminated; reinitializing.*database system is ready to accept connections/s;
		usleep(50_000);
	}
	like(
		$log,
		qr/all server processes terminated; reinitializing/,
		"$what: the postmaster restarted all backends (crash recovery)");
	ok(poll('SELECT 1', '1', 30), "$what: the server is back");
	return $log;
}

# A session of its own, and its backend's pid.
sub session
{
	my $s = $node->background_psql('postgres', on_error_stop => 0);
	return ($s, $s->query_safe('SELECT pg_backend_pid()'));
}

# End the psql of sessions whose server went away.
sub drop_sessions
{
	eval { $_->{run}->kill_kill; } for @_;
}

# Sleep until the leases that pops of queue q noted in got have ended and
# lease expiry can see them (it leaves the last second to the next round).
sub sleep_past_leases
{
	my ($q) = @_;
	my $left = sql(
		"SELECT extract(epoch FROM max(lease_until) - clock_timestamp()) FROM got
		  WHERE q = '$q' AND lease_until < clock_timestamp() + interval '1 minute'");
	usleep(1_000_000 * ($left + 1.2)) if $left > -1.2;
}

# Every job of a drained queue succeeded exactly once (see the header).
sub check_once
{
	my ($q, $n) = @_;
	is(val("SELECT count(*) FROM pushed WHERE q = '$q'"), $n, "$q: $n jobs pushed");
	is( val("SELECT string_agg(p, E'\\n') FROM (SELECT * FROM once_problems('$q') LIMIT 20) x(p)"),
		'',
		"$q: every job succeeded exactly once, nothing lost, doubled or left executing");
}

sql(q{CREATE EXTENSION pgqueue});
sql(<<'EOS');
-- the ledger: what pushes, pops and acks committed
CREATE TABLE pushed (q text, job_id bigint);
CREATE TABLE got (q text, job_id bigint, attempt int, lease_until timestamptz);
CREATE TABLE acked (q text, job_id bigint, attempt int);

-- a set of ids as ranges: "1-5,7,9-12"
CREATE FUNCTION spans(ids bigint[]) RETURNS text LANGUAGE sql AS $$
	SELECT coalesce(string_agg(CASE WHEN lo = hi THEN lo::text ELSE lo || '-' || hi END, ','
							   ORDER BY lo), '')
	  FROM (SELECT min(i) AS lo, max(i) AS hi
			  FROM (SELECT i, i - row_number() OVER (ORDER BY i) AS g
					  FROM (SELECT DISTINCT unnest(ids) AS i) d) x
			 GROUP BY g) r
$$;

-- push n jobs; returns their ids
CREATE FUNCTION push(q text, n int) RETURNS text LANGUAGE sql AS $$
	WITH p AS (SELECT unnest(pgqueue.queue_push_batch(q, array_agg(jsonb_build_object('i', i))))
					  AS job_id
				 FROM generate_series(1, n) i),
		 i AS (INSERT INTO pushed SELECT q, job_id FROM p RETURNING job_id)
	SELECT spans(array_agg(job_id)) FROM i
$$;

-- pop up to n jobs; returns them by attempt: "attempt 1: 11-20; attempt 2: 6-10"
CREATE FUNCTION pop(q text, n int, lease interval) RETURNS text LANGUAGE sql AS $$
	WITH p AS (SELECT * FROM pgqueue.queue_pop(q, n, lease => lease)),
		 i AS (INSERT INTO got SELECT q, job_id, attempt, lease_until FROM p
			   RETURNING job_id, attempt)
	SELECT coalesce(string_agg(a, '; ' ORDER BY a), '')
	  FROM (SELECT 'attempt ' || attempt || ': ' || spans(array_agg(job_id)) AS a
			  FROM i GROUP BY attempt) x
$$;

-- ack jobs at the attempt they were last popped at (one call); returns how many
CREATE FUNCTION ack(q text, ids bigint[]) RETURNS integer LANGUAGE sql AS $$
	WITH g AS (SELECT DISTINCT ON (job_id) job_id, attempt FROM got
				WHERE got.q = ack.q AND job_id = ANY (ids) ORDER BY job_id, attempt DESC),
		 a AS (SELECT pgqueue.queue_ack(q, array_agg(job_id ORDER BY job_id),
										array_agg(attempt ORDER BY job_id)) AS n FROM g),
		 i AS (INSERT INTO acked SELECT q, job_id, attempt FROM g, a RETURNING 1)
	SELECT (SELECT count(*) FROM i)::int
$$;

-- the SQLSTATE of a statement, or 'ok'
CREATE FUNCTION sqlstate_of(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE stmt;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE;
END
$$;

-- the live jobs of a queue by state and attempt: "executing 1: 6-10; succeeded 1: 1-5"
CREATE FUNCTION states(q text) RETURNS text LANGUAGE sql AS $$
	SELECT coalesce(string_agg(s, '; ' ORDER BY s), '')
	  FROM (SELECT state || ' ' || attempt || ': ' || spans(array_agg(job_id)) AS s
			  FROM pgqueue.jobs WHERE queue = q GROUP BY state, attempt) x
$$;

-- what breaks "every job pushed succeeded exactly once" in a drained queue
CREATE FUNCTION once_problems(q text) RETURNS SETOF text LANGUAGE sql AS $$
	WITH h AS (SELECT * FROM pgqueue.job_history WHERE queue = q)
	SELECT format('job %s succeeded %s times', p.job_id, count(h.job_id))
	  FROM pushed p LEFT JOIN h ON h.job_id = p.job_id AND h.state = 'succeeded'
	 WHERE p.q = once_problems.q
	 GROUP BY p.job_id HAVING count(h.job_id) <> 1
	UNION ALL
	SELECT format('job %s is %s', j.job_id, j.state)
	  FROM pgqueue.jobs j WHERE j.queue = q AND j.state <> 'succeeded'
	UNION ALL
	SELECT format('status row %s/%s appears %s times', job_id, seq, count(*))
	  FROM h GROUP BY job_id, seq HAVING count(*) > 1
	UNION ALL
	SELECT format('job %s in the history was never pushed', h.job_id)
	  FROM h
	 WHERE NOT EXISTS (SELECT 1 FROM pushed p WHERE p.q = once_problems.q AND p.job_id = h.job_id)
	UNION ALL
	SELECT format('job %s attempt %s was popped %s times', job_id, attempt, count(*))
	  FROM got WHERE got.q = once_problems.q GROUP BY job_id, attempt HAVING count(*) > 1
	UNION ALL
	SELECT format('job %s was acked %s times', job_id, count(*))
	  FROM acked WHERE acked.q = once_problems.q GROUP BY job_id HAVING count(*) > 1
	UNION ALL
	SELECT format('job %s succeeded at attempt %s, was last popped at %s', h.job_id, h.attempt,
				  g.attempt)
	  FROM h JOIN (SELECT job_id, max(attempt) AS attempt FROM got WHERE got.q = once_problems.q
					GROUP BY job_id) g ON g.job_id = h.job_id
	 WHERE h.state = 'succeeded' AND h.attempt <> g.attempt
$$;
EOS

# --- 1. kill -9 of a backend between pop and ack -------------------------------

sql(q{SELECT pgqueue.queue_create('k1', block_size => 100)});
is(val(q{SELECT push('k1', 60)}), '1-60', 'k1: 60 jobs pushed');
my ($sa, $pa) = session();
my ($sb, $pb) = session();
my ($sc, $pc) = session();
is(sval($sa, q{SELECT pop('k1', 10, '4 seconds')}), 'attempt 1: 1-10', 'k1: A pops 1-10');
is(sval($sa, q{SELECT ack('k1', '{1,2,3,4,5}')}), '5', 'k1: A acks 1-5');
$sb->query_safe('BEGIN');
is(sval($sb, q{SELECT pop('k1', 10, '1 hour')}),
	'attempt 1: 11-20', 'k1: B pops 11-20 and does not commit');
is(sval($sc, q{SELECT pop('k1', 10, '4 seconds')}), 'attempt 1: 21-30', 'k1: C pops 21-30');
is(sval($sc, q{SELECT pop('k1', 5, '4 seconds')}), 'attempt 1: 31-35', 'k1: C pops 31-35');
is(sval($sc, q{SELECT ack('k1', '{31,32,33,34,35}')}), '5', 'k1: C acks 31-35');
my $k1_states = 'available 0: 11-20,36-60; executing 1: 6-10,21-30; succeeded 1: 1-5,31-35';
is(val(q{SELECT states('k1')}), $k1_states, 'k1: the jobs before the crash');

my $offset = -s $node->logfile;
kill 'KILL', $pa;
wait_crash_restart($offset, 'k1, kill -9 of A');
drop_sessions($sa, $sb, $sc);

is(val(q{SELECT states('k1')}), $k1_states,
	'k1: after recovery the jobs are as before: B\'s claim is gone');
is( val(q{SELECT count(*) FROM pgqueue.job_history WHERE queue = 'k1' AND job_id BETWEEN 11 AND 20}),
	'0', 'k1: the jobs of B\'s lost claim have no history');
is( val(
		q{SELECT count(*) FROM pgqueue.jobs j JOIN got g ON g.q = j.queue AND g.job_id = j.job_id
		   WHERE j.queue = 'k1' AND j.state = 'executing' AND j.attempt = 1
			 AND j.lease_until = g.lease_until AND j.lease_until > clock_timestamp()}),
	'15',
	'k1: 6-10 and 21-30 are still executing under their claims, with the leases pop gave');
# the lanes' cursors were lost with shared memory: pops read them back
is(val(q{SELECT pop('k1', 20, '1 hour')}), 'attempt 1: 11-20,36-45',
	'k1: the next pop takes the jobs of the lost claim, then goes on after the last committed claim');
is(val(q{SELECT pop('k1', 100, '1 hour')}), 'attempt 1: 46-60',
	'k1: then the rest: no job that a committed claim holds is handed out');
is(val(q{SELECT ack('k1', '{6}')}), '1', 'k1: A\'s job 6 is acked after the crash');

sleep_past_leases('k1');
is(val(q{SELECT pgqueue.maintain('k1') -> 'expired_leases'}),
	'14', 'k1: once their leases end, maintenance expires 7-10 and 21-30');
is(val(q{SELECT sqlstate_of($$SELECT pgqueue.queue_ack('k1', 21, attempt => 1)$$)}),
	'PQ001', 'k1: C\'s late ack of 21 is refused: lease lost');
is( val(q{SELECT states('k1')}),
	'available 1: 7-10,21-30; executing 1: 11-20,36-60; succeeded 1: 1-6,31-35',
	'k1: 7-10 and 21-30 are available again');
is(val(q{SELECT pop('k1', 100, '1 hour')}), 'attempt 2: 7-10,21-30',
	'k1: and popped again, as attempt 2');
is( val(
		q{SELECT ack('k1', array_agg(job_id)) FROM pushed
		   WHERE q = 'k1' AND NOT job_id = ANY ('{1,2,3,4,5,6,31,32,33,34,35}')}),
	'49',
	'k1: the rest is acked');
check_once('k1', 60);

# --- 2. kill -9 in the middle of a pop transaction -------------------------------

# 1-40 of priority 0, 41-60 of priority 1 (popped first)
sql(q{SELECT pgqueue.queue_create('k2', block_size => 100)});
sql(q{SELECT push('k2', 40)});
sql(
	q{WITH p AS (SELECT unnest(pgqueue.queue_push_batch('k2', array_agg('{}'::jsonb),
														 priorities => array_agg(1))) AS job_id
				   FROM generate_series(1, 20))
	  INSERT INTO pushed SELECT 'k2', job_id FROM p});
my ($sx, $px) = session();
my ($sy, $py) = session();
my ($sz, $pz) = session();
is(sval($sx, q{SELECT pop('k2', 15, '1 hour')}), 'attempt 1: 41-55', 'k2: X pops 41-55');
$sy->query_safe('BEGIN');
is(sval($sy, q{SELECT pop('k2', 10, '1 hour')}), 'attempt 1: 1-5,56-60',
	'k2: Y pops 56-60 (priority 1) and 1-5 (priority 0) in a transaction');
is(sval($sz, q{SELECT pop('k2', 10, '1 hour')}), 'attempt 1: 6-15', 'k2: Z pops 6-15');
is(sval($sy, q{SELECT pop('k2', 5, '1 hour')}), 'attempt 1: 16-20',
	'k2: Y pops 16-20, the last claim of its lane');
is(sval($sy, q{SELECT ack('k2', '{1,2,56}')}), '3', 'k2: Y acks 1, 2 and 56');
my $k2_states = 'available 0: 1-5,16-40,56-60; executing 1: 6-15,41-55';
is(val(q{SELECT states('k2')}), $k2_states, 'k2: others do not see Y\'s claims');

$offset = -s $node->logfile;
kill 'KILL', $py;
wait_crash_restart($offset, 'k2, kill -9 of Y before COMMIT');
drop_sessions($sx, $sy, $sz);

is(val(q{SELECT states('k2')}), $k2_states, 'k2: after recovery Y\'s claims and acks are gone');
is( val(
		q{SELECT count(*) FROM pgqueue.job_history
		   WHERE queue = 'k2' AND (job_id <= 5 OR job_id BETWEEN 16 AND 40 OR job_id > 55)}),
	'0',
	'k2: the jobs of Y\'s claims have no history');
is(val(q{SELECT pop('k2', 20, '1 hour')}), 'attempt 1: 1-5,16-25,56-60',
	'k2: the next pop takes the jobs of Y\'s claims first, attempt 1, then goes on');
is( val(q{SELECT states('k2')}),
	'available 0: 26-40; executing 1: 1-25,41-60',
	'k2: no gap is left behind');
is(val(q{SELECT pop('k2', 100, '1 hour')}), 'attempt 1: 26-40', 'k2: then the rest');
is(val(q{SELECT ack('k2', array_agg(job_id)) FROM pushed WHERE q = 'k2'}), '60', 'k2: all acked');
check_once('k2', 60);

# --- 3. immediate stop under load, between pops and acks ------------------------

# A client's unit: push n, pop up to n (committed, noted in inflight), and
# 50 ms later, in a transaction of its own, ack what it popped.  Errors are
# noted in load_errors (the unit is given up) so that the clients go on.
sql(<<'EOS');
CREATE TABLE inflight (q text, job_id bigint, attempt int, pid int);
CREATE INDEX ON inflight (pid);
CREATE TABLE load_errors (sqlstate text, message text);

CREATE FUNCTION load_push(q text, n int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	PERFORM push(q, n);
EXCEPTION WHEN OTHERS THEN
	INSERT INTO load_errors VALUES (SQLSTATE, 'push: ' || SQLERRM);
END
$$;

CREATE FUNCTION load_pop(q text, n int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	WITH p AS (SELECT * FROM pgqueue.queue_pop(q, n, lease => '3 seconds')),
		 g AS (INSERT INTO got SELECT q, job_id, attempt, lease_until FROM p
			   RETURNING job_id, attempt)
	INSERT INTO inflight SELECT q, job_id, attempt, pg_backend_pid() FROM g;
EXCEPTION WHEN OTHERS THEN
	INSERT INTO load_errors VALUES (SQLSTATE, 'pop: ' || SQLERRM);
END
$$;

CREATE FUNCTION load_ack(q text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	ids bigint[];
	atts int[];
BEGIN
	WITH d AS (DELETE FROM inflight i WHERE i.pid = pg_backend_pid() AND i.q = load_ack.q
			   RETURNING job_id, attempt)
	SELECT array_agg(job_id ORDER BY job_id), array_agg(attempt ORDER BY job_id)
	  INTO ids, atts FROM d;
	IF ids IS NULL THEN
		RETURN;
	END IF;
	BEGIN
		PERFORM pgqueue.queue_ack(q, ids, atts);
		INSERT INTO acked SELECT q, unnest(ids), unnest(atts);
	EXCEPTION WHEN OTHERS THEN
		INSERT INTO load_errors VALUES (SQLSTATE, 'ack: ' || SQLERRM);
	END;
END
$$;

-- load_pop until this session holds n jobs (in this transaction); returns them
CREATE FUNCTION take(q text, n int) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	have int := 0;
BEGIN
	FOR i IN 1 .. 1000 LOOP
		PERFORM load_pop(q, n - have);
		SELECT count(*) INTO have FROM inflight WHERE inflight.q = take.q AND pid = pg_backend_pid();
		EXIT WHEN have >= n;
		PERFORM pg_sleep(0.005);
	END LOOP;
	RETURN (SELECT spans(array_agg(job_id)) FROM inflight
			 WHERE inflight.q = take.q AND pid = pg_backend_pid());
END
$$;

-- pop and ack until nothing is left; returns how many were acked
CREATE FUNCTION drain(q text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	total bigint := 0;
	ids bigint[];
BEGIN
	LOOP
		WITH p AS (SELECT * FROM pgqueue.queue_pop(q, 500, lease => '1 minute')),
			 g AS (INSERT INTO got SELECT q, job_id, attempt, lease_until FROM p
				   RETURNING job_id)
		SELECT array_agg(job_id) INTO ids FROM g;
		EXIT WHEN ids IS NULL;
		total := total + ack(q, ids);
	END LOOP;
	RETURN total;
END
$$;
EOS
sql(q{SELECT pgqueue.queue_create('load', block_size => 100, retention => '0')});
my $script = $node->basedir . '/load.sql';
open(my $fh, '>', $script) or die "could not write $script: $!";
print $fh <<'EOS';
\set n random(1, 20)
SELECT load_push('load', :n);
SELECT load_pop('load', :n);
SELECT pg_sleep(0.05);
SELECT load_ack('load');
EOS
close($fh);
sql(q{ALTER SYSTEM SET pgqueue.worker = on});
sql(q{SELECT pg_reload_conf()});
my ($bench_out, $bench_err) = ('', '');
my $bench = IPC::Run::start(
	[
		'pgbench', '-n', '-c', '8', '-j', '2', '-T', '60', '-f', $script,
		'-h', $node->host, '-p', $node->port, 'postgres'
	],
	'>', \$bench_out, '2>', \$bench_err);
ok( poll(
		q{SELECT count(*) > 0 FROM pgqueue.job_history WHERE queue = 'load' AND archived},
		't', 15),
	'load: the worker compacts and archives blocks of claims while the clients run');
# one more client pops 5 jobs and does not ack, one more pops 5 and does
# not commit: its claims are lost, between the committed claims of others
my ($sp, $pp) = session();
my ($sl, $pl) = session();
like(sval($sp, q{SELECT take('load', 5)}), qr/^\d/, 'load: P pops 5 jobs and does not ack');
$sl->query_safe(q{BEGIN});
my $lost = sval($sl, q{SELECT take('load', 5)});
like($lost, qr/^\d/, "load: L pops 5 jobs ($lost) and does not commit");
usleep(300_000);
my $stop_at = sql(q{SELECT clock_timestamp()});
$node->stop('immediate');
$bench->finish;
drop_sessions($sp, $sl);
# restart with the worker off, to look at what recovery left
$node->append_conf('postgresql.auto.conf', "pgqueue.worker = off\n");
$node->start;

my $pushed = sql(q{SELECT count(*) FROM pushed WHERE q = 'load'});
ok($pushed > 1000, "load: $pushed jobs pushed before the immediate stop");
is( val(
		q{SELECT coalesce(string_agg(DISTINCT sqlstate || ' '
									 || regexp_replace(message, '\d+', 'N', 'g'), E'\n'), '')
			FROM load_errors}),
	'',
	'load: push, pop and ack never failed before the stop');
my $inflight = sql(q{SELECT count(*) FROM inflight WHERE q = 'load'});
ok($inflight >= 5, "load: $inflight jobs were popped and not acked at the stop");
is( val(
		qq{SELECT count(*) FROM pgqueue.jobs j
		   WHERE j.queue = 'load' AND j.state = 'available' AND j.attempt = 0
			 AND j.job_id = ANY (SELECT generate_series(split_part(r, '-', 1)::bigint,
														coalesce(nullif(split_part(r, '-', 2), ''),
																 split_part(r, '-', 1))::bigint)
								   FROM unnest(string_to_array('$lost', ',')) r)}),
	'5',
	'load: after the restart the jobs of L\'s lost claims are available, never claimed');
is( val(
		qq{SELECT count(*) FROM inflight i JOIN got g USING (q, job_id, attempt)
		   LEFT JOIN pgqueue.jobs j ON j.queue = i.q AND j.job_id = i.job_id
		   WHERE i.q = 'load' AND g.lease_until > '$stop_at'
			 AND (j.state, j.attempt, j.lease_until)
				 IS DISTINCT FROM ('executing', i.attempt, g.lease_until)}),
	'0',
	'load: after the restart they are executing at their attempt, under their leases');
is( val(
		q{SELECT count(*) FROM pushed p
		   WHERE q = 'load'
			 AND NOT EXISTS (SELECT 1 FROM pgqueue.jobs j WHERE j.queue = 'load' AND j.job_id = p.job_id)
			 AND NOT EXISTS (SELECT 1 FROM pgqueue.job_history h
							  WHERE h.queue = 'load' AND h.job_id = p.job_id AND h.state = 'succeeded')}),
	'0',
	'load: no pushed job is missing');
my $executing =
  sql(q{SELECT count(*) FROM pgqueue.jobs WHERE queue = 'load' AND state = 'executing'});
sleep_past_leases('load');
is(val(q{SELECT pgqueue.maintain('load') -> 'expired_leases'}),
	$executing, "load: maintenance expires the leases of the $executing jobs executing");
my $drained = val(q{SELECT drain('load')});
ok($drained =~ /^\d+$/ && $drained >= $executing, "load: a drain ends: $drained jobs");
sql(q{SELECT pgqueue.maintain('load')});
check_once('load', $pushed);

# --- 4. a crash at each step of compaction of blocks of claims --------------------

# Blocks 0 and 1 of claims of 25 jobs (see the header); the next
# maintenance closes them and compacts them into block -1.
sql(<<'EOS');
CREATE FUNCTION build(q text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pgqueue.queue_create(q, block_size => 100, retention => '0', max_attempts => 3);
	PERFORM push(q, 250);
	FOR i IN 1 .. 8 LOOP
		PERFORM pop(q, 25, '1 hour');
	END LOOP;
	PERFORM ack(q, array(SELECT generate_series(1, 25)::bigint));
	PERFORM ack(q, array(SELECT generate_series(26, 40)::bigint));
	PERFORM ack(q, array(SELECT generate_series(41, 50)::bigint));
	PERFORM ack(q, ARRAY[i::bigint]) FROM generate_series(51, 75) i;
	PERFORM ack(q, array(SELECT generate_series(76, 90)::bigint));
	PERFORM pgqueue.queue_fail(q, 91, 'later', retry_in => '1 hour', attempt => 1);
	PERFORM pgqueue.queue_extend(q, 92, '2 hours', attempt => 1);
	PERFORM ack(q, array(SELECT generate_series(101, 190)::bigint));
	PERFORM pgqueue.queue_abort(q, 191, 'operator');
END
$$;

-- a queue's jobs and history, as they were
CREATE TABLE snap_jobs AS
	SELECT queue, job_id, state, attempt, failures, last_error, run_at, lease_until, updated_at
	  FROM pgqueue.jobs WHERE false;
CREATE TABLE snap_history AS
	SELECT queue, job_id, seq, state, attempt, failures, at, lease_until, run_at, error
	  FROM pgqueue.job_history WHERE false;
CREATE FUNCTION snap(q text) RETURNS void LANGUAGE sql AS $$
	INSERT INTO snap_jobs
	SELECT queue, job_id, state, attempt, failures, last_error, run_at, lease_until, updated_at
	  FROM pgqueue.jobs WHERE queue = q;
	INSERT INTO snap_history
	SELECT queue, job_id, seq, state, attempt, failures, at, lease_until, run_at, error
	  FROM pgqueue.job_history WHERE queue = q;
$$;

-- how a queue's jobs and history differ from its snap: a live job must be
-- as it was, a job only in the archive must have been finished, with the
-- same last state; the history (live and archived) the same rows, none
-- twice
CREATE FUNCTION changes(q text) RETURNS SETOF text LANGUAGE sql AS $$
	WITH j AS (SELECT queue, job_id, state, attempt, failures, last_error, run_at, lease_until,
					  updated_at
				 FROM pgqueue.jobs WHERE queue = q),
		 h AS (SELECT queue, job_id, seq, state, attempt, failures, at, lease_until, run_at, error
				 FROM pgqueue.job_history WHERE queue = q),
		 s AS (SELECT * FROM snap_jobs WHERE queue = q),
		 l AS (SELECT DISTINCT ON (job_id) job_id, state FROM h ORDER BY job_id, seq DESC)
	SELECT format('job %s was %s, is %s', s.job_id, s, j)
	  FROM s JOIN j USING (job_id) WHERE (s.*) IS DISTINCT FROM (j.*)
	UNION ALL
	SELECT format('job %s is new: %s', j.job_id, j)
	  FROM j WHERE NOT EXISTS (SELECT 1 FROM s WHERE s.job_id = j.job_id)
	UNION ALL
	SELECT format('job %s (%s) is gone, its history ends %s', s.job_id, s.state, l.state)
	  FROM s LEFT JOIN l USING (job_id)
	 WHERE NOT EXISTS (SELECT 1 FROM j WHERE j.job_id = s.job_id)
	   AND (s.state NOT IN ('succeeded', 'aborted') OR l.state IS DISTINCT FROM s.state)
	UNION ALL
	(SELECT 'history lost: ' || x::text
	   FROM (SELECT * FROM snap_history WHERE queue = q EXCEPT ALL SELECT * FROM h) x
	  ORDER BY 1 LIMIT 10)
	UNION ALL
	(SELECT 'history new: ' || x::text
	   FROM (SELECT * FROM h EXCEPT ALL SELECT * FROM snap_history WHERE queue = q) x
	  ORDER BY 1 LIMIT 10)
$$;
EOS

my $blocks_sql = q{
	SELECT string_agg(b.block_no || ' ' || b.state, ', ' ORDER BY b.first_id)
	  FROM pgqueue.block b JOIN pgqueue.queue q USING (queue_id) WHERE q.name = '%s'};

sub check_unchanged
{
	my ($q, $what) = @_;
	is(val("SELECT string_agg(c, E'\\n') FROM (SELECT * FROM changes('$q') LIMIT 20) x(c)"),
		'', "$what: every job's state and history are as before");
}

# maintain(q) with the fault at step: the server PANICs and restarts
sub crash_at
{
	my ($step, $q) = @_;
	my $offset = -s $node->logfile;
	like(val("SET pgqueue.fault_injection = '$step'; SELECT pgqueue.maintain('$q')"),
		qr/^error: /, "$step: maintain() does not return");
	my $log = wait_crash_restart($offset, $step);
	like($log, qr/PANIC:  pgqueue fault injection at step "$step"/, "$step: it PANICked there");
}

for my $step (
	qw(compact_created compact_copied compact_archived compact_caught_up
	compact_locked compact_swapped))
{
	sql("SELECT build('$step')");
	is( val("SELECT states('$step')"),
		'aborted 1: 191; available 0: 201-250; executing 1: 92-100,192-200; '
		  . 'failed 1: 91; succeeded 1: 1-90,101-190',
		"$step: the jobs before");
	sql("SELECT snap('$step')");
	is(val(sprintf($blocks_sql, $step)), '0 open, 1 open, 2 open', "$step: the blocks before");
	crash_at($step, $step);
	is(val(sprintf($blocks_sql, $step)),
		'0 open, 1 open, 2 open', "$step: after the crash the blocks are as before");
	check_unchanged($step, "$step, after the crash");
	like(
		val("SELECT pgqueue.maintain('$step') -> 'compacted' ->> 0"),
		qr/^$step: 2 blocks 0\.\.1: 19 jobs moved to block -1, \d+ status rows archived$/,
		"$step: the next round compacts blocks 0 and 1");
	is(val(sprintf($blocks_sql, $step)), '-1 closed, 2 open, 3 open', "$step: the blocks after");
	check_unchanged($step, "$step, after compaction");
	is(val("SELECT pop('$step', 100, '1 hour')"),
		'attempt 1: 201-250', "$step: a pop hands out none of the jobs the moved claims hold");
	is( val(
			"SELECT ack('$step', array_agg(job_id)) FROM pgqueue.jobs
			  WHERE queue = '$step' AND state = 'executing'"),
		'68',
		"$step: the executing jobs, those of the moved claims too, are acked");
	is( val("SELECT states('$step')"),
		'failed 1: 91; succeeded 1: 92-100,192-250',
		"$step: they succeeded");
	# one row more for each of 18 acks, two for each of the 50 jobs popped
	my $rows = sql("SELECT count(*) + 18 + 100 FROM snap_history WHERE queue = '$step'");
	is( val(
			"SELECT count(*) FILTER (WHERE state = 'succeeded') || ' '
					|| count(DISTINCT (job_id, seq)) || ' ' || count(*)
			   FROM pgqueue.job_history WHERE queue = '$step'"),
		"248 $rows $rows",
		"$step: 248 jobs succeeded once each, no history row twice");
}

$node->stop;
done_testing();
