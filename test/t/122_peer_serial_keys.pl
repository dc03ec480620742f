# 122_peer_serial_keys.pl: the serial guarantee of ordering keys holds under
# prefetch and lease expiry: never two executing jobs of one key.  From
# graphile-worker #621, where workers that fetched batches ran two jobs of
# one serial queue at once.
#
# One cluster with pgqueue preloaded and its maintenance worker on (a round
# every 100 ms).  Queue ser, blocks of 400, 1500 jobs over 40 keys (job i
# has key k<i*7 mod 40>, so each key's jobs are spread over every block),
# leases of 500 ms.  For 6 s, 8 consumers (pgbench) pop up to 100 jobs and
# note them in a ledger in the pop's transaction, wait 50 ms, then ack
# them in one call in a transaction of their own that notes the acks (one
# job at a time if a lease was lost meanwhile); they leave the first
# attempt of every tenth job to expire.  Meanwhile a sampler (another
# pgbench client) reads pgqueue.jobs every 20 ms and notes, per sample, how
# many jobs were executing and the keys with two or more of them.  Checks,
# and how each would fail:
#   - the consumers and the sampler end without error;
#   - it was exercised: more than 300 jobs acked, more than 10 leases
#     expired and claimed again, 3 samples or more with jobs executing (a
#     sample of pgqueue.jobs costs about 0.3 s on a loaded 2-core machine,
#     so there are 8 to 60 of them);
#   - no sample shows two executing jobs of one key (a pop that takes a
#     busy key's next job, within one pop or across pops, or after the
#     busy job's lease expired, shows one);
#   - the ledger, independent of the views: for every two jobs a < b of
#     one key, b was first popped only after a's last ack committed (the
#     same breakages, and any break of key order).
# Mutations of the product, each built into a private install, made the
# test fail as listed:
#   - pop.c: the range path without its key check: samples show every key
#     with two or more jobs executing; the ledger shows thousands of jobs
#     popped before an earlier job of their key was acked;
#   - flow.c key_probe counting only an executing job as a blocker (an
#     earlier job that is available, never claimed yet or back after its
#     lease expired, lets the next job of its key through): the same.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('serial');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'pgqueue'
pgqueue.naptime = 100ms
max_connections = 40
});
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{CREATE EXTENSION pgqueue});
sql(q{
	SELECT pgqueue.queue_create('ser', block_size => 400, default_lease => '500 ms',
								max_attempts => 1000);
	SELECT pgqueue.queue_push_batch('ser', array_agg(jsonb_build_object('i', i) ORDER BY i),
									keys => array_agg('k' || (i * 7) % 40 ORDER BY i))
	  FROM generate_series(1, 1500) i;

	CREATE TABLE got (job_id bigint, key text, attempt int, pid int, popped_at timestamptz,
					  acked_at timestamptz, settled boolean NOT NULL DEFAULT false);
	CREATE TABLE samples (at timestamptz, executing bigint, doubled text[]);

	-- pop up to 100 jobs and note them, in the pop's transaction
	CREATE FUNCTION ser_pop() RETURNS bigint LANGUAGE sql AS $$
		WITH p AS (SELECT job_id, key, attempt FROM pgqueue.queue_pop('ser', 100)),
			 i AS (INSERT INTO got SELECT job_id, key, attempt, pg_backend_pid(), clock_timestamp()
					 FROM p RETURNING 1)
		SELECT count(*) FROM i
	$$;

	-- ack what this backend popped, but the first attempt of every tenth
	-- job, in one call and noting each ack in its transaction; if a lease
	-- was lost meanwhile, one job at a time, letting the lost ones go
	CREATE FUNCTION ser_ack() RETURNS void LANGUAGE plpgsql AS $$
	DECLARE
		r record;
		ids bigint[];
		atts int[];
	BEGIN
		UPDATE got SET settled = true
		 WHERE pid = pg_backend_pid() AND NOT settled AND job_id % 10 = 0 AND attempt = 1;
		SELECT array_agg(job_id ORDER BY job_id), array_agg(attempt ORDER BY job_id)
		  INTO ids, atts FROM got WHERE pid = pg_backend_pid() AND NOT settled;
		IF ids IS NULL THEN
			RETURN;
		END IF;
		BEGIN
			PERFORM pgqueue.queue_ack('ser', ids, atts);
			UPDATE got SET settled = true, acked_at = clock_timestamp()
			 WHERE pid = pg_backend_pid() AND NOT settled;
			RETURN;
		EXCEPTION WHEN SQLSTATE 'PQ001' THEN
			NULL;
		END;
		FOR r IN SELECT job_id, attempt FROM got
				  WHERE pid = pg_backend_pid() AND NOT settled ORDER BY job_id LOOP
			BEGIN
				PERFORM pgqueue.queue_ack('ser', r.job_id, r.attempt);
				UPDATE got SET settled = true, acked_at = clock_timestamp()
				 WHERE job_id = r.job_id AND attempt = r.attempt;
			EXCEPTION WHEN SQLSTATE 'PQ001' THEN
				UPDATE got SET settled = true WHERE job_id = r.job_id AND attempt = r.attempt;
			END;
		END LOOP;
	END
	$$;

	CREATE FUNCTION ser_sample() RETURNS void LANGUAGE sql AS $$
		INSERT INTO samples
		SELECT clock_timestamp(), coalesce(sum(n), 0), array_agg(key) FILTER (WHERE n > 1)
		  FROM (SELECT key, count(*) AS n FROM pgqueue.jobs
				 WHERE queue = 'ser' AND state = 'executing' GROUP BY key) d
	$$;
});

my $dir = $node->basedir;
open(my $fh, '>', "$dir/consumer.sql") or die;
print $fh "SELECT ser_pop();\n\\sleep 50 ms\nSELECT ser_ack();\n";
close($fh);
open($fh, '>', "$dir/sampler.sql") or die;
print $fh "SELECT ser_sample();\n\\sleep 20 ms\n";
close($fh);

my @conn = ('-h', $node->host, '-p', $node->port, 'postgres');
my ($c_out, $c_err, $s_out, $s_err) = ('', '', '', '');
my $consumers = IPC::Run::start(
	[ 'pgbench', '-n', '-c', '8', '-j', '2', '-T', '6', '-f', "$dir/consumer.sql", @conn ],
	'>', \$c_out, '2>', \$c_err);
my $sampler = IPC::Run::start(
	[ 'pgbench', '-n', '-c', '1', '-j', '1', '-T', '6', '-f', "$dir/sampler.sql", @conn ],
	'>', \$s_out, '2>', \$s_err);
my $c_ok = $consumers->finish;
my $s_ok = $sampler->finish;
ok($c_ok, 'the 8 consumers (pgbench) end without error') or diag("$c_out\n$c_err");
ok($s_ok, 'the sampler (pgbench) ends without error') or diag("$s_out\n$s_err");

my ($acked, $again, $busy, $nsamples) = split /\|/, sql(q{
	SELECT (SELECT count(*) FROM got WHERE acked_at IS NOT NULL),
		   (SELECT count(*) FROM got WHERE attempt > 1),
		   (SELECT count(*) FROM samples WHERE executing > 0),
		   (SELECT count(*) FROM samples)});
note("acked $acked, claimed again after expiry $again, samples $nsamples ($busy with jobs executing)");
ok($acked > 300, "more than 300 jobs acked ($acked)");
ok($again > 10, "more than 10 jobs claimed again after their leases expired ($again)");
ok($busy >= 3, "3 samples or more saw jobs executing ($busy of $nsamples)");

is( sql(q{
		SELECT count(*) || ' ' || coalesce(string_agg(DISTINCT d, ','), '')
		  FROM samples CROSS JOIN unnest(doubled) d}),
	'0 ', 'no sample of pgqueue.jobs shows two executing jobs of one key');
is( sql(q{
		WITH first_pop AS (SELECT job_id, key, min(popped_at) AS at FROM got GROUP BY 1, 2),
			 last_ack AS (SELECT job_id, max(acked_at) AS at FROM got GROUP BY 1),
			 j AS (SELECT j.job_id, j.key FROM pgqueue.jobs j WHERE j.queue = 'ser')
		SELECT count(*)
		  FROM first_pop b
		  JOIN j a ON a.key = b.key AND a.job_id < b.job_id
		  LEFT JOIN last_ack l ON l.job_id = a.job_id
		 WHERE l.at IS NULL OR l.at >= b.at}),
	'0', 'the ledger: every job was first popped after the last ack of every earlier job of its key');

$node->stop;
done_testing();
