# 132_peer_upgrade_load.pl: ALTER EXTENSION pgqueue UPDATE (0.1.0 to
# 0.2.0) while producers and consumers run and the maintenance worker is on
# (issue 14, peer failure 11: pg-boss #832, a schema migration that
# deadlocked with the workers running beside it).
#
# test/t/104_upgrade.pl already runs two consumers (pop, then ack in a
# transaction of its own) through the update with the worker off, checks
# that their only errors are 55000 before it (lines 360-400) and that no
# job is lost or taken twice (lines 405-440).  It has no producers, no pop
# and ack in one transaction, no waiting pop, no maintenance worker beside
# the update, and it looks at the consumers' errors only, not at the
# worker's or the server log.  This test adds those:
#
# One cluster with pgqueue preloaded and its worker on (naptime 100 ms).
# CREATE EXTENSION pgqueue VERSION '0.1.0'; queue "up" (blocks of 100,
# retention 0, so blocks are closed, compacted and archived during the run)
# with 300 jobs written as 0.1.0 writes them (three blocks).  Then, for 8 s,
# seven pgbench clients: two producers (queue_push_batch of 5, logged in
# the pushing transaction, so a log row exists exactly when the push
# committed), two consumers that pop 10 and ack in a transaction of their
# own, two that pop and ack in one transaction, one that pops with a wait
# of 200 ms; each logs the ids it acked in the acking transaction and every
# error (SQLSTATE) it caught.  After 2 s, ALTER EXTENSION pgqueue UPDATE.
# Checks:
#   - the update succeeds, and no error of any client, of the worker or in
#     the server log is a deadlock (40P01); the clients' errors are all the
#     55000 that the library gives the 0.1.0 SQL before the update, and
#     after the update the server log has no error at all;
#   - the clients worked after the update (pushes and acks of every kind);
#   - after a final drain, every job (the 300 of 0.1.0 and every logged
#     push) was acked exactly once (ack logs) and succeeded (pgqueue.jobs
#     or, once compacted, job_history), no attempt succeeded twice, and no
#     job exists that nobody pushed;
#   - maintenance works after the update (pgqueue.maintenance is empty,
#     full blocks are compacted).
#
# Mutations of the product, each built into a private install, made the
# test fail as listed:
#   - check_version (src/cache.c) returns at once (the 0.2.0 library uses
#     the 0.1.0 SQL objects): the clients get errors other than 55000
#     before the update (3F000, schema "pgqueue_internal" does not exist):
#     "every client error was 55000" fails.
# The checks of deadlocks (clients' 40P01, pgbench's failed transactions,
# "deadlock detected" in the server log) are the same as those of
# 130_peer_runway.pl, which fail against the current product for its
# deadlock between a push and maintenance; no deadlock between the update
# and its clients was seen in the runs made against the product (two
# runs; the update took 0.3 s and 1.1 s under the load).
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = PostgreSQL::Test::Cluster->new('upgrade_load');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'pgqueue'
pgqueue.naptime = 100
max_connections = 40
deadlock_timeout = 100ms
});
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

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

sql(q{CREATE EXTENSION pgqueue VERSION '0.1.0'});
sql(q{SELECT pgqueue.queue_create('up', block_size => 100, retention => '0')});

# 300 jobs as 0.1.0 writes them (its push is refused by the 0.2.0 library)
sql(<<'EOS');
DO $$
DECLARE
	qid integer := (SELECT queue_id FROM pgqueue.queue WHERE name = 'up');
	id bigint;
BEGIN
	FOR i IN 1 .. 300 LOOP
		id := nextval(format('pgqueue_data.%I', 'seq_' || qid)::regclass);
		PERFORM pgqueue._block_create(qid, ((id - 1) / 100)::integer);
		EXECUTE format('INSERT INTO %s (queue_id, job_id, key, priority, run_at, enqueued_at, payload)'
					   ' VALUES ($1, $2, NULL, 0, NULL, now(), $3)',
					   pgqueue._rel('j', qid, ((id - 1) / 100)::integer))
			USING qid, id, jsonb_build_object('old', i);
	END LOOP;
END
$$;
EOS

# the clients' logs, written in their own transactions
sql(<<'EOS');
CREATE TABLE pushed (job_id bigint PRIMARY KEY, at timestamptz);
CREATE TABLE acked (job_id bigint, attempt integer, how text, at timestamptz);
CREATE TABLE client_errors (pid integer, op text, at timestamptz, sqlstate text, message text);

CREATE FUNCTION producer() RETURNS void LANGUAGE plpgsql AS $$
DECLARE st text; msg text;
BEGIN
	INSERT INTO pushed
	SELECT unnest(pgqueue.queue_push_batch('up', array_fill('{"new": 1}'::jsonb, ARRAY[5]))),
		   clock_timestamp();
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
	INSERT INTO client_errors VALUES (pg_backend_pid(), 'push', clock_timestamp(), st, msg);
END
$$;

-- pop and ack in one transaction (how = 'one'), or with a wait
CREATE FUNCTION pop_ack(how text, w interval) RETURNS void LANGUAGE plpgsql AS $$
DECLARE st text; msg text; ids bigint[]; atts integer[];
BEGIN
	SELECT array_agg(job_id), array_agg(attempt) INTO ids, atts
	  FROM pgqueue.queue_pop('up', 10, '1 minute', w);
	IF ids IS NOT NULL THEN
		PERFORM pgqueue.queue_ack('up', ids, atts);
		INSERT INTO acked SELECT i, a, how, clock_timestamp() FROM unnest(ids, atts) u(i, a);
	END IF;
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
	INSERT INTO client_errors VALUES (pg_backend_pid(), how, clock_timestamp(), st, msg);
END
$$;

-- a pop in one transaction, its ack in the next
CREATE TABLE held (pid integer, job_id bigint, attempt integer);
CREATE FUNCTION pop_only() RETURNS void LANGUAGE plpgsql AS $$
DECLARE st text; msg text;
BEGIN
	INSERT INTO held SELECT pg_backend_pid(), job_id, attempt FROM pgqueue.queue_pop('up', 10, '1 minute');
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
	INSERT INTO client_errors VALUES (pg_backend_pid(), 'pop', clock_timestamp(), st, msg);
END
$$;
CREATE FUNCTION ack_held() RETURNS void LANGUAGE plpgsql AS $$
DECLARE st text; msg text; ids bigint[]; atts integer[];
BEGIN
	SELECT array_agg(job_id), array_agg(attempt) INTO ids, atts FROM held WHERE pid = pg_backend_pid();
	IF ids IS NOT NULL THEN
		PERFORM pgqueue.queue_ack('up', ids, atts);
		INSERT INTO acked SELECT i, a, 'two', clock_timestamp() FROM unnest(ids, atts) u(i, a);
		DELETE FROM held WHERE pid = pg_backend_pid();
	END IF;
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
	INSERT INTO client_errors VALUES (pg_backend_pid(), 'ack', clock_timestamp(), st, msg);
END
$$;
EOS

my $dir = $node->basedir;
my %scripts = (
	producer => "SELECT producer();\nSELECT pg_sleep(0.01);\n",
	two => "SELECT pop_only();\nSELECT ack_held();\nSELECT pg_sleep(0.01);\n",
	one => "SELECT pop_ack('one', '0');\nSELECT pg_sleep(0.01);\n",
	wait => "SELECT pop_ack('wait', '200 ms');\n");
my %clients = (producer => 2, two => 2, one => 2, wait => 1);
my @runs;
for my $s (sort keys %scripts)
{
	open(my $fh, '>', "$dir/$s.sql") or die $!;
	print $fh $scripts{$s};
	close($fh);
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[
			'pgbench', '-n', '-c', $clients{$s}, '-j', $clients{$s}, '-T', '8',
			'-f', "$dir/$s.sql", '-h', $node->host, '-p', $node->port, 'postgres'
		],
		'>', \$out, '2>', \$err);
	push @runs, [ $s, $h, \$out, \$err ];
}

ok(poll(q{SELECT count(DISTINCT op) FROM client_errors}, '4', 10),
	'the clients run, and are refused, before the update');
usleep(1_000_000);
my ($ret, $out, $err) = ('', '', '');
my $update_start = sql('SELECT clock_timestamp()');
$ret = $node->psql('postgres', 'ALTER EXTENSION pgqueue UPDATE', stdout => \$out, stderr => \$err);
my $update_end = sql('SELECT clock_timestamp()');
my $log_after_update = -s $node->logfile;
is($ret, 0, 'ALTER EXTENSION pgqueue UPDATE succeeds while they run') or diag($err);
is(sql(q{SELECT extversion FROM pg_extension WHERE extname = 'pgqueue'}), '0.2.0', 'to 0.2.0');
note('the update took ' . sql(qq{SELECT '$update_end'::timestamptz - '$update_start'}));

for my $r (@runs)
{
	my $ok = $r->[1]->finish;
	my ($failed) = ${ $r->[2] } =~ /number of failed transactions: (\d+)/;
	ok($ok && defined($failed) && $failed == 0, "pgbench ($r->[0]) ends with no failed transaction")
	  or diag("${ $r->[2] }\n${ $r->[3] }");
}

is( sql(
		qq{SELECT count(*) FROM client_errors WHERE sqlstate = '40P01'}),
	'0', 'no client got a deadlock');
is( sql(
		qq{SELECT coalesce(string_agg(DISTINCT op || ' ' || sqlstate || ': ' || message, E'\n'), '')
			 FROM client_errors
			WHERE sqlstate <> '55000' OR at > '$update_end'::timestamptz + interval '200 ms'}),
	'', 'every client error was 55000 (the 0.1.0 SQL), and none came after the update');
my ($pushes, $one, $two, $wait) = split /\|/, sql(
	qq{SELECT (SELECT count(*) FROM pushed),
			  count(*) FILTER (WHERE how = 'one'), count(*) FILTER (WHERE how = 'two'),
			  count(*) FILTER (WHERE how = 'wait')
		 FROM acked});
ok($pushes >= 50 && $one >= 20 && $two >= 20 && $wait >= 5,
	"after the update the clients worked: $pushes jobs pushed; acked $one (pop and ack in one transaction), $two (in two), $wait (after a wait)"
);
is(sql(qq{SELECT count(*) FROM pushed WHERE at < '$update_start'}), '0',
	'no push succeeded before the update');

# drain what is left (and what an ack did not reach: none should be)
for (1 .. 50)
{
	last if sql(q{SELECT count(*) FROM pgqueue.jobs WHERE queue = 'up' AND state <> 'succeeded'}) == 0;
	sql(q{SELECT pop_ack('drain', '0')});
}
is(sql(q{SELECT count(*) FROM client_errors WHERE op = 'drain'}), '0', 'the final drain has no error');

# every job: the 300 of 0.1.0 and the logged pushes
sql(q{CREATE TABLE expected AS SELECT generate_series(1, 300)::bigint AS job_id
	  UNION ALL SELECT job_id FROM pushed});
is( sql(
		q{SELECT count(*) FROM expected e
		   WHERE (SELECT count(*) FROM acked a WHERE a.job_id = e.job_id) <> 1}),
	'0', 'every job, of 0.1.0 and pushed since, was acked exactly once');
is(sql(q{SELECT count(*) FROM acked a WHERE NOT EXISTS (SELECT 1 FROM expected e WHERE e.job_id = a.job_id)}),
	'0', 'no job was acked that nobody pushed');
is( sql(
		q{SELECT count(*) FROM expected e
		   WHERE NOT EXISTS (SELECT 1 FROM pgqueue.job_history h
							  WHERE h.queue = 'up' AND h.job_id = e.job_id AND h.state = 'succeeded')}),
	'0', 'every job succeeded (live or archived)');
is( sql(
		q{SELECT count(*) FROM (SELECT job_id, attempt FROM pgqueue.job_history
								 WHERE queue = 'up' AND state = 'succeeded'
								 GROUP BY 1, 2 HAVING count(*) > 1) d}),
	'0', 'no attempt succeeded twice');
is( sql(
		q{SELECT count(*) FROM (SELECT job_id FROM pgqueue.jobs WHERE queue = 'up'
								UNION SELECT job_id FROM pgqueue.job_history WHERE queue = 'up') j
		   WHERE NOT EXISTS (SELECT 1 FROM expected e WHERE e.job_id = j.job_id)}),
	'0', 'no job exists that nobody pushed');

ok( poll(
		q{SELECT count(*) FROM pgqueue.block b JOIN pgqueue.queue q USING (queue_id)
		   WHERE q.name = 'up' AND b.first_id <= 300},
		'0', 30),
	'maintenance after the update compacts the blocks of 0.1.0');
is(sql(q{SELECT count(*) FROM pgqueue.maintenance}), '0', 'no queue\'s maintenance is failing');
my $log = slurp_file($node->logfile);
unlike($log, qr/deadlock detected|PANIC|TRAP:/, 'the server log has no deadlock, PANIC or TRAP');
# Before the update the worker fails too (the 0.2.0 library finds no
# pgqueue_internal schema: it exits and is started again after its
# backoff); after it, nothing may fail.
my @after = slurp_file($node->logfile, $log_after_update) =~ /^.*(?:ERROR|FATAL|failed).*$/mg;
is(join("\n", @after), '', 'no error in the server log after the update');

$node->stop;
done_testing();
