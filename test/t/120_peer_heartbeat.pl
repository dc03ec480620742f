# 120_peer_heartbeat.pl: heartbeats keep a lease; a worker that stops
# sending them loses its job, which is claimed again exactly once.  From
# hexpm #1825 and pg-boss #555, where jobs whose workers were alive and
# reporting progress were handed out again (or never again) because the
# heartbeat did not keep, or the expiry did not honour, the lease.
#
# One cluster with pgqueue preloaded and its maintenance worker on, a round
# every 100 ms.  Queue hb, leases of 1 s.  Job 1 is popped by worker A,
# job 2 by worker B.  A extends its lease every 1/3 s (queue_extend with its
# attempt, each in a transaction of its own) for 10 s, ten leases, then acks.
# B does nothing.  Meanwhile a poller pops up to 10 jobs every 100 ms (with
# a lease of 60 s, so that what it takes stays with it) until A is done, and
# notes what it got.  Checks, and how each would fail:
#   - all 30 of A's extends succeed, each giving a lease that ends 1 s on,
#     and A's ack succeeds (an extend that does not extend, or an expiry
#     that ignores it, makes an extend or the ack fail with PQ001);
#   - the poller never gets job 1, and job 1's history holds no expiry:
#     every row is attempt 1, without failure, ending in "succeeded";
#   - the poller gets job 2 exactly once, as attempt 2 with one failure
#     (an expiry that does not happen leaves it with B; one that hands it
#     out twice shows it twice);
#   - B's late ack and extend of attempt 1 fail with PQ001 and change
#     nothing: job 2 stays executing under the poller's attempt 2.
# Mutations of the product, each built into a private install, made the
# test fail as listed:
#   - finish.c: queue_extend setting the lease to end now ("$4" instead of
#     "$4 + $11"): A's second extend fails with PQ001 (the worker expired
#     the lease), the poller gets job 1 as attempt 2, and job 1's history
#     shows the expiry;
#   - expire.c: pgq_expire_leases ending no lease (returns at once): the
#     poller never gets job 2, which stays executing under B's attempt 1
#     (B's late ack is still refused: its lease ended);
#   - finish.c: finish_sql without the attempt check: B's late ack of
#     attempt 1 succeeds over the poller's attempt 2, and job 2 is
#     succeeded.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('heartbeat');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'pgqueue'
pgqueue.naptime = 100ms
});
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{CREATE EXTENSION pgqueue});
sql(q{
	SELECT pgqueue.queue_create('hb', default_lease => '1 s', max_attempts => 5);
	SELECT pgqueue.queue_push_batch('hb', ARRAY['{"w": "A"}', '{"w": "B"}']::jsonb[]);
	CREATE TABLE beats (n int, lease_until timestamptz, at timestamptz);
	CREATE TABLE polled (job_id bigint, attempt int, at timestamptz);
	CREATE TABLE a_done (done boolean);
});
is(sql(q{SELECT job_id || ' ' || attempt FROM pgqueue.queue_pop('hb', 1)}), '1 1',
	'worker A pops job 1');
is(sql(q{SELECT job_id || ' ' || attempt FROM pgqueue.queue_pop('hb', 1)}), '2 1',
	'worker B pops job 2');

# background psql sessions, each running one DO block
sub start_do
{
	my ($code) = @_;
	my %h = (out => '', err => '');
	$h{run} = IPC::Run::start(
		[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), '-c', $code ],
		'>', \$h{out}, '2>', \$h{err});
	return \%h;
}

# A: an extend every 1/3 s for 10 s (10 leases), each committed, then the ack
my $a = start_do(q{
DO $$
DECLARE
	l timestamptz;
BEGIN
	FOR i IN 1..30 LOOP
		PERFORM pg_sleep(1.0 / 3);
		l := pgqueue.queue_extend('hb', 1, '1 s', 1);
		INSERT INTO beats VALUES (i, l, clock_timestamp());
		COMMIT;
	END LOOP;
	PERFORM pgqueue.queue_ack('hb', 1, 1);
END
$$;
});

# the poller, until A is done, at most 20 s
my $poller = start_do(q{
DO $$
BEGIN
	FOR i IN 1..200 LOOP
		INSERT INTO polled SELECT job_id, attempt, clock_timestamp()
		  FROM pgqueue.queue_pop('hb', 10, lease => '60 s');
		COMMIT;
		EXIT WHEN EXISTS (SELECT 1 FROM a_done);
		PERFORM pg_sleep(0.1);
	END LOOP;
END
$$;
});

$a->{run}->finish;
is($a->{err}, '', 'worker A ran its heartbeats and ack without error');
sql(q{INSERT INTO a_done VALUES (true)});
$poller->{run}->finish;
is($poller->{err}, '', 'the poller ran without error');

is( sql(q{
		SELECT count(*) || ' ' || count(*) FILTER (WHERE lease_until > at + interval '0.9 s'
												  AND lease_until <= at + interval '1 s')
		  FROM beats}),
	'30 30', 'A extended 30 times, each extend gave a lease of 1 s from then');
is(sql(q{SELECT state || ' ' || attempt || ' ' || failures FROM pgqueue.jobs
		  WHERE queue = 'hb' AND job_id = 1}),
	'succeeded 1 0', "A's job succeeded at attempt 1, without failure");
is( sql(q{
		SELECT count(*) FILTER (WHERE attempt <> 1 OR failures <> 0 OR state = 'available')
		  FROM pgqueue.job_history WHERE queue = 'hb' AND job_id = 1}),
	'0', "job 1's history holds no expiry");
is(sql(q{SELECT count(*) FROM polled WHERE job_id = 1}),
	'0', 'the poller never got job 1');
is(sql(q{SELECT string_agg(job_id || ' ' || attempt, ', ') FROM polled}),
	'2 2', 'the poller got job 2 exactly once, as attempt 2, and nothing else');
is(sql(q{SELECT state || ' ' || attempt || ' ' || failures FROM pgqueue.jobs
		  WHERE queue = 'hb' AND job_id = 2}),
	'executing 2 1', 'job 2 is executing under attempt 2 after one failure (the expiry)');

my ($ret, $out, $err) = $node->psql('postgres', q{SELECT pgqueue.queue_ack('hb', 2, 1)},
	extra_params => [ '-v', 'VERBOSITY=sqlstate' ]);
like($err, qr/PQ001/, "B's late ack of attempt 1 fails with PQ001");
($ret, $out, $err) = $node->psql('postgres', q{SELECT pgqueue.queue_extend('hb', 2, '1 s', 1)},
	extra_params => [ '-v', 'VERBOSITY=sqlstate' ]);
like($err, qr/PQ001/, "and so does its late extend");
is(sql(q{SELECT state || ' ' || attempt FROM pgqueue.jobs WHERE queue = 'hb' AND job_id = 2}),
	'executing 2', 'job 2 stays with the poller');

$node->stop;
done_testing();
