# 104_upgrade.pl: ALTER EXTENSION pgqueue UPDATE from 0.1.0 to 0.2.0.
#
# One cluster with pgqueue preloaded and its worker off.  Checks, in order:
#   - CREATE EXTENSION pgqueue VERSION '0.1.0' works with the 0.2.0
#     library; four queues of blocks of 100 (one with tenant weights and a
#     tenant cap, one with retention 0) are filled the way 0.1.0 wrote its
#     tables, over at least three blocks each, with jobs in every state:
#     available (never claimed, and released), blocked behind a key,
#     scheduled, executing under an unexpired lease at attempt 1 and at
#     attempt 2 after a failure, failed waiting for a retry, succeeded,
#     aborted; with keys and tenants.  maintain() under 0.1.0 archives the
#     finished blocks of the retention-0 queue.  Users grant EXECUTE on
#     queue_push and queue_pop to one role and SELECT on pgqueue.jobs to
#     another;
#   - the library refuses to push or ack with the 0.1.0 SQL: 55000 and a
#     hint to run ALTER EXTENSION pgqueue UPDATE, and nothing changes;
#   - two consumers (pgbench, pop and ack in transactions of their own)
#     run before, during and after ALTER EXTENSION pgqueue UPDATE: the
#     update succeeds, the consumers are refused only before it and pop
#     and ack after it; no attempt of a job is claimed or acked twice
#     (job_history); no job is lost (live in pgqueue.jobs or archived in
#     job_history), no history row of 0.1.0 changed, and every job the
#     consumers did not take kept its state, attempt, failures, key,
#     tenant, payload, error, lease and run time; the archived history
#     shows in 0.2.0's job_history;
#   - the leases taken under 0.1.0 (attempts 1 and 2) are acked by their
#     attempt after the update, a stale attempt is refused, and the next
#     job of a key is released by the ack;
#   - the schema equals a fresh 0.2.0 install in another database: every
#     object of the extension (functions, tables, columns, constraints,
#     indexes, views, sequences, types, schemas, comments, ACLs without
#     the users' grants, config tables), and the tables a queue_create
#     makes; a block made by 0.1.0 has the structure of one made by 0.2.0;
#     pg_dump of the upgraded database still dumps the users' grants (the
#     update must not take them into the extension's initial privileges,
#     pg_init_privs, which pg_dump leaves out);
#   - the users' grants survive, and the granted role pushes and pops after
#     the update with no new grant; maintain() works after the update and
#     still loses no job.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'pgqueue'
pgqueue.worker = off
max_connections = 30
});
$node->start;

sub sql { return $node->safe_psql($_[1] // 'postgres', $_[0]); }

# Run SQL that may fail: (exit code, stdout, stderr), with SQLSTATEs shown
sub try_sql
{
	my ($sql, %params) = @_;
	my ($out, $err) = ('', '');
	my $ret = $node->psql(
		'postgres', "\\set VERBOSITY verbose\n$sql",
		stdout => \$out,
		stderr => \$err,
		%params);
	return ($ret, $out, $err);
}

# Run a query until it returns $expected or $secs pass
sub poll
{
	my ($sql, $expected, $secs) = @_;
	my $deadline = time() + ($secs // 10);
	my $got = '';
	while (time() < $deadline)
	{
		$got = sql($sql);
		return 1 if $got eq $expected;
		usleep(50_000);
	}
	diag("poll timed out: $sql\nexpected: $expected\nlast: $got");
	return 0;
}

# is() for two lists of lines, printing only the lines that differ
sub same_lines
{
	my ($got, $expected, $name) = @_;
	my %in_got = map { $_ => 1 } split /\n/, $got;
	my %in_expected = map { $_ => 1 } split /\n/, $expected;
	my @only_got = grep { !$in_expected{$_} } split /\n/, $got;
	my @only_expected = grep { !$in_got{$_} } split /\n/, $expected;
	my $ok = ok($got eq $expected, $name);
	if (!$ok)
	{
		diag("upgraded only: $_") for @only_got;
		diag("fresh only:    $_") for @only_expected;
		diag('same lines, in another order') if !@only_got && !@only_expected;
	}
	return $ok;
}

# --- 0.1.0, filled as 0.1.0 wrote its tables ---------------------------------

sql(q{CREATE EXTENSION pgqueue VERSION '0.1.0'});
is(sql(q{SELECT extversion FROM pg_extension WHERE extname = 'pgqueue'}),
	'0.1.0', 'CREATE EXTENSION pgqueue VERSION 0.1.0');

# The status rows of each state a job is made in, relative to a time t 20
# minutes ago: minutes after t of the row and of its due time (80: an hour
# from now, so no lease expires during the test).  "available" has none.
sql(<<'EOS');
CREATE TABLE status_plan (state text, seq integer, st "char", attempt integer, fails integer,
						  at_min integer, due_min integer, error text);
INSERT INTO status_plan VALUES
	('released', 1, 'e', 1, 0, 1, 2, NULL),
	('released', 2, 'a', 1, 0, 2, 2, NULL),
	('scheduled', 1, 's', 0, 0, 0, 80, NULL),
	('executing', 1, 'e', 1, 0, 1, 80, NULL),
	('executing2', 1, 'e', 1, 0, 1, 2, NULL),
	('executing2', 2, 'f', 1, 1, 2, 3, 'boom'),
	('executing2', 3, 'e', 2, 1, 4, 80, 'boom'),
	('failed', 1, 'e', 1, 0, 1, 2, NULL),
	('failed', 2, 'f', 1, 1, 2, 80, 'boom'),
	('succeeded', 1, 'e', 1, 0, 1, 2, NULL),
	('succeeded', 2, 'd', 1, 0, 2, NULL, NULL),
	('aborted', 1, 'e', 1, 0, 1, 2, NULL),
	('aborted', 2, 'f', 1, 1, 2, 3, 'boom'),
	('aborted', 3, 'x', 1, 1, 3, NULL, 'aborted by hand');

-- n jobs for a queue; job i is made in state states[i], with key keys[i]
-- and tenant tenants[i] (each array used round-robin)
CREATE FUNCTION fill(queue text, n integer, states text[], keys text[] DEFAULT '{NULL}',
					 tenants text[] DEFAULT '{NULL}')
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	q pgqueue.queue;
	t timestamptz := now() - interval '20 minutes';
	id bigint;
	b integer;
	st text;
	k text;
	tn text;
BEGIN
	SELECT * INTO STRICT q FROM pgqueue.queue qu WHERE qu.name = fill.queue;
	FOR i IN 1 .. n LOOP
		st := states[1 + (i - 1) % cardinality(states)];
		k := keys[1 + (i - 1) % cardinality(keys)];
		tn := tenants[1 + (i - 1) % cardinality(tenants)];
		id := nextval(format('pgqueue_data.%I', 'seq_' || q.queue_id)::regclass);
		b := ((id - 1) / q.block_size)::integer;
		PERFORM pgqueue._block_create(q.queue_id, b);
		EXECUTE format('INSERT INTO %s (queue_id, job_id, key, priority, run_at, enqueued_at,'
					   ' payload, tenant) VALUES ($1, $2, $3, 0, $4, $5, $6, $7)',
					   pgqueue._rel('j', q.queue_id, b))
			USING q.queue_id, id, k,
				  CASE WHEN st = 'scheduled' THEN t + interval '80 minutes' END, t,
				  jsonb_build_object('queue', queue, 'job', id, 'made', st, 'key', k,
									 'tenant', tn, 'list', jsonb_build_array(i, 'x')), tn;
		EXECUTE format('INSERT INTO %s (queue_id, job_id, seq, state, attempt, fails, at,'
					   ' due_at, error)'
					   ' SELECT $1, $2, p.seq, p.st, p.attempt, p.fails,'
					   '  $3 + p.at_min * interval ''1 minute'','
					   '  $3 + p.due_min * interval ''1 minute'', p.error'
					   ' FROM status_plan p WHERE p.state = $4',
					   pgqueue._rel('s', q.queue_id, b))
			USING q.queue_id, id, t, st;
	END LOOP;
END
$$;
EOS

sql(<<'EOS');
SELECT pgqueue.queue_create('plain', block_size => 100, backoff_jitter => 0);
SELECT pgqueue.queue_create('keyed', block_size => 100);
SELECT pgqueue.queue_create('tenants', block_size => 100, tenant_weights => '{"t1": 3, "t2": 1}',
							tenant_max_in_flight => 50);
-- (queue_alter of 0.1.0 calls the library to wake pops: refused)
SELECT pgqueue.queue_create('arch', block_size => 100, retention => '0');

SELECT fill('plain', 250, '{available,available,available,released,scheduled,executing,executing2,failed,succeeded,aborted}');

-- k1: executing, two blocked behind it; k2: its first succeeded, the next
-- available; k3: failed, the next blocked; k4: executing at attempt 2, a
-- scheduled one; k5: aborted, the next available
SELECT fill('keyed', 11,
			'{executing,available,available,succeeded,available,failed,available,executing2,scheduled,aborted,available}',
			'{k1,k1,k1,k2,k2,k3,k3,k4,k4,k5,k5}');
SELECT fill('keyed', 219, '{available,succeeded,executing,available,failed,available,scheduled}',
			'{NULL,k6,NULL,k7,k8,NULL,k6,k9,NULL,NULL,k7}');

SELECT fill('tenants', 240, '{available,available,executing,available,succeeded,failed,available,scheduled,executing2,aborted}',
			tenants => '{t1,t2,t3}');

-- two blocks of finished jobs, for maintain() to archive; then every state
SELECT fill('arch', 200, '{succeeded,succeeded,aborted}');
SELECT fill('arch', 60, '{available,available,available,released,scheduled,executing,executing2,failed,succeeded,aborted}',
			'{NULL,NULL,ka}', '{NULL,t1}');
EOS

my $maintained = sql(q{SELECT pgqueue.maintain()});
like($maintained, qr/"compacted": \["arch: 2 blocks 0\.\.1: 0 jobs moved, \d+ status rows archived"\]/,
	'maintain() under 0.1.0 archives the two finished blocks of the retention-0 queue')
  or diag($maintained);

is( sql(
		q{SELECT string_agg(queue || ' ' || n, ', ' ORDER BY queue)
			FROM (SELECT queue, count(*) n FROM pgqueue.blocks GROUP BY queue) b}),
	'arch 2, keyed 3, plain 4, tenants 3',
	'the queues span three or more blocks');

# The snapshot: every live job as 0.1.0's view shows it, and every status
# row (live and archived) as 0.1.0's job_history shows it
sql(<<'EOS');
CREATE TABLE snap AS
SELECT queue, job_id, state, attempt, failures, key, tenant, payload, last_error, run_at,
	   lease_until
  FROM pgqueue.jobs;
CREATE TABLE snap_history AS SELECT * FROM pgqueue.job_history;
CREATE TABLE snap_queue AS SELECT * FROM pgqueue.queue;
CREATE TABLE snap_block AS SELECT * FROM pgqueue.block;
EOS

is( sql(
		q{SELECT string_agg(s, ', ' ORDER BY s) FROM (
			SELECT DISTINCT state || CASE WHEN state = 'executing' THEN ' ' || attempt ELSE '' END
				   || CASE WHEN key IS NOT NULL THEN ' keyed' ELSE '' END
				   || CASE WHEN tenant IS NOT NULL THEN ' tenant' ELSE '' END s
			  FROM snap) x}),
	'aborted, aborted keyed, aborted keyed tenant, aborted tenant, available, available keyed, '
	  . 'available tenant, blocked keyed, blocked keyed tenant, executing 1, executing 1 keyed, '
	  . 'executing 1 keyed tenant, executing 1 tenant, executing 2, executing 2 keyed, '
	  . 'executing 2 tenant, failed, failed keyed, failed keyed tenant, failed tenant, '
	  . 'scheduled, scheduled keyed, scheduled tenant, succeeded, succeeded keyed, '
	  . 'succeeded tenant',
	'before the update there are jobs in every state, with and without keys and tenants');
is( sql(
		q{SELECT count(DISTINCT job_id) || ' ' || count(*)
			FROM snap_history WHERE queue = 'arch' AND archived}),
	'200 466', '0.1.0 archived the history of 200 jobs');
is( sql(
		q{SELECT string_agg(job_id || ' ' || state, ', ' ORDER BY job_id)
			FROM snap WHERE queue = 'keyed' AND job_id <= 11}),
	'1 executing, 2 blocked, 3 blocked, 4 succeeded, 5 available, 6 failed, 7 blocked, '
	  . '8 executing, 9 scheduled, 10 aborted, 11 available',
	'the keyed jobs: blocked behind an executing and a failed job of their key');

# the users' grants
sql(<<'EOS');
CREATE ROLE app_user LOGIN;
CREATE ROLE app_monitor LOGIN;
GRANT EXECUTE ON FUNCTION pgqueue.queue_push(text, jsonb, text, integer, timestamptz, text),
	pgqueue.queue_pop(text, integer, interval, interval) TO app_user;
GRANT SELECT ON pgqueue.jobs TO app_monitor;
EOS

# every grant to the users' roles on objects of schema pgqueue
my $user_grants_sql = q{
	SELECT string_agg(line, E'\n' ORDER BY line COLLATE "C") FROM (
		SELECT 'function ' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ') '
			   || pg_get_userbyid(x.grantee) || ' ' || x.privilege_type AS line
		  FROM pg_proc p, aclexplode(p.proacl) x
		 WHERE p.pronamespace = 'pgqueue'::regnamespace
		   AND pg_get_userbyid(x.grantee) IN ('app_user', 'app_monitor')
		UNION ALL
		SELECT 'relation ' || c.relname || ' ' || pg_get_userbyid(x.grantee) || ' ' || x.privilege_type
		  FROM pg_class c, aclexplode(c.relacl) x
		 WHERE c.relnamespace = 'pgqueue'::regnamespace
		   AND pg_get_userbyid(x.grantee) IN ('app_user', 'app_monitor')) l};
my $user_grants_before = sql($user_grants_sql);
is( $user_grants_before,
	"function queue_pop(queue text, n integer, lease interval, wait interval) app_user EXECUTE\n"
	  . "function queue_push(queue text, payload jsonb, key text, priority integer, run_at timestamp with time zone, tenant text) app_user EXECUTE\n"
	  . 'relation jobs app_monitor SELECT',
	'the users\' grants under 0.1.0');

# --- the library refuses the 0.1.0 SQL --------------------------------------

my ($ret, $out, $err) = try_sql(q{SELECT pgqueue.queue_push('plain', '{}')});
isnt($ret, 0, 'queue_push with the 0.1.0 SQL fails');
like(
	$err,
	qr/ERROR:  55000: pgqueue library version 0\.2\.0 cannot use the objects of pgqueue version 0\.1\.0/,
	'with SQLSTATE 55000, naming both versions');
like($err, qr/HINT:  Run ALTER EXTENSION pgqueue UPDATE/, 'and a hint to run ALTER EXTENSION pgqueue UPDATE');
($ret, $out, $err) = try_sql(
	q{SELECT pgqueue.queue_ack('plain', job_id, attempt) FROM snap
	   WHERE queue = 'plain' AND state = 'executing' ORDER BY job_id LIMIT 1});
like($err, qr/ERROR:  55000: .*\nHINT:  Run ALTER EXTENSION pgqueue UPDATE/,
	'queue_ack with the 0.1.0 SQL fails the same way');
is( sql(
		q{SELECT count(*) FROM pgqueue.job_history h
		   WHERE NOT EXISTS (SELECT 1 FROM snap_history s WHERE s.queue = h.queue
							   AND s.job_id = h.job_id AND s.seq = h.seq)}),
	'0', 'and nothing was written');

# --- consumers across ALTER EXTENSION pgqueue UPDATE --------------------------

# A consumer pops (one transaction), then acks what it popped (another);
# both log what they did and every error, and go on after one.
sql(<<'EOS');
CREATE TABLE popped (pid integer, queue text, job_id bigint, attempt integer,
					 popped_at timestamptz, acked_at timestamptz);
CREATE TABLE consumer_errors (pid integer, op text, at timestamptz, sqlstate text,
							  message text, hint text);
CREATE FUNCTION consumer_pop() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	q text := (ARRAY['plain', 'tenants'])[1 + floor(random() * 2)::integer];
	st text;
	msg text;
	hint text;
BEGIN
	INSERT INTO popped
	SELECT pg_backend_pid(), q, p.job_id, p.attempt, clock_timestamp(), NULL
	  FROM pgqueue.queue_pop(q, 2, lease => '5 minutes') p;
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
	INSERT INTO consumer_errors VALUES (pg_backend_pid(), 'pop', clock_timestamp(), st, msg, hint);
END
$$;
CREATE FUNCTION consumer_ack() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	r record;
	n integer;
	st text;
	msg text;
	hint text;
BEGIN
	FOR r IN SELECT p.queue, array_agg(p.job_id ORDER BY p.job_id) AS ids,
					array_agg(p.attempt ORDER BY p.job_id) AS attempts
			   FROM popped p WHERE p.pid = pg_backend_pid() AND p.acked_at IS NULL
			  GROUP BY p.queue LOOP
		BEGIN
			n := pgqueue.queue_ack(r.queue, r.ids, r.attempts);
			IF n <> cardinality(r.ids) THEN
				RAISE EXCEPTION 'acked % of % jobs', n, cardinality(r.ids);
			END IF;
			UPDATE popped p SET acked_at = clock_timestamp()
			 WHERE p.pid = pg_backend_pid() AND p.queue = r.queue AND p.job_id = ANY (r.ids)
			   AND p.acked_at IS NULL;
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
									hint = PG_EXCEPTION_HINT;
			INSERT INTO consumer_errors
			VALUES (pg_backend_pid(), 'ack', clock_timestamp(), st, msg, hint);
		END;
	END LOOP;
END
$$;
EOS
my $script = $node->basedir . '/consumer.sql';
open(my $fh, '>', $script) or die "could not write $script: $!";
print $fh "SELECT consumer_pop();\nSELECT consumer_ack();\nSELECT pg_sleep(0.03);\n";
close($fh);

my ($bench_out, $bench_err) = ('', '');
my $bench = IPC::Run::start(
	[
		'pgbench', '-n', '-c', '2', '-j', '2', '-T', '5', '-f', $script,
		'-h', $node->host, '-p', $node->port, 'postgres'
	],
	'>', \$bench_out, '2>', \$bench_err);
ok(poll(q{SELECT count(DISTINCT pid) FROM consumer_errors}, '2'),
	'both consumers run (and are refused) before the update');
my $update_start = sql(q{SELECT clock_timestamp()});
($ret, $out, $err) = try_sql('ALTER EXTENSION pgqueue UPDATE');
my $update_end = sql(q{SELECT clock_timestamp()});
is($ret, 0, 'ALTER EXTENSION pgqueue UPDATE succeeds while the consumers run') or diag($err);
is(sql(q{SELECT extversion FROM pg_extension WHERE extname = 'pgqueue'}), '0.2.0', 'to 0.2.0');
my $bench_ok = $bench->finish;
is($bench_ok ? 0 : $?, 0, 'the consumers (pgbench) end normally') or diag("$bench_out\n$bench_err");
is( sql(
		q{SELECT count(*) FROM snap_queue s FULL JOIN pgqueue.queue q USING (queue_id)
		   WHERE to_jsonb(s) IS DISTINCT FROM to_jsonb(q) - 'owner'
			  OR q.owner IS DISTINCT FROM 'postgres'}),
	'0',
	'every queue kept its options, and belongs to the extension\'s owner');
is( sql(
		q{SELECT count(*) FROM (SELECT * FROM snap_block EXCEPT SELECT * FROM pgqueue.block
								UNION ALL
								SELECT * FROM pgqueue.block EXCEPT SELECT * FROM snap_block) x}),
	'0', 'every block is as it was');

is( sql(
		qq{SELECT count(*) FROM consumer_errors
			WHERE sqlstate <> '55000' OR hint NOT LIKE 'Run ALTER EXTENSION pgqueue UPDATE%'
			   OR at > '$update_end'::timestamptz + interval '200 ms'}),
	'0',
	'every consumer error was 55000 with the hint, and none came after the update');
ok( sql(
		qq{SELECT count(*) FROM consumer_errors WHERE at < '$update_start'}) > 0,
	'the consumers were refused before the update');
my ($pops, $pop_pids, $unacked, $early) = split /\|/, sql(
	qq{SELECT count(*), count(DISTINCT pid), count(*) FILTER (WHERE acked_at IS NULL),
			  count(*) FILTER (WHERE popped_at < '$update_start')
		 FROM popped});
ok($pops >= 20, "the consumers popped after the update: $pops jobs");
is($pop_pids, 2, 'both of them');
is($unacked, 0, 'and acked every job they popped');
is($early, 0, 'no pop succeeded before the update');

is( sql(
		q{SELECT count(*) FROM (
			SELECT queue, job_id, attempt FROM pgqueue.job_history
			 GROUP BY queue, job_id, attempt
			HAVING count(*) FILTER (WHERE state = 'executing') > 1
				OR count(*) FILTER (WHERE state = 'succeeded') > 1) x}),
	'0',
	'job_history: no attempt of a job was claimed or acked twice');
is( sql(
		q{SELECT count(*) FROM (SELECT queue, job_id, attempt FROM popped
								 GROUP BY 1, 2, 3 HAVING count(*) > 1) x}),
	'0', 'no job was delivered twice at one attempt');
is( sql(
		q{SELECT count(*) FROM popped p JOIN snap s USING (queue, job_id)
			LEFT JOIN pgqueue.jobs j USING (queue, job_id)
		   WHERE p.attempt <> s.attempt + 1 OR j.state IS DISTINCT FROM 'succeeded'
			  OR j.attempt <> p.attempt
			  OR s.state NOT IN ('available')}),
	'0',
	'every job popped was available, is succeeded now, at the attempt after its 0.1.0 one');
is( sql(
		q{SELECT count(*) FROM snap s
		   WHERE NOT EXISTS (SELECT 1 FROM pgqueue.jobs j WHERE j.queue = s.queue AND j.job_id = s.job_id)}),
	'0',
	'no live job lost');
is( sql(
		q{SELECT count(*) FROM (SELECT queue, job_id FROM snap_history EXCEPT
								(SELECT queue, job_id FROM pgqueue.jobs UNION
								 SELECT queue, job_id FROM pgqueue.job_history WHERE archived)) x}),
	'0',
	'every job of 0.1.0 is live or archived in job_history');
is( sql(
		q{SELECT count(*) FROM (SELECT * FROM snap_history EXCEPT SELECT * FROM pgqueue.job_history) x}),
	'0',
	'every status row of 0.1.0, live and archived, is unchanged in 0.2.0\'s job_history');
is( sql(
		q{SELECT count(DISTINCT job_id) || ' ' || count(*)
			FROM pgqueue.job_history WHERE queue = 'arch' AND archived}),
	'200 466', 'job_history shows the archived rows');
is( sql(
		q{SELECT count(*) FILTER (WHERE a.attstattarget = 0) || ' of ' || count(*)
			FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
			JOIN pg_namespace n ON n.oid = c.relnamespace
		   WHERE n.nspname = 'pgqueue_data' AND c.relname ~ '^[ja]_[0-9]+_'
			 AND c.relkind = 'r' AND a.attname = 'payload'}),
	sql(q{SELECT count(*) || ' of ' || count(*) FROM (
			SELECT queue_id FROM pgqueue.block UNION ALL SELECT queue_id FROM pgqueue.archive) x}),
	'every jobs and archive table of 0.1.0 leaves payload out of ANALYZE, as new ones do');
my $untouched_sql = q{
	SELECT %s FROM snap s LEFT JOIN pgqueue.jobs j USING (queue, job_id)
	 WHERE NOT EXISTS (SELECT 1 FROM popped p WHERE p.queue = s.queue AND p.job_id = s.job_id)
	   AND (s.state, s.attempt, s.failures, s.key, s.tenant, s.payload, s.last_error, s.run_at,
			s.lease_until)
		   IS DISTINCT FROM
		   (j.state, j.attempt, j.failures, j.key, j.tenant, j.payload, j.last_error, j.run_at,
			j.lease_until)};
my $changed = sql(sprintf($untouched_sql, 'count(*)'));
is($changed, '0',
	'every job the consumers did not take kept its state, attempt, failures, key, tenant, payload, error, run time and lease'
) or diag(sql(sprintf($untouched_sql, 's.*, j.*') . ' LIMIT 10'));
is(sql(q{SELECT count(*) FROM pgqueue.jobs WHERE queue = 'keyed' AND state = 'blocked'}),
	sql(q{SELECT count(*) FROM snap WHERE queue = 'keyed' AND state = 'blocked'}),
	'the keyed jobs blocked before are blocked after');

# --- leases of 0.1.0 acked in 0.2.0 ---------------------------------------------

my $stale = sql(
	q{SELECT job_id FROM snap WHERE queue = 'plain' AND state = 'executing' AND attempt = 2
	   ORDER BY job_id LIMIT 1});
($ret, $out, $err) = try_sql(qq{SELECT pgqueue.queue_ack('plain', $stale, 1)});
isnt($ret, 0, 'an ack of attempt 1 of a job leased at attempt 2 under 0.1.0 is refused');
is(sql(qq{SELECT state || ' ' || attempt FROM pgqueue.jobs WHERE queue = 'plain' AND job_id = $stale}),
	'executing 2', 'and the job stays executing');
my ($leased, $per_attempt) = split /\|/, sql(
	q{SELECT count(*), string_agg(DISTINCT attempt::text, ',') FROM snap WHERE state = 'executing'});
is( sql(
		q{SELECT sum(pgqueue.queue_ack(queue, ids, attempts)) FROM (
			SELECT queue, array_agg(job_id ORDER BY job_id) ids,
				   array_agg(attempt ORDER BY job_id) attempts
			  FROM snap WHERE state = 'executing' GROUP BY queue) x}),
	$leased,
	"the $leased jobs leased under 0.1.0 (attempts $per_attempt) are acked by their attempt");
is( sql(
		q{SELECT count(*) FROM snap s JOIN pgqueue.jobs j USING (queue, job_id)
		   WHERE s.state = 'executing' AND j.state = 'succeeded' AND j.attempt = s.attempt}),
	$leased, 'all of them succeeded at that attempt');
is( sql(
		q{SELECT string_agg(job_id || ' ' || state, ', ' ORDER BY job_id)
			FROM pgqueue.jobs WHERE queue = 'keyed' AND key = 'k1'}),
	'1 succeeded, 2 available, 3 blocked',
	'the ack of key k1\'s job releases the next one of the key');
is( sql(
		q{SELECT string_agg(job_id::text, ',') FROM pgqueue.queue_pop('keyed', 1)}),
	'2', 'and a pop takes it');

# --- the schema equals a fresh install --------------------------------------------

sql('CREATE DATABASE fresh');
sql('CREATE EXTENSION pgqueue', 'fresh');

# Canonical lines describing objects, shared by the two comparisons:
# pg_temp.acl lists an ACL without the users' grants (all of it with
# everything true), pg_temp.rel a table, view, sequence or composite type.
my $helpers = <<'EOS';
CREATE FUNCTION pg_temp.acl(a aclitem[], everything boolean DEFAULT false)
RETURNS text LANGUAGE sql STABLE AS $$
	SELECT CASE WHEN a IS NULL THEN 'default' ELSE coalesce(
		(SELECT string_agg(i.item, ',' ORDER BY i.item COLLATE "C") FROM (
			SELECT CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(x.grantee)::text END
				   || '=' || x.privilege_type || CASE WHEN x.is_grantable THEN '*' ELSE '' END
				   || '/' || pg_get_userbyid(x.grantor) AS item
			  FROM aclexplode(a) x
			 WHERE everything OR x.grantee = 0
				OR pg_get_userbyid(x.grantee) NOT IN ('app_user', 'app_monitor')) i),
		'none') END
$$;
CREATE FUNCTION pg_temp.rel(rel oid) RETURNS SETOF text LANGUAGE sql STABLE AS $$
	WITH r AS (SELECT c.*, n.nspname || '.' || c.relname AS qname
				 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
				WHERE c.oid = rel)
	SELECT 'relation ' || r.qname || ': kind ' || r.relkind::text || ', persistence '
		   || r.relpersistence::text || ', options ' || coalesce(array_to_string(r.reloptions, ','), '-')
		   || ', row security ' || r.relrowsecurity || ', owner ' || pg_get_userbyid(r.relowner)
		   || ', acl ' || pg_temp.acl(r.relacl)
	  FROM r
	UNION ALL
	SELECT 'column ' || r.qname || ' #' || lpad((row_number() OVER (ORDER BY a.attnum))::text, 2, '0') || ' '
		   || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
		   || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
		   || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
		   || CASE WHEN a.attcollation NOT IN (0, 100) THEN ' collate ' || a.attcollation::regcollation ELSE '' END
		   || ', acl ' || pg_temp.acl(a.attacl)
	  FROM r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
	  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
	UNION ALL
	SELECT 'constraint ' || r.qname || ' ' || c.conname || ': ' || pg_get_constraintdef(c.oid)
	  FROM r JOIN pg_constraint c ON c.conrelid = r.oid
	UNION ALL
	SELECT 'index ' || r.qname || ': ' || pg_get_indexdef(i.indexrelid)
	  FROM r JOIN pg_index i ON i.indrelid = r.oid
	UNION ALL
	SELECT 'inherits ' || r.qname || ' from ' || h.inhparent::regclass::text
	  FROM r JOIN pg_inherits h ON h.inhrelid = r.oid
	UNION ALL
	SELECT 'trigger ' || r.qname || ': ' || pg_get_triggerdef(t.oid)
	  FROM r JOIN pg_trigger t ON t.tgrelid = r.oid AND NOT t.tgisinternal
	UNION ALL
	SELECT 'policy ' || r.qname || ' ' || p.polname || ': ' || p.polcmd::text || ' '
		   || coalesce(pg_get_expr(p.polqual, p.polrelid), '-') || ' '
		   || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '-')
	  FROM r JOIN pg_policy p ON p.polrelid = r.oid
	UNION ALL
	SELECT 'view ' || r.qname || ' line ' || lpad(l.n::text, 3, '0') || ': ' || l.line
	  FROM r CROSS JOIN LATERAL regexp_split_to_table(pg_get_viewdef(r.oid, true), E'\n')
		   WITH ORDINALITY l(line, n)
	 WHERE r.relkind IN ('v', 'm')
	UNION ALL
	SELECT 'sequence ' || r.qname || ': ' || format_type(s.seqtypid, NULL) || ' start '
		   || s.seqstart || ' increment ' || s.seqincrement || ' min ' || s.seqmin || ' max '
		   || s.seqmax || ' cache ' || s.seqcache || ' cycle ' || s.seqcycle
	  FROM r JOIN pg_sequence s ON s.seqrelid = r.oid
	UNION ALL
	SELECT 'sequence ' || r.qname || ' owned by ' || d.refobjid::regclass::text || '.' || a.attname
	  FROM r JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = r.oid
							 AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'a'
	  JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
	 WHERE r.relkind = 'S'
$$;
EOS

my $describe_extension = $helpers . <<'EOS';
WITH m AS (
	SELECT d.classid, d.objid
	  FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
	 WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
	   AND e.extname = 'pgqueue'),
f AS (
	SELECT p.*, n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid)
				|| ')' AS sig
	  FROM m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid
	  JOIN pg_namespace n ON n.oid = p.pronamespace),
t AS (
	SELECT ty.*, n.nspname || '.' || ty.typname AS qname
	  FROM m JOIN pg_type ty ON m.classid = 'pg_type'::regclass AND ty.oid = m.objid
	  JOIN pg_namespace n ON n.oid = ty.typnamespace),
lines(line) AS (
	SELECT 'extension ' || e.extname || ' ' || e.extversion || ', schema '
		   || e.extnamespace::regnamespace || ', relocatable ' || e.extrelocatable || ', owner '
		   || pg_get_userbyid(e.extowner)
	  FROM pg_extension e WHERE e.extname = 'pgqueue'
	UNION ALL
	SELECT 'config table ' || c.cfg::regclass::text || ' condition ' || coalesce(c.cond, '-')
	  FROM pg_extension e, unnest(e.extconfig, e.extcondition) c(cfg, cond)
	 WHERE e.extname = 'pgqueue'
	UNION ALL
	SELECT 'member ' || pg_describe_object(m.classid, m.objid, 0) FROM m
	UNION ALL
	SELECT 'comment ' || pg_describe_object(d.classoid, d.objoid, d.objsubid) || ': ' || d.description
	  FROM m JOIN pg_description d ON d.classoid = m.classid AND d.objoid = m.objid
	UNION ALL
	SELECT 'function ' || f.sig || ' ' || x.k || ': ' || coalesce(x.v, '-')
	  FROM f CROSS JOIN LATERAL (VALUES
		('arguments', pg_get_function_arguments(f.oid)),
		('result', pg_get_function_result(f.oid)),
		('kind', f.prokind::text),
		('language', (SELECT l.lanname::text FROM pg_language l WHERE l.oid = f.prolang)),
		('security definer', f.prosecdef::text),
		('volatility', f.provolatile::text),
		('strict', f.proisstrict::text),
		('parallel', f.proparallel::text),
		('leakproof', f.proleakproof::text),
		('cost and rows', f.procost || ' ' || f.prorows),
		('config', array_to_string(f.proconfig, ', ')),
		('binary', f.probin),
		('source md5', md5(f.prosrc)),
		('definition md5', md5(pg_get_functiondef(f.oid))),
		('owner', pg_get_userbyid(f.proowner)::text),
		('acl', pg_temp.acl(f.proacl))) x(k, v)
	UNION ALL
	SELECT l.line
	  FROM m CROSS JOIN LATERAL pg_temp.rel(m.objid) l(line)
	 WHERE m.classid = 'pg_class'::regclass
	UNION ALL
	SELECT 'type ' || t.qname || ': ' || t.typtype::text || ', owner ' || pg_get_userbyid(t.typowner)
		   || ', acl ' || pg_temp.acl(t.typacl)
		   || CASE WHEN t.typbasetype <> 0 THEN ', base ' || format_type(t.typbasetype, t.typtypmod) ELSE '' END
		   || coalesce(', default ' || t.typdefault, '')
		   || coalesce(', labels ' || (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
										FROM pg_enum e WHERE e.enumtypid = t.oid), '')
	  FROM t
	UNION ALL
	SELECT l.line
	  FROM t CROSS JOIN LATERAL pg_temp.rel(t.typrelid) l(line)
	 WHERE t.typrelid <> 0
	UNION ALL
	SELECT 'constraint of type ' || t.qname || ' ' || c.conname || ': ' || pg_get_constraintdef(c.oid)
	  FROM t JOIN pg_constraint c ON c.contypid = t.oid
	UNION ALL
	SELECT 'schema ' || n.nspname
		   || CASE WHEN n.oid IN (SELECT objid FROM m) THEN '' ELSE ' (not a member)' END
		   || ': owner ' || pg_get_userbyid(n.nspowner) || ', acl ' || pg_temp.acl(n.nspacl)
	  FROM pg_namespace n
	 WHERE n.oid IN (SELECT objid FROM m WHERE classid = 'pg_namespace'::regclass)
		OR n.nspname = 'pgqueue'
	UNION ALL
	SELECT 'initial privileges ' || pg_describe_object(ip.classoid, ip.objoid, ip.objsubid) || ': '
		   || ip.privtype::text || ' ' || pg_temp.acl(ip.initprivs)
	  FROM pg_init_privs ip JOIN m ON m.classid = ip.classoid AND m.objid = ip.objoid
	UNION ALL
	SELECT 'not a member: ' || pg_describe_object(o.classid, o.objid, 0)
	  FROM (SELECT 'pg_proc'::regclass AS classid, p.oid AS objid, p.pronamespace AS nsp FROM pg_proc p
			UNION ALL
			SELECT 'pg_class'::regclass, c.oid, c.relnamespace FROM pg_class c
			 WHERE c.relkind IN ('r', 'v', 'm', 'S', 'p', 'f')
			UNION ALL
			SELECT 'pg_type'::regclass, ty.oid, ty.typnamespace FROM pg_type ty
			 WHERE ty.typrelid = 0 AND ty.typelem = 0) o
	 WHERE o.nsp IN (SELECT oid FROM pg_namespace WHERE nspname IN ('pgqueue', 'pgqueue_internal'))
	   AND NOT EXISTS (SELECT 1 FROM m WHERE m.classid = o.classid AND m.objid = o.objid))
SELECT string_agg(line, E'\n' ORDER BY line COLLATE "C") FROM lines;
EOS

my $upgraded = sql($describe_extension, 'postgres');
my $fresh = sql($describe_extension, 'fresh');
my @fresh_lines = split /\n/, $fresh;
ok(@fresh_lines > 300, 'the description of a fresh install has ' . scalar(@fresh_lines) . ' lines');
same_lines($upgraded, $fresh,
	'the objects of the upgraded extension equal those of a fresh 0.2.0 install (ACLs without the users\' grants)'
);

my $init_privs_sql = $helpers . <<'EOS';
SELECT coalesce(string_agg(line, E'\n' ORDER BY line COLLATE "C"), '') FROM (
	SELECT pg_describe_object(ip.classoid, ip.objoid, ip.objsubid) || ': '
		   || pg_temp.acl(ip.initprivs, true) AS line
	  FROM pg_init_privs ip
	 WHERE EXISTS (SELECT 1 FROM aclexplode(ip.initprivs) x
					WHERE pg_get_userbyid(x.grantee) IN ('app_user', 'app_monitor'))) l;
EOS
# pg_dump leaves out the grants that pg_init_privs records as the
# extension's own: a user's grant must not be taken in among them
my ($dump, $dump_err) = ('', '');
IPC::Run::run([ 'pg_dump', '-s', '-h', $node->host, '-p', $node->port, 'postgres' ],
	'>', \$dump, '2>', \$dump_err)
  or die "pg_dump failed: $dump_err";
my @dumped_grants = $dump =~ /^(GRANT .* TO app_(?:user|monitor);)$/mg;
is(scalar(@dumped_grants), 3,
	'pg_dump of the upgraded database keeps the users\' 3 grants (not taken into the extension\'s initial privileges)'
  )
  or diag("pg_dump has:\n" . join("\n", @dumped_grants)
	  . "\ninitial privileges (pg_init_privs) that take in the users' grants:\n"
	  . sql($init_privs_sql));

# the tables of a queue made by queue_create, and of a block made by 0.1.0
# (its claims table made by the upgrade), with the queue id in their names
# and constraints made Q
my $describe_queue = $helpers . <<'EOS';
WITH q AS (SELECT queue_id AS qid FROM pgqueue.queue WHERE name = '%s')
SELECT string_agg(line, E'\n' ORDER BY line COLLATE "C") FROM (
	SELECT regexp_replace(regexp_replace(l.line, '\m(j|s|c|seq)_' || q.qid || '(_|\M)', '\1_Q\2', 'g'),
						  'queue_id = ' || q.qid || '\M', 'queue_id = Q', 'g') AS line
	  FROM q, pg_class c CROSS JOIN LATERAL pg_temp.rel(c.oid) l(line)
	 WHERE c.relnamespace = 'pgqueue_data'::regnamespace
	   AND c.relname IN ('j_' || q.qid || '_0', 's_' || q.qid || '_0', 'c_' || q.qid || '_0',
						 'seq_' || q.qid)) x;
EOS
sql(q{SELECT pgqueue.queue_create('new', block_size => 100)}, $_) for ('postgres', 'fresh');
my $new_fresh = sql(sprintf($describe_queue, 'new'), 'fresh');
like($new_fresh, qr/^index pgqueue_data\.s_Q_0: .*\(due_at\)/m,
	'the description of a queue\'s tables names their indexes');
same_lines(sql(sprintf($describe_queue, 'new'), 'postgres'),
	$new_fresh, 'queue_create makes the same tables after the upgrade as in a fresh install');
# A block made by 0.1.0 keeps a lane index of every job; those that 0.2.0
# makes leave out the unmarked jobs of the default lane (_block_tables).
my $lane_partial = ' WHERE ((priority <> 0) OR (tenant IS NOT NULL) OR lane_mark)';
ok(index($new_fresh, "COALESCE(tenant, ''::text), job_id)$lane_partial\n") >= 0,
	'the lane index of a block made by 0.2.0 leaves out the unmarked jobs of the default lane');
(my $new_full = $new_fresh) =~ s/\Q$lane_partial\E$//m;
same_lines(sql(sprintf($describe_queue, 'plain'), 'postgres'),
	$new_full,
	'a block and sequence made by 0.1.0 have the structure of those made by 0.2.0, but for a lane index of every job'
);

# --- the users' grants ---------------------------------------------------------------

is(sql($user_grants_sql), $user_grants_before, 'the users\' grants survive the update');
is( sql(
		q{SELECT has_function_privilege('app_user', 'pgqueue.queue_push(text, jsonb, text, integer, timestamptz, text)', 'EXECUTE')
			  || ' ' || has_function_privilege('app_user', 'pgqueue.queue_pop(text, integer, interval, interval)', 'EXECUTE')
			  || ' ' || has_table_privilege('app_monitor', 'pgqueue.jobs', 'SELECT')
			  || ' ' || has_function_privilege('app_user', 'pgqueue.queue_ack(text, bigint, integer)', 'EXECUTE')}
	),
	'true true true false',
	'has_function_privilege: app_user may push and pop (not ack); has_table_privilege: app_monitor reads jobs'
);
sql(q{SELECT pgqueue.queue_create('app', block_size => 100)});
is( $node->safe_psql(
		'postgres', q{
		SELECT pgqueue.queue_push('app', '{"by": "app_user"}');
		SELECT job_id || ' ' || payload::text || ' ' || attempt FROM pgqueue.queue_pop('app');},
		extra_params => [ '-U', 'app_user' ]),
	"1\n1 {\"by\": \"app_user\"} 1",
	'app_user pushes and pops after the update with no new grant');
($ret, $out, $err) = try_sql(q{SELECT pgqueue.queue_ack('app', 1, 1)},
	extra_params => [ '-U', 'app_user' ]);
like($err, qr/ERROR:  42501: permission denied for function queue_ack/,
	'and still may not ack, which it was not granted');

# --- maintenance after the update ---------------------------------------------------

$maintained = sql(q{SELECT pgqueue.maintain()});
like($maintained, qr/"errors": \[\]/, 'maintain() after the update succeeds on every queue')
  or diag($maintained);
is( sql(
		q{SELECT count(*) FROM (SELECT queue, job_id FROM snap_history EXCEPT
								(SELECT queue, job_id FROM pgqueue.jobs UNION
								 SELECT queue, job_id FROM pgqueue.job_history WHERE archived)) x}),
	'0',
	'and every job of 0.1.0 is still live or archived');

$node->stop;
done_testing();
