# 131_peer_bloat.pl: pgqueue's own catalog tables do not bloat while a
# transaction holds back the xmin horizon (issue 14, peer failure 9:
# PgQue #61, where the queue's metadata rows were updated on every tick and
# piled up dead versions that no VACUUM could remove while xmin was held).
#
# One cluster with pgqueue preloaded, its worker on with pgqueue.naptime =
# 100 ms (ten maintenance rounds a second).  A REPEATABLE READ transaction
# takes a snapshot and keeps it for the whole test, so no dead row version
# of any table can be removed (pruning or VACUUM) meanwhile.  Dead row
# versions are counted exactly with pgstattuple (dead_tuple_count: versions
# deleted or updated by committed transactions) in each catalog table of
# sql/parts/tables.sql: pgqueue.queue, pgqueue.block, pgqueue.archive,
# pgqueue.queue_acl, pgqueue.queue_maintenance.
#
# The bound: maintenance writes a catalog row only when something changes
# that the row records, never because a round ran.  A block's row is
# inserted, updated when the block is closed and when it is marked done,
# and deleted when compaction drops it (a push or forced retry into a done
# block revives it, one more update); an archive row is inserted once a
# day per queue; queue, queue_acl and queue_maintenance rows change only by
# users' calls or a failing maintenance.  So:
#   - idle phase: for 10 s (about 100 rounds) with xmin held, one queue
#     holding a backlog over several blocks, one drained and compacted,
#     no traffic: no catalog table gains a single dead row version;
#   - load phase: for PGQUEUE_BLOAT_MINUTES minutes (default: 40 s in the
#     suite) with xmin held, a producer and two consumers (pgbench) push
#     and drain queue "load" (blocks of 1000, retention 0, so blocks fill,
#     close, finish and are compacted and archived all along), while the
#     backlog queue is left alone:
#       dead versions of pgqueue.block <= 5 x (blocks made) + 10, where the
#       blocks made are those the ids pushed cross into plus those the
#       compaction steps made (one at most per step, from the server log).
#       A block's row leaves 3 dead versions in its life (closed, done,
#       deleted), more when a late push revives it or a maintenance
#       subtransaction that wrote it rolls back; measured: 3.6 a block
#       (580 for 163 blocks in 40 s, 159 500 jobs), and none per round;
#       the other catalog tables gain no dead version;
#     and the load is real: at least 20 blocks made and compacted, and the
#     rounds ran (the backlog queue's blocks stay, its leases expire).
# The figures (dead versions per table, blocks, jobs, and the dead
# versions PostgreSQL's own catalogs gained from the DDL of blocks) are
# printed as notes in the log.
#
# Mutations of the product, each built into a private install, made the
# test fail as listed:
#   - _maint_done (sql/parts/maintenance.sql) records each good round
#     (an INSERT ... ON CONFLICT DO UPDATE of the queue's row in
#     pgqueue.queue_maintenance instead of deleting it): the idle phase
#     fails for queue_maintenance (+177 in 10 s), and so does the load
#     phase (+52);
#   - _maintain_queue marks a closed block closed again every round (its
#     UPDATE runs for closed blocks too): the idle phase fails for
#     pgqueue.block (+336 in 10 s: one dead version per backlog block per
#     round).  The load phase's bound did not catch it (708 dead versions
#     for 155 blocks, under 5 x 155 + 10: under load the rounds are
#     fewer); the idle phase is the check against writes per round.
# Without a mutation, measured in the suite: idle phase +0 everywhere; load
# phase (40 s, 159 500 jobs, 163 blocks) pgqueue.block +580, the others
# +0; PostgreSQL's own catalogs, from the DDL of blocks: pg_class +7974,
# pg_attribute +26751, pg_depend +15055, pg_index +3289, pg_type +1644,
# pg_constraint +2206, pg_inherits +474 (about 350 dead versions a block
# made and dropped, also bounded per block, none per round).
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $load_secs = 40;
$load_secs = 60 * $ENV{PGQUEUE_BLOAT_MINUTES} if $ENV{PGQUEUE_BLOAT_MINUTES};

my $node = PostgreSQL::Test::Cluster->new('bloat');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'pgqueue'
pgqueue.naptime = 100
max_connections = 30
log_min_messages = log
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

my @catalogs = qw(queue block archive queue_acl queue_maintenance);
my @system = qw(pg_class pg_attribute pg_type pg_depend pg_index pg_inherits pg_constraint
  pg_sequence pg_statistic);

# dead row versions of each table, by name
sub dead
{
	my %d;
	for my $line (split /\n/, sql(
			join(' UNION ALL ',
				(map { "SELECT '$_', dead_tuple_count FROM pgstattuple('pgqueue.$_')" } @catalogs),
				(map { "SELECT '$_', dead_tuple_count FROM pgstattuple('pg_catalog.$_')" } @system))))
	{
		my ($t, $n) = split /\|/, $line;
		$d{$t} = $n;
	}
	return \%d;
}

sub growth
{
	my ($before, $after, @tables) = @_;
	return join(', ', map { "$_ +" . ($after->{$_} - $before->{$_}) } @tables);
}

# a queue's highest id pushed (0: none)
sub top
{
	return sql(
		qq{SELECT CASE WHEN is_called THEN last_value ELSE 0 END
			 FROM pgqueue_data.seq_} . sql(qq{SELECT queue_id FROM pgqueue.queue WHERE name = '$_[0]'}));
}

sub compaction_blocks
{
	my @made = slurp_file($node->logfile) =~ /_compact_step: .* jobs moved to block/g;
	return scalar(@made);
}

sql('CREATE EXTENSION pgqueue');
sql('CREATE EXTENSION pgstattuple');
sql(q{SELECT pgqueue.queue_create('load', block_size => 1000, retention => '0')});
sql(q{SELECT pgqueue.queue_create('backlog', block_size => 100, retention => '0',
								  default_lease => '1 second', max_attempts => 1000)});
sql(q{SELECT pgqueue.queue_push_batch('backlog', array_fill('{}'::jsonb, ARRAY[550]))});
sql(q{SELECT pgqueue.queue_push_batch('load', array_fill('{}'::jsonb, ARRAY[2500]))});
sql(q{WITH p AS (SELECT job_id, attempt FROM pgqueue.queue_pop('load', 10000))
	  SELECT pgqueue.queue_ack('load', array_agg(job_id), array_agg(attempt)) FROM p});
ok( poll(
		q{SELECT string_agg(state, ',' ORDER BY block_no) FROM pgqueue.block b
			JOIN pgqueue.queue q USING (queue_id) WHERE q.name = 'load' AND b.first_id <= 2000},
		'', 30),
	'before the test, the drained blocks of "load" are compacted');
ok(poll(q{SELECT count(*) FROM pgqueue.block b JOIN pgqueue.queue q USING (queue_id)
		   WHERE q.name = 'backlog' AND b.state = 'closed'}, '5', 30),
	'and "backlog" has five closed blocks of backlog');

# 50 jobs of "backlog" leased for a second: the rounds expire them
is(sql(q{SELECT count(*) FROM pgqueue.queue_pop('backlog', 50, '1 second')}), '50',
	'50 jobs of "backlog" are leased for a second');

# the snapshot that holds xmin back
my $holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
$holder->query_safe('SELECT count(*) FROM pg_class');
my $holder_xmin = sql(
	q{SELECT backend_xmin FROM pg_stat_activity
	   WHERE state = 'idle in transaction' AND backend_xmin IS NOT NULL});
ok($holder_xmin ne '', "a REPEATABLE READ transaction holds xmin $holder_xmin");

# --- idle rounds --------------------------------------------------------------

my $d0 = dead();
sleep(10);
my $d1 = dead();
note('idle phase, 10 s, dead versions gained: ' . growth($d0, $d1, @catalogs, @system));
for my $t (@catalogs)
{
	is($d1->{$t} - $d0->{$t}, 0, "10 s of idle rounds with xmin held: pgqueue.$t gains no dead version");
}

# --- load --------------------------------------------------------------------

my $dir = $node->basedir;
open(my $fh, '>', "$dir/push.sql") or die $!;
print $fh q{SELECT pgqueue.queue_push_batch('load', array_fill('{"x": 1}'::jsonb, ARRAY[100]));}
  . "\n";
close($fh);
open($fh, '>', "$dir/drain.sql") or die $!;
print $fh q{WITH p AS (SELECT job_id, attempt FROM pgqueue.queue_pop('load', 100))
SELECT pgqueue.queue_ack('load', array_agg(job_id), array_agg(attempt)) FROM p HAVING count(*) > 0;}
  . "\n";
close($fh);

my $top0 = top('load');
my $made0 = compaction_blocks();
my $d2 = dead();
my $tups0 = sql(q{SELECT n_tup_ins || '/' || n_tup_upd || '/' || n_tup_del FROM pg_stat_user_tables
				   WHERE relid = 'pgqueue.block'::regclass});
my @runs;
for my $r ([ 'push.sql', 1 ], [ 'drain.sql', 2 ])
{
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[
			'pgbench', '-n', '-c', $r->[1], '-j', $r->[1], '-T', $load_secs,
			'-R', ($r->[0] eq 'push.sql' ? 40 : 1000), '-f', "$dir/$r->[0]",
			'-h', $node->host, '-p', $node->port, 'postgres'
		],
		'>', \$out, '2>', \$err);
	push @runs, [ $r->[0], $h, \$out, \$err ];
}
for my $r (@runs)
{
	my $ok = $r->[1]->finish;
	my ($failed) = ${ $r->[2] } =~ /number of failed transactions: (\d+)/;
	ok($ok && defined($failed) && $failed == 0, "the load ($r->[0]) runs without an error")
	  or diag("${ $r->[2] }\n${ $r->[3] }");
}
# let the last blocks finish and be compacted, xmin still held
usleep(2_000_000);
my $d3 = dead();
my $top1 = top('load');
my $made = int($top1 / 1000) - int($top0 / 1000) + 2 + compaction_blocks() - $made0;
my $compacted = sql(
	qq{SELECT count(DISTINCT job_id) FROM pgqueue.job_history
		WHERE queue = 'load' AND archived AND job_id > $top0});
note("load phase, $load_secs s: jobs pushed " . ($top1 - $top0)
	  . ", archived $compacted, blocks made $made; dead versions gained: "
	  . growth($d2, $d3, @catalogs, @system));
ok($made >= 20, "the load made $made blocks");
ok($compacted >= 0.5 * ($top1 - $top0), "and $compacted of its jobs were compacted and archived");
my $block_dead = $d3->{block} - $d2->{block};
note('pgqueue.block, inserted/updated/deleted rows during the load (pg_stat_user_tables): '
	  . sql(q{SELECT n_tup_ins || '/' || n_tup_upd || '/' || n_tup_del FROM pg_stat_user_tables
			   WHERE relid = 'pgqueue.block'::regclass}) . " (before: $tups0)");
ok($block_dead <= 5 * $made + 10,
	"pgqueue.block gains $block_dead dead versions, within 5 x $made blocks made + 10");
for my $t (grep { $_ ne 'block' } @catalogs)
{
	is($d3->{$t} - $d2->{$t}, 0, "with xmin held under load, pgqueue.$t gains no dead version");
}
is($holder->query_safe('SELECT count(*) > 0 FROM pg_class'), 't',
	'the snapshot was held all along');
is(sql(q{SELECT count(*) FROM pgqueue.jobs WHERE queue = 'backlog' AND state = 'executing'}),
	'0', 'the rounds ran meanwhile: the leases of "backlog" expired');
$holder->query_safe('COMMIT');
$holder->quit;
unlike(slurp_file($node->logfile), qr/PANIC|TRAP:|ERROR:/, 'the server log has no error');

$node->stop;
done_testing();
