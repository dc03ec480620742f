# 112_memory.pl: the memory of a consumer and of the maintenance worker
# stays flat.
#
# Issue 14, "memory stays flat".  One cluster with pgqueue preloaded.
#
# 1. A consumer (one connection, hence one backend, through DBD::Pg) pops
#    100 jobs and acks them, each call its own transaction, 1,000,000 jobs
#    in all: 100 rounds in which a producer pushes 10,000 jobs (blocks of
#    10,000, so each round fills one block) and the consumer drains them;
#    the producer's maintain() closes and compacts the drained blocks
#    after round 1 and every tenth round (the worker is off for this part,
#    so the queue has the same shape at both measures).  The sum of
#    used_bytes of pg_backend_memory_contexts of the consumer after round
#    100 must be within TOLERANCE of the sum after round 1 (10,000 jobs);
#    on failure the contexts whose size changed are listed.
# 2. The maintenance worker: pgqueue.worker on, blocks of 100, retention 0,
#    archive on.  Rounds of 200 pushed and drained jobs until the worker's
#    log has noted 110 compaction steps ("_compact_step: ...", each one
#    transaction).  Its memory (pg_log_backend_memory_contexts: the bytes
#    used of its "Grand total" line in the server log, taken while the
#    worker sleeps between rounds: pgqueue.naptime is made an hour by
#    reload before each sample) after the 100 steps that follow the first
#    10 must be within WORKER_TOLERANCE of what it was after those first
#    10; the
#    same process all along; on failure its contexts are listed.
#
# Bytes used, not total_bytes: a context's blocks double up to 8 MB, so
# total_bytes moves in steps of a block (CacheMemoryContext by 2 and 4 MB
# at once) whatever little more it holds.  TOLERANCE is 512 kB.  Runs of a
# build without leaks moved the consumer by +111 kB and +311 kB (the
# cached plans and relcache entries of the blocks present at each
# measure; PostgreSQL's catalog caches keep about 1 kB of every table
# created and dropped while the backend lives, here 100 blocks); a leak
# that grows with the work exceeds it: 990,000 jobs and 9,900 pops after
# the first measure, so 52 bytes leaked a pop (80 with the chunk header
# of a 64-byte palloc: 792 kB) or a byte a job would show.  The worker
# still grows by about 4 to 5 kB a compaction step in TopMemoryContext
# (+404 and +485 kB over 100 steps in two runs; not explained yet), too
# close to 512 kB for a test that must not fail by chance: WORKER_TOLERANCE
# is 1 MB, which the leaks before the fix (+7.3 MB) exceed many times.
#
# Mutations of the product, each built into a private install, made the
# test fail as listed:
#   - pgq_pop pallocs 64 bytes in TopMemoryContext per call (src/pop.c):
#     1 fails, the consumer grew by 1,103 kB, 792 kB of it in
#     TopMemoryContext;
#   - the worker as it was before the fix (no reset after a round that
#     compacted): 2 fails: +7.3 MB over 100 steps (23 MB after 310 steps,
#     growing linearly): CacheMemoryContext (catalog cache entries left by
#     the tables each step creates and drops), the hash "pgqueue expiry"
#     (src/expire.c kept the place of every block it ever saw, up to
#     4096, about 3.6 kB a step) and TopMemoryContext.  With the fix (the
#     worker resets the catalog caches and prunes the expiry places of
#     dropped blocks after a round that compacted) it grew by 404 kB, all
#     in TopMemoryContext, and passes.
use strict;
use warnings;

use DBI;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $TOLERANCE = 512 * 1024;
my $WORKER_TOLERANCE = 1024 * 1024;

my $node = PostgreSQL::Test::Cluster->new('memory');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'pgqueue'
pgqueue.worker = off
pgqueue.naptime = 100
});
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub connect_db
{
	my $dbh = DBI->connect(
		'dbi:Pg:host=' . $node->host . ';port=' . $node->port . ';dbname=postgres',
		'', '', { AutoCommit => 1, RaiseError => 1, PrintError => 0 });
	return $dbh;
}

# the contexts of a breakdown, name and level => bytes, that differ
sub changed
{
	my ($before, $after) = @_;
	my %keys = map { $_ => 1 } (keys %$before, keys %$after);
	my @lines;
	for my $k (sort keys %keys)
	{
		my ($b, $a) = ($before->{$k} // 0, $after->{$k} // 0);
		push @lines, sprintf('%-60s %10d -> %10d (%+d)', $k, $b, $a, $a - $b) if $a != $b;
	}
	return join("\n", @lines);
}

sql(q{CREATE EXTENSION pgqueue});

# --- 1. a consumer ---------------------------------------------------------------
sql(q{SELECT pgqueue.queue_create('mem', block_size => 10000, retention => '0',
								  archive => false)});
my $producer = connect_db();
my $consumer = connect_db();
my $push = $producer->prepare(
	q{SELECT sum(cardinality(pgqueue.queue_push_batch('mem', array_fill('{"x": 1}'::jsonb, ARRAY[1000]))))
		FROM generate_series(1, 10)});
my $maintain = $producer->prepare(q{SELECT pgqueue.maintain('mem')});
my $pop = $consumer->prepare(
	q{SELECT array_agg(job_id)::text FROM pgqueue.queue_pop('mem', 100, lease => '5 minutes')});
my $ack = $consumer->prepare(q{SELECT pgqueue.queue_ack('mem', $1::bigint[])});
my $contexts = $consumer->prepare(
	q{SELECT level || ' ' || name, sum(used_bytes) FROM pg_backend_memory_contexts GROUP BY 1});

# the consumer's memory: total bytes, and by context name and level
sub consumer_memory
{
	my %by = map { $_->[0] => $_->[1] } @{ $consumer->selectall_arrayref($contexts) };
	my $total = 0;
	$total += $_ for values %by;
	return ($total, \%by);
}

my $t0 = time();
my ($acked, $pops) = (0, 0);
my ($tpush, $tdrain, $tmaint) = (0, 0, 0);
my (%memory, %breakdown);
for my $round (1 .. 100)
{
	my $t1 = time();
	$push->execute;
	$push->finish;
	$tpush += time() - $t1;
	$t1 = time();
	my $goal = $round * 10_000;
	while ($acked < $goal)
	{
		$pop->execute;
		my ($ids) = $pop->fetchrow_array;
		$pop->finish;
		die "round $round: the queue ran dry at $acked jobs" unless defined $ids;
		$pops++;
		$ack->execute($ids);
		my ($n) = $ack->fetchrow_array;
		$ack->finish;
		$acked += $n;
	}
	$tdrain += time() - $t1;
	$t1 = time();
	if ($round == 1 || $round % 10 == 0)
	{
		$maintain->execute;
		$maintain->finish;
	}
	$tmaint += time() - $t1;
	($memory{$round}, $breakdown{$round}) = consumer_memory() if $round == 1 || $round == 100;
}
my $secs = time() - $t0;
diag(sprintf('consumer: %d jobs acked in %d pops in %.1f s (push %.1f s, pop and ack %.1f s, '
		  . 'maintain %.1f s); memory %d after round 1, %d after 100',
		$acked, $pops, $secs, $tpush, $tdrain, $tmaint, $memory{1}, $memory{100}));
is($acked, 1_000_000, 'consumer: 1,000,000 jobs popped and acked');
is( sql(q{SELECT count(*) FROM pgqueue.blocks WHERE queue = 'mem' AND first_id <= 1000000}),
	'0', 'consumer: maintain() compacted every drained block (the queue kept its shape)');
cmp_ok($memory{100} - $memory{1}, '<=', $TOLERANCE,
	'consumer: its memory after 1,000,000 jobs is within 512 kB of that after 10,000')
  or diag("contexts that changed:\n" . changed($breakdown{1}, $breakdown{100}));
cmp_ok($memory{1} - $memory{100}, '<=', $TOLERANCE,
	'consumer: ... and did not shrink by more either (the measure is stable)');
$producer->disconnect;
$consumer->disconnect;

# --- 2. the maintenance worker ---------------------------------------------------
sql(q{SELECT pgqueue.queue_create('wm', block_size => 100, retention => '0')});
sql(q{ALTER SYSTEM SET pgqueue.worker = on});
sql(q{SELECT pg_reload_conf()});
my $wpid;
for (1 .. 300)
{
	$wpid = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pgqueue maintenance'});
	last if $wpid;
	usleep(100_000);
}
ok($wpid, "worker: the maintenance worker runs (pid $wpid)");

# compaction steps the worker noted in the log since the test began
my $log_start = -s $node->logfile;

sub steps
{
	my $log = slurp_file($node->logfile, $log_start);
	my @n = $log =~ /\[$wpid\] LOG:  pgqueue: queue "wm": _compact_step: /g;
	return scalar @n;
}

# push and drain 200 jobs a round until the worker noted $goal steps
sub work_until
{
	my ($goal) = @_;
	my $deadline = time() + 120;
	while (steps() < $goal && time() < $deadline)
	{
		sql(q{SELECT pgqueue.queue_push_batch('wm', array_fill('{"y": 2}'::jsonb, ARRAY[200]));
			  SELECT pgqueue.queue_ack('wm', array_agg(job_id))
				FROM pgqueue.queue_pop('wm', 200)});
		usleep(50_000);
	}
	return steps();
}

# The worker's memory, sampled while it sleeps: its "Grand total" line and
# the lines of its contexts, by name and level.
sub worker_memory
{
	sql(q{ALTER SYSTEM SET pgqueue.naptime = '1h'});
	sql(q{SELECT pg_reload_conf()});
	sleep(2);	# the round under way ends, the worker takes the reload
	my $offset = -s $node->logfile;
	sql(qq{SELECT pg_log_backend_memory_contexts($wpid)});
	my $log = '';
	for (1 .. 100)
	{
		$log = slurp_file($node->logfile, $offset);
		last if $log =~ /\[$wpid\] LOG:  Grand total: \d+ bytes/;
		usleep(100_000);
	}
	my ($total) = $log =~ /\[$wpid\] LOG:  Grand total: \d+ bytes in \d+ blocks; \d+ free \(\d+ chunks\); (\d+) used/;
	my %by;
	while ($log =~ /\[$wpid\] LOG:  level: (\d+); ([^:]+): \d+ total in \d+ blocks; \d+ free \(\d+ chunks\); (\d+) used/g)
	{
		$by{"$1 $2"} += $3;
	}
	sql(q{ALTER SYSTEM SET pgqueue.naptime = 100});
	sql(q{SELECT pg_reload_conf()});
	return ($total, \%by);
}

$t0 = time();
my $first = work_until(10);
my ($w1, $wb1) = worker_memory();
my $last = work_until($first + 100);
my ($w2, $wb2) = worker_memory();
$secs = time() - $t0;
diag(sprintf('worker: %d compaction steps, then %d more, in %.1f s; memory %s then %s',
		$first, $last - $first, $secs, $w1 // 'none', $w2 // 'none'));
cmp_ok($last - $first, '>=', 100, 'worker: 100 compaction steps between the two measures');
is(sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pgqueue maintenance'}),
	$wpid, 'worker: the same process all along');
ok(defined $w1 && defined $w2, 'worker: it logged its memory both times');
cmp_ok(($w2 // 0) - ($w1 // 0), '<=', $WORKER_TOLERANCE,
	'worker: its memory after 100 more compaction steps is within 1 MB of that after 10')
  or diag("contexts that changed:\n" . changed($wb1, $wb2));
cmp_ok(($w1 // 0) - ($w2 // 0), '<=', $WORKER_TOLERANCE,
	'worker: ... and did not shrink by more either (the measure is stable)');

$node->stop;
done_testing();
