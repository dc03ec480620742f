# 106_shmem_bounds.pl: pgqueue's shared memory is bounded (issue 11,
# finding 2).
#
# pgqueue reserves its shared tables at server start in fixed sizes
# (pgqueue.max_queues, max_lanes, max_tenants, max_keys); when one is full
# it evicts or refuses the caller, and never takes the server's spare shared
# memory, which PostgreSQL needs for its lock table and other databases
# need for theirs.  One cluster with small tables (32 queues, 256 lanes,
# 256 tenants, 256 keys), the worker off and the default
# max_locks_per_transaction.  Checks, in order:
#   - the spare shared memory (pg_shmem_allocations: the anonymous
#     allocations, among them the entries of pgqueue's tables made at
#     start, and the free row) is read first;
#   - database "a", queues "d" and "d2" (tenant_max_depth => 1000, blocks
#     of 1000):
#       a push naming 33 tenants (max_tenants / 8 + 1) fails with 54000 and
#       leaves no job;
#       100,000 jobs with 100,000 distinct tenants and 100,000 distinct
#       keys are pushed by two sessions at once (half into each queue), 32
#       tenants a push, each its own transaction; of each 800, 80 are
#       popped and acked in one transaction and 80 popped in one and acked
#       in the next, the rest purged (so that each new tenant's depth, read
#       from the tables, stays cheap to count): 20,000 claims of keyed jobs
#       of distinct tenants; every push and pop succeeds, though each new
#       tenant and key must evict an idle one;
#   - queue "f" (tenant_max_in_flight => 1, keys), 500 tenants of 4 jobs:
#     pops of 25 until none is left claim exactly one job of each tenant,
#     then after the acks one more of each: the in-flight cap holds while
#     the table of 256 evicts tenants and reads their counts again;
#   - 200 queues with tenant limits are made, used and dropped one after
#     the other: with room for 32 queues, every one gets its entry (the
#     entries of dropped queues are freed);
#   - a full table of queues: of 40 more queues with tenant limits, those
#     beyond the table are refused (53400 "too many queues in shared memory
#     for the limits of queue ..."), while a queue without limits pushes
#     and pops; once they are dropped, a new queue with limits works again;
#   - the spare shared memory is unchanged, byte for byte (the anonymous
#     allocations and the free row);
#   - database "b" (a queue with tenant limits, one without) still pushes
#     with a new tenant, with its old tenant, and without limits;
#   - a session whose transaction holds reservations for all 256 tenant
#     entries makes new tenants fail with 53200 ("too many tenants with
#     limits") in both databases, while pushes without a tenant, to queues
#     without tenant limits and with tenants the table holds still work;
#     once it ends, new tenants work again; the spare memory is still the
#     same;
#   - database "b" takes 10,000 advisory locks in one transaction, which
#     needs most of the spare shared memory (the lock table grows into it).
#     20,000, the figure of the issue, do not fit the spare memory of a
#     fresh PostgreSQL 15 cluster with the default max_locks_per_transaction
#     and max_connections, with or without pgqueue (about 1.8 MB spare;
#     12,500 locks fit, 15,000 fail "out of shared memory").
#
# Against pgqueue 0.1.0 this fails: its tenant, lane and key tables grew
# into the spare shared memory (six batches of 10,000 tenants took it from
# 3,434,368 bytes to 1,920), so the spare rows change, a new tenant in
# another database failed with 53200 and the lock table could not grow
# ("out of shared memory"); it had no per-push cap on tenants either.  A
# build whose tables may grow (HASH_FIXED_SIZE left out) fails the spare
# memory checks (1,795,712 free bytes down to 1,664), the 53200 checks
# (the table grows instead) and the advisory locks.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time);

my $node = PostgreSQL::Test::Cluster->new('shmem_bounds');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'pgqueue'
pgqueue.worker = off
pgqueue.max_queues = 32
pgqueue.max_lanes = 256
pgqueue.max_tenants = 256
pgqueue.max_keys = 256
});
$node->start;

# Run SQL; the output, or "error: ERROR:  <SQLSTATE>".
sub try_sql
{
	my ($db, $sql) = @_;
	my ($out, $err) = ('', '');
	my $ret = $node->psql(
		$db, "\\set VERBOSITY sqlstate\n\\set ON_ERROR_STOP 1\n$sql",
		stdout => \$out,
		stderr => \$err);
	return $out if $ret == 0;
	$err =~ s/^psql:\S+ //mg;
	$err =~ s/\s+$//;
	return "error: $err";
}

my $spare_sql = q{
	SELECT string_agg(coalesce(name, '(free)') || ' ' || allocated_size, ', '
					  ORDER BY name NULLS LAST)
	  FROM pg_shmem_allocations WHERE name IS NULL OR name = '<anonymous>'};
my $own_sql = q{
	SELECT string_agg(name || ' ' || allocated_size, ', ' ORDER BY name)
	  FROM pg_shmem_allocations WHERE name LIKE 'pgqueue%'};

# SQLSTATE and message of a statement, caught in PL/pgSQL
my $catch_fn = q{
CREATE FUNCTION catch(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE sql;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;
};

for my $db (qw(a b))
{
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, "CREATE EXTENSION pgqueue; $catch_fn");
}
$node->safe_psql(
	'b', q{
	SELECT pgqueue.queue_create('tb', tenant_max_depth => 10);
	SELECT pgqueue.queue_create('plain');
	SELECT pgqueue.queue_push('tb', '{}', tenant => 'old');
});

my $spare = $node->safe_psql('postgres', $spare_sql);
my $own = $node->safe_psql('postgres', $own_sql);
like($spare, qr/^<anonymous> \d+, \(free\) \d+$/,
	"the spare shared memory before: $spare");
like($own, qr/pgqueue keys \d+.*pgqueue lanes \d+.*pgqueue queues \d+.*pgqueue tenants \d+/,
	"pgqueue's tables are reserved at start: $own");

# --- database a: 100,000 tenants and keys -------------------------------------

$node->safe_psql(
	'a', q{
SELECT pgqueue.queue_create(q, block_size => 1000, tenant_max_depth => 1000,
							retention => '0')
  FROM unnest(ARRAY['d', 'd2']) q;
CREATE TABLE tally (pushed bigint, acked bigint);
});

is( $node->safe_psql(
		'a', q{
	SELECT catch($$SELECT pgqueue.queue_push_batch('d', array_agg('{}'::jsonb),
													  tenants => array_agg('c' || i))
					 FROM generate_series(1, 33) i$$)}),
	'54000 a push to queue "d" may name at most 32 tenants',
	'a push naming 33 tenants (max_tenants / 8 + 1) fails with 54000');
is($node->safe_psql('a', q{SELECT count(*) FROM pgqueue.jobs WHERE queue = 'd'}),
	'0', 'and leaves no job');
is( $node->safe_psql(
		'a', q{
	SELECT catch($$SELECT pgqueue.queue_push_batch('d', array_agg('{}'::jsonb),
													  tenants => array_agg('c' || (i % 32)))
					 FROM generate_series(1, 1000) i$$)}),
	'ok', 'a push of 1000 jobs of 32 tenants is fine');
$node->safe_psql('a', q{SELECT pgqueue.queue_purge('d')});

# Round r of queue q: 25 pushes of 32 jobs with new tenants and keys
# (r * 800 + 1 on), each its own transaction; 80 jobs popped and acked in
# one transaction, 80 popped in one and acked in the next; the rest purged.
$node->safe_psql(
	'a', q{
CREATE PROCEDURE load(q text, first integer, last integer) LANGUAGE plpgsql AS $$
DECLARE
	ids bigint[];
	atts integer[];
BEGIN
	FOR r IN first..last LOOP
		FOR p IN 0..24 LOOP
			INSERT INTO tally
			SELECT cardinality(pgqueue.queue_push_batch(q,
						array_agg(jsonb_build_object('n', i) ORDER BY i),
						keys => array_agg('k' || i ORDER BY i),
						tenants => array_agg('t' || i ORDER BY i))), 0
			  FROM generate_series(r * 800 + p * 32 + 1, r * 800 + p * 32 + 32) i;
			COMMIT;
		END LOOP;
		INSERT INTO tally
		SELECT 0, pgqueue.queue_ack(q, array_agg(job_id), array_agg(attempt))
		  FROM pgqueue.queue_pop(q, 80);
		COMMIT;
		SELECT array_agg(job_id), array_agg(attempt) INTO ids, atts
		  FROM pgqueue.queue_pop(q, 80);
		COMMIT;
		INSERT INTO tally SELECT 0, pgqueue.queue_ack(q, ids, atts);
		COMMIT;
		PERFORM pgqueue.queue_purge(q);
		COMMIT;
	END LOOP;
END
$$;
});
# two sessions at once, on queues d and d2: rounds 0..62 and 63..124
my $t0 = time();
my @loads;
for my $part (['d', 0, 62], ['d2', 63, 124])
{
	my %l = (out => '', err => '', what => "$part->[0]: rounds $part->[1]..$part->[2]");
	$l{h} = IPC::Run::start(
		[
			$node->installed_command('psql'), '-XAtq', '-v', 'ON_ERROR_STOP=1',
			'-d', $node->connstr('a'), '-c',
			"CALL load('$part->[0]', $part->[1], $part->[2])"
		],
		'>', \$l{out}, '2>', \$l{err});
	push @loads, \%l;
}
for my $l (@loads)
{
	$l->{h}->finish;
	is($l->{err}, '', "database a, queue $l->{what}: every push and pop succeeds");
}
is( $node->safe_psql('a', q{SELECT sum(pushed) || ' ' || sum(acked) FROM tally}),
	'100000 20000',
	sprintf('100,000 jobs of 100,000 distinct tenants and keys pushed, 20,000 claimed and acked (%.1f s)',
		time() - $t0));

# queue f: the in-flight cap of 1 per tenant holds while 500 tenants go
# through a table of 256
$node->safe_psql(
	'a', q{
SELECT pgqueue.queue_create('f', block_size => 1000, tenant_max_in_flight => 1,
							retention => '0');
CREATE PROCEDURE fill_f() LANGUAGE plpgsql AS $$
BEGIN
	FOR p IN 0..15 LOOP
		PERFORM pgqueue.queue_push_batch('f', array_agg(jsonb_build_object('n', i) ORDER BY i),
										 keys => array_agg('fk' || i ORDER BY i),
										 tenants => array_agg('ft' || (i / 4) ORDER BY i))
		  FROM generate_series(p * 128, least(p * 128 + 127, 1999)) i;
		COMMIT;
	END LOOP;
END
$$;
});
is(try_sql('a', 'CALL fill_f()'), '', 'queue f: 2000 jobs of 500 tenants (4 each), 2000 keys');
# pops of 25 (each within the table) until one finds nothing, into table
# "claimed", round n
$node->safe_psql(
	'a', q{
CREATE TABLE claimed (round integer, job_id bigint, attempt integer, tenant text);
CREATE PROCEDURE drain_f(n integer) LANGUAGE plpgsql AS $$
DECLARE
	got bigint;
BEGIN
	LOOP
		INSERT INTO claimed SELECT n, job_id, attempt, tenant
		  FROM pgqueue.queue_pop('f', 25, lease => '1 hour');
		GET DIAGNOSTICS got = ROW_COUNT;
		COMMIT;
		EXIT WHEN got = 0;
	END LOOP;
END
$$;
});
is(try_sql('a', 'CALL drain_f(1)'), '', 'queue f: pops of 25 until none is left');
is( $node->safe_psql(
		'a', q{SELECT count(*) || ' ' || count(DISTINCT tenant) FROM claimed WHERE round = 1}),
	'500 500',
	'queue f: one job of each of the 500 tenants claimed, never two: the cap holds while entries are evicted and counted again'
);
is( try_sql(
		'a', q{SELECT pgqueue.queue_ack('f', array_agg(job_id), array_agg(attempt))
				 FROM claimed WHERE round = 1}),
	'500', 'queue f: the 500 acked');
is(try_sql('a', 'CALL drain_f(2)'), '', 'queue f: pops of 25 again');
is( $node->safe_psql(
		'a', q{SELECT count(*) || ' ' || count(DISTINCT tenant) || ' '
					  || count(*) FILTER (WHERE job_id IN (SELECT job_id FROM claimed WHERE round = 1))
				 FROM claimed WHERE round = 2}),
	'500 500 0', 'queue f: then the next job of each of the 500 tenants');

# 200 queues with tenant limits made, used and dropped, with room for 32
$node->safe_psql(
	'a', q{
CREATE PROCEDURE churn(n integer) LANGUAGE plpgsql AS $$
BEGIN
	FOR i IN 1..n LOOP
		PERFORM pgqueue.queue_create('c' || i, tenant_max_depth => 10);
		PERFORM pgqueue.queue_push_batch('c' || i, ARRAY['{}', '{}']::jsonb[],
										 tenants => ARRAY['x', 'y']);
		PERFORM pgqueue.queue_ack('c' || i, array_agg(job_id), array_agg(attempt))
		   FROM pgqueue.queue_pop('c' || i, 2);
		COMMIT;
		PERFORM pgqueue.queue_drop('c' || i);
		COMMIT;
	END LOOP;
END
$$;
});
$t0 = time();
is(try_sql('a', 'CALL churn(200)'), '',
	'200 queues with tenant limits made, used and dropped one after the other, with pgqueue.max_queues = 32'
);
note(sprintf('queue churn: %.1f s', time() - $t0));

# a full table of queues: queues with limits beyond it are refused, the
# others work; dropping queues makes room again
$node->safe_psql(
	'b', q{
	SELECT pgqueue.queue_create('full' || i, tenant_max_depth => 10) FROM generate_series(1, 40) i;
	CREATE TABLE fullq AS
	SELECT i, catch(format($$SELECT pgqueue.queue_push('full%s', '{}', tenant => 'x')$$, i)) AS r
	  FROM generate_series(1, 40) i;
});
my ($full_ok, $full_first_refused, $full_last_ok, $full_errors) = split /\|/,
  $node->safe_psql(
	'b', q{
	SELECT count(*) FILTER (WHERE r = 'ok'), min(i) FILTER (WHERE r <> 'ok'),
		   max(i) FILTER (WHERE r = 'ok'),
		   string_agg(DISTINCT regexp_replace(r, 'full\d+', 'fullN'), ' / ') FILTER (WHERE r <> 'ok')
	  FROM fullq});
ok( $full_ok >= 20 && $full_ok < 32 && $full_first_refused == $full_last_ok + 1,
	"full table of queues: the first $full_ok queues with limits get an entry, the others are refused");
is($full_errors, '53400 too many queues in shared memory for the limits of queue "fullN"',
	"full table of queues: the refusal ($full_errors)");
$node->safe_psql('b', q{SELECT pgqueue.queue_create('plain2')});
is( $node->safe_psql(
		'b', q{
	SELECT catch($$SELECT pgqueue.queue_push('plain2', '{}', tenant => 'x')$$) || ', '
		   || catch($$SELECT count(*) FROM pgqueue.queue_pop('plain2')$$) || ', '
		   || catch($$SELECT pgqueue.queue_push('full1', '{}', tenant => 'y')$$)}),
	'ok, ok, ok',
	'full table of queues: a queue without limits pushes and pops, one with an entry pushes');
$node->safe_psql('b',
	q{SELECT pgqueue.queue_drop('full' || i, force => true) FROM generate_series(1, 40) i});
$node->safe_psql('b', q{SELECT pgqueue.queue_create('after', tenant_max_depth => 10)});
is( $node->safe_psql(
		'b', q{
	SELECT catch($$SELECT pgqueue.queue_push('after', '{}', tenant => 'x')$$)}),
	'ok', 'once queues are dropped, a new queue with limits gets an entry again');

# --- the spare shared memory ---------------------------------------------------

is($node->safe_psql('postgres', $spare_sql),
	$spare, 'the spare shared memory is unchanged, byte for byte');
is($node->safe_psql('postgres', $own_sql),
	$own, 'pgqueue\'s named allocations (the tables\' headers) kept their sizes');

# --- another database ------------------------------------------------------------

is( $node->safe_psql(
		'b', q{
	SELECT catch($$SELECT pgqueue.queue_push('tb', '{}', tenant => 'fresh')$$) || ', '
		   || catch($$SELECT pgqueue.queue_push('tb', '{}', tenant => 'old')$$) || ', '
		   || catch($$SELECT pgqueue.queue_push('plain', '{}', tenant => 'fresh')$$)}),
	'ok, ok, ok',
	'database b: pushes with a new tenant, with its old tenant and to a queue without limits');

# --- a full table of tenants ---------------------------------------------------------

# one transaction holds reservations for 256 new tenants of queue d
my $holder = $node->background_psql('a', on_error_stop => 0);
$holder->query_safe('BEGIN');
my $held = '';
for my $p (0 .. 7)
{
	$held .= $holder->query(
		sprintf(
			q{SELECT cardinality(pgqueue.queue_push_batch('d', array_agg('{}'::jsonb),
							   tenants => array_agg('h' || i)))
			    FROM generate_series(%d, %d) i},
			$p * 32 + 1,
			$p * 32 + 32)) . ' ';
}
is($held, '32 ' x 8, 'a transaction reserves 8 x 32 new tenants: the whole table');
like( $node->safe_psql(
		'b', q{SELECT catch($$SELECT pgqueue.queue_push('tb', '{}', tenant => 'new')$$)}),
	qr/^53200 too many tenants with limits$/,
	'full table: a new tenant in database b fails with 53200');
like( $node->safe_psql(
		'a', q{SELECT catch($$SELECT pgqueue.queue_push('f', '{}', tenant => 'new')$$)}),
	qr/^53200 too many tenants with limits$/,
	'full table: and a new tenant of another queue in database a');
is( $node->safe_psql(
		'b', q{
	SELECT catch($$SELECT pgqueue.queue_push('plain', '{}', tenant => 'new')$$) || ', '
		   || catch($$SELECT pgqueue.queue_push('tb', '{}')$$) || ', '
		   || catch($$SELECT count(*) FROM pgqueue.queue_pop('plain', 10)$$)}),
	'ok, ok, ok',
	'full table: database b pushes to a queue without tenant limits, without a tenant, and pops');
is( $node->safe_psql(
		'a', q{SELECT catch($$SELECT pgqueue.queue_push('d', '{}', tenant => 'h1')$$)}),
	'ok', 'full table: a push for a tenant the table holds works');
$holder->query('ROLLBACK');
$holder->quit;
is( $node->safe_psql(
		'b', q{SELECT catch($$SELECT pgqueue.queue_push('tb', '{}', tenant => 'new')$$)}),
	'ok', 'once the transaction ends, a new tenant in database b works again');
is($node->safe_psql('postgres', $spare_sql),
	$spare, 'the spare shared memory is still unchanged');

# --- the lock table can still grow --------------------------------------------------

is( try_sql(
		'b', q{SELECT count(pg_advisory_xact_lock(g)) FROM generate_series(1, 10000) g}),
	'10000', 'database b takes 10,000 advisory locks in one transaction');

$node->stop;
done_testing();
