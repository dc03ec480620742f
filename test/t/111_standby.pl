# 111_standby.pl: a streaming standby, and its promotion under load.
#
# Issue 14, "a standby that takes over".  A primary with pgqueue preloaded
# (the maintenance worker on, naptime 100 ms, queue "sb" with blocks of 100
# and retention 0, so that the worker compacts and archives all along) and
# a streaming standby made from a base backup, named in
# synchronous_standby_names.  Checks, in order, and how each would fail:
#
# 1. workers: the primary runs "pgqueue launcher" and "pgqueue
#    maintenance" (pg_stat_activity.backend_type); the standby runs no
#    pgqueue background worker, sampled for 2 s, and its log never names
#    one (a worker started there, if only for the moment before it fails).
# 2. the views read-only on the standby: with the load not yet started, a
#    queue "v" with jobs in every state (available, scheduled, executing,
#    failed, succeeded, aborted) looks the same on the standby as on the
#    primary through pgqueue.jobs, job_history, blocks (but bytes: the free
#    space map is not WAL-logged), queues and stats (but the counters of
#    shared memory, which are the standby's own) and maintenance; any
#    error there (a view function that writes, takes a lock a standby
#    refuses, or needs the worker) fails the check.
# 3. load: 3 producers (DBD::Pg, one job a transaction, payload a unique
#    token) with synchronous_commit = remote_apply note a token only after
#    their commit returned; 2 consumers pop 10 jobs (lease 2 s) and ack
#    them in a transaction of their own, noting the ids after the ack
#    returned.  A holder pops 5 jobs (lease 3 s) and never acks.
# 4. under that load, on the standby: queue_push, queue_push_batch,
#    queue_pop (a queue with jobs, an empty one, and an empty one with a
#    wait of 15 s), queue_ack, queue_fail, queue_extend, queue_release
#    fail with SQLSTATE 25006 (read_only_sql_transaction), within 5 s
#    (a pop that sleeps its wait on a standby takes 15 s), and push and pop
#    with a message that names the call; the same for push and pop in a
#    read-only transaction on the primary.
# 5. failover: an immediate stop of the primary, promotion of the standby.
#    On the new primary every token a producer noted is the payload of
#    exactly one job, live or archived, and no token is the payload of
#    two (a push lost or doubled by replication or by a compaction that
#    replication saw half of); every job a consumer noted acked is
#    succeeded; "pgqueue maintenance" starts, and maintains: it expires
#    the holder's 5 leases (available again, one failure each) and those
#    of the consumers' last claims, which the stop left unacked, and once
#    a drain has finished every job (and 250 pushed after the promotion:
#    the primary's worker may have archived all before the stop) it
#    compacts and archives the queue back to at most two blocks, archiving
#    rows after the promotion; in the
#    end every noted token's job succeeded exactly once.  Neither server
#    log has a PANIC, TRAP or internal error (XX000).
#
# Mutations of the product, each built into a private install, made the
# test fail as listed (the other three on top of the read-only check at
# the entry of push, pop and the admin calls, with which it passes):
#   - launcher and maintenance worker registered with
#     BgWorkerStart_ConsistentState (src/worker.c): 1 fails (a launcher
#     and a worker run on the standby), and so does the drain of 5;
#   - the product as it was when this test was written (no read-only
#     check at the entry of push and pop): 4 fails: on the standby,
#     queue_pop of a queue with jobs fails with XX000 "cannot assign
#     TransactionIds during recovery" (or 25006 "cannot execute SELECT FOR
#     UPDATE", depending on the path) after reserving a range of a lane
#     in shared memory; queue_pop of an empty queue returns no rows and no
#     error, and with a wait sleeps its 15 s (so does it in a read-only
#     transaction on the primary); queue_push fails with 25006 but says
#     "cannot execute nextval() in a read-only transaction", after taking
#     rate tokens and publishing an open push;
#   - block tables created UNLOGGED (_block_tables, _block_claims in
#     sql/parts/internal.sql): 2 fails (0A000 on the standby), and 5: the
#     pushes noted are not on the new primary, the acked jobs not
#     succeeded;
#   - a launcher that starts at BgWorkerStart_ConsistentState, never
#     restarts, and leaves at once while the server is in recovery
#     (src/worker.c): 5 fails: no worker after the promotion, the leases
#     not expired, nothing compacted.
use strict;
use warnings;

use DBI;
use POSIX ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'pgqueue'
pgqueue.naptime = 100
max_connections = 40
});
$primary->start;

# setup on a node: dies on an error
sub sql { my ($node, $q) = @_; return $node->safe_psql('postgres', $q); }

# the output of a query, or "error <SQLSTATE>: <message>", and its time
sub try_sql
{
	my ($node, $q) = @_;
	my ($out, $err) = ('', '');
	my $t0 = time();
	my $ret = $node->psql('postgres', "\\set VERBOSITY verbose\n$q",
		stdout => \$out, stderr => \$err);
	my $secs = time() - $t0;
	return ($out, $secs) if $ret == 0;
	$err =~ s/^psql:[^:]*:\d+: //mg;
	return ($err =~ /ERROR:\s+([0-9A-Z]{5}): (.*)/ ? "error $1: $2" : "error: $err", $secs);
}

# Run a query until it returns $expected or $secs pass.
sub poll
{
	my ($node, $q, $expected, $secs) = @_;
	my $deadline = time() + ($secs // 30);
	my $got = '';
	while (time() < $deadline)
	{
		($got) = try_sql($node, $q);
		return 1 if $got eq $expected;
		usleep(100_000);
	}
	diag("poll timed out: $q\nexpected: $expected\nlast: $got");
	return 0;
}

my $workers = q{SELECT string_agg(backend_type, ',' ORDER BY backend_type)
				  FROM pg_stat_activity WHERE backend_type LIKE 'pgqueue%'};

sql($primary, 'CREATE EXTENSION pgqueue');
sql($primary, q{SELECT pgqueue.queue_create('sb', block_size => 100, retention => '0')});
sql($primary, q{SELECT pgqueue.queue_create('empty')});
sql($primary, q{SELECT pgqueue.queue_create('held')});
sql($primary, q{SELECT pgqueue.queue_push_batch('held', array_fill('{}'::jsonb, ARRAY[5]))});

# queue v: a job in every state, for the views (the worker leaves it be:
# nothing expires within an hour and nothing finished is past retention)
sql($primary, <<'EOS');
SELECT pgqueue.queue_create('v', max_attempts => 2, retention => '1 day');
SELECT pgqueue.queue_push_batch('v', array_fill('{"v": 1}'::jsonb, ARRAY[7]),
								keys => '{a,b,c,d,e,f,g}');
SELECT pgqueue.queue_push('v', '{"later": true}', run_at => now() + interval '1 day');
SELECT count(*) FROM pgqueue.queue_pop('v', 6, lease => '1 hour');
SELECT pgqueue.queue_ack('v', 1, 1);
SELECT pgqueue.queue_fail('v', 2, 'boom', retry_in => '1 hour', attempt => 1);
SELECT pgqueue.queue_abort('v', 3, 'no');
SELECT pgqueue.queue_fail('v', 4, 'once', retry_in => '0', attempt => 1);
SELECT pgqueue.queue_release('v', 5, 1);
SELECT pgqueue.queue_push('v', '{"behind": 6}', key => 'f');
EOS

$primary->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
$standby->start;
sql($primary, q{ALTER SYSTEM SET synchronous_standby_names = 'standby'});
sql($primary, q{SELECT pg_reload_conf()});
ok( poll(
		$primary,
		q{SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby'},
		'sync'),
	'the standby streams and is the synchronous standby');

# --- 1. workers ----------------------------------------------------------------
ok(poll($primary, $workers, 'pgqueue launcher,pgqueue maintenance'),
	'workers: the primary runs the launcher and a maintenance worker');
my %seen;
for (1 .. 20)
{
	my ($w) = try_sql($standby, $workers);
	$seen{$w}++;
	usleep(100_000);
}
is(join(';', sort keys %seen), '', 'workers: the standby runs no pgqueue worker (sampled for 2 s)');
unlike(slurp_file($standby->logfile), qr/background worker "pgqueue/,
	'workers: the standby\'s log names no pgqueue background worker');

# --- 2. the views on the standby ---------------------------------------------
$primary->wait_for_catchup($standby);
my %views = (
	jobs => q{SELECT job_id, state, key, priority, attempt, failures, last_error, payload,
					 enqueued_at, run_at, lease_until, updated_at
				FROM pgqueue.jobs WHERE queue = 'v' ORDER BY job_id},
	job_history => q{SELECT * FROM pgqueue.job_history WHERE queue = 'v' ORDER BY job_id, seq},
	blocks => q{SELECT queue, block_no, first_id, last_id, state, jobs, unfinished, created_at
				  FROM pgqueue.blocks WHERE queue = 'v' ORDER BY block_no},
	queues => q{SELECT queue, paused, block_size, available, blocked, scheduled, executing,
					   failed, succeeded, aborted, blocks, created_at
				  FROM pgqueue.queues ORDER BY queue},
	stats => q{SELECT queue, available, blocked, scheduled, executing, failed, succeeded,
					  aborted, blocks, pushed IS NOT NULL
				 FROM pgqueue.stats ORDER BY queue},
	maintenance => q{SELECT count(*) FROM pgqueue.maintenance});
for my $v (sort keys %views)
{
	my ($want) = try_sql($primary, $views{$v});
	my ($got) = try_sql($standby, $views{$v});
	is($got, $want, "views: $v reads the same on the standby as on the primary");
}
is( (try_sql($standby, q{SELECT string_agg(DISTINCT state, ',') FROM pgqueue.jobs WHERE queue = 'v'}))[0],
	'aborted,available,blocked,executing,failed,scheduled,succeeded',
	'views: queue v has jobs in every state');

# --- 3. load ---------------------------------------------------------------------
my $dir = $primary->basedir;
my $connstr = 'dbi:Pg:host=' . $primary->host . ';port=' . $primary->port . ';dbname=postgres';

# A client in a process of its own; it ends when its connection does, or
# when the stop file appears.  Only what it noted after a commit returned
# is in its log.  The child leaves by POSIX::_exit, never through the
# test's END blocks (they would stop the nodes).
sub client
{
	my ($name, $body) = @_;
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	return $pid if $pid;
	my $ok = eval {
		open(my $log, '>', "$dir/$name.log") or die "$name.log: $!";
		$log->autoflush(1);
		my $dbh = DBI->connect($connstr, '', '',
			{ AutoCommit => 1, RaiseError => 0, PrintError => 0 })
		  or die "connect: $DBI::errstr";
		$dbh->do(q{SET synchronous_commit = remote_apply}) or die $dbh->errstr;
		$body->($dbh, $log) until -e "$dir/stop";
		1;
	};
	open(my $err, '>', "$dir/$name.end");
	print {$err} ($ok ? "stopped\n" : $@);
	close($err);
	POSIX::_exit(0);
}

my @pids;
for my $p (1 .. 3)
{
	my $i = 0;
	push @pids, client(
		"producer$p",
		sub {
			my ($dbh, $log) = @_;
			my $t = "p$p-" . ++$i;
			$dbh->do(q{SELECT pgqueue.queue_push('sb', jsonb_build_object('t', $1::text))},
				undef, $t)
			  or die "push: " . $dbh->errstr;
			print $log "$t\n";
		});
}
for my $c (1 .. 2)
{
	push @pids, client(
		"consumer$c",
		sub {
			my ($dbh, $log) = @_;
			my $ids = $dbh->selectcol_arrayref(
				q{SELECT job_id FROM pgqueue.queue_pop('sb', 10, lease => '2 seconds')})
			  or die "pop: " . $dbh->errstr;
			if (!@$ids)
			{
				usleep(20_000);
				return;
			}
			# an ack after a lost lease (PQ001) is refused, and noted nowhere
			if ($dbh->do(q{SELECT pgqueue.queue_ack('sb', $1::bigint[])},
					undef, '{' . join(',', @$ids) . '}'))
			{
				print $log "$_\n" for @$ids;
			}
			elsif ($dbh->state ne 'PQ001')
			{
				die "ack: " . $dbh->errstr;
			}
		});
}
my $load_start = time();
my $promoted_at;
my @held;
ok( poll(
		$primary,
		q{SELECT count(*) > 0 FROM pgqueue_data.archive_store a
			JOIN pgqueue.queue q USING (queue_id) WHERE q.name = 'sb'},
		't', 30),
	'load: the worker compacts and archives blocks of sb on the primary under load');
{
	my $held = sql($primary, q{SET synchronous_commit = remote_apply;
		SELECT string_agg(job_id::text, ',' ORDER BY job_id)
		  FROM pgqueue.queue_pop('held', 5, lease => '3 seconds')});
	@held = split /,/, $held;
	is(scalar @held, 5, "load: the holder pops 5 jobs ($held) and never acks");
}

# --- 4. push and pop on the standby ----------------------------------------------
my ($hot) = try_sql($standby, q{SELECT count(*) FROM pgqueue.jobs WHERE queue = 'sb'});
like($hot, qr/^[1-9]\d*$/, "standby: queue sb has jobs there ($hot)");
for my $case (
	[ q{SELECT pgqueue.queue_push('sb', '{}')}, qr/queue_push/ ],
	[ q{SELECT pgqueue.queue_push_batch('sb', ARRAY['{}'::jsonb])}, qr/queue_push_batch/ ],
	[ q{SELECT * FROM pgqueue.queue_pop('sb', 10)}, qr/queue_pop/ ],
	[ q{SELECT * FROM pgqueue.queue_pop('empty', 1)}, qr/queue_pop/ ],
	[ q{SELECT * FROM pgqueue.queue_pop('empty', 1, wait => '15 seconds')}, qr/queue_pop/ ],
	[ qq{SELECT pgqueue.queue_ack('held', $held[0])} ],
	[ qq{SELECT pgqueue.queue_fail('held', $held[0], 'x')} ],
	[ qq{SELECT pgqueue.queue_extend('held', $held[0], '1 minute')} ],
	[ qq{SELECT pgqueue.queue_release('held', $held[0])} ])
{
	my ($q, $names) = @$case;
	my ($got, $secs) = try_sql($standby, $q);
	like($got, qr/^error 25006: /, "standby: $q fails with 25006 (read-only transaction)");
	like($got, $names, "standby: ... and the message names the call ($got)") if $names;
	cmp_ok($secs, '<', 5, "standby: ... at once (in ${\ sprintf('%.1f', $secs)} s)");
}
for my $q (
	q{SELECT pgqueue.queue_push('empty', '{}')},
	q{SELECT * FROM pgqueue.queue_pop('empty', 1)},
	q{SELECT * FROM pgqueue.queue_pop('empty', 1, wait => '15 seconds')})
{
	my ($got, $secs) = try_sql($primary, "SET default_transaction_read_only = on; $q");
	like($got, qr/^error 25006: /, "read-only transaction on the primary: $q fails with 25006");
	cmp_ok($secs, '<', 5, '... at once');
}

# --- 5. failover -------------------------------------------------------------------
# at least 3 s of load in all
usleep(1_000_000 * ($load_start + 3 - time())) if time() < $load_start + 3;
$primary->stop('immediate');
open(my $stop, '>', "$dir/stop");
close($stop);
waitpid($_, 0) for @pids;
@pids = ();
$standby->promote;
ok(poll($standby, 'SELECT pg_is_in_recovery()', 'f'), 'failover: the standby is promoted');
$promoted_at = sql($standby, 'SELECT clock_timestamp()');

sub noted
{
	my @lines;
	for my $f (@_)
	{
		open(my $fh, '<', "$dir/$f.log") or die "$f.log: $!";
		chomp(my @l = <$fh>);
		push @lines, @l;
	}
	return @lines;
}
my @tokens = noted(map { "producer$_" } 1 .. 3);
my @acked = noted(map { "consumer$_" } 1 .. 2);
for my $f (map { ("producer$_", "consumer$_") } 1 .. 3)
{
	next unless -e "$dir/$f.end";
	my $end = slurp_file("$dir/$f.end");
	# a client ends with its connection: the stop, not an error before it
	unlike($end, qr/PQ0|XX000|deadlock|duplicate/, "load: $f ended by the stop ($end)");
}
cmp_ok(scalar @tokens, '>', 100, 'load: the producers noted ' . scalar(@tokens) . ' pushes');
cmp_ok(scalar @acked, '>', 100, 'load: the consumers noted ' . scalar(@acked) . ' acks');

sql($standby, 'CREATE TABLE noted (t text PRIMARY KEY)');
sql($standby, 'CREATE TABLE noted_ack (job_id bigint PRIMARY KEY)');
sql($standby, 'INSERT INTO noted VALUES ' . join(',', map { "('$_')" } @tokens));
sql($standby, 'INSERT INTO noted_ack VALUES ' . join(',', map { "($_)" } @acked));

# every job of sb by token, live or archived, each once
my $where = <<'EOS';
CREATE VIEW sb_jobs AS
SELECT j.payload->>'t' AS t, j.job_id, false AS archived
  FROM pgqueue_data.job_store j JOIN pgqueue.queue q USING (queue_id) WHERE q.name = 'sb'
UNION ALL
SELECT DISTINCT a.payload->>'t', a.job_id, true
  FROM pgqueue_data.archive_store a JOIN pgqueue.queue q USING (queue_id) WHERE q.name = 'sb';
EOS
sql($standby, $where);
is( sql(
		$standby, q{SELECT count(*) FILTER (WHERE c <> 1), string_agg(t || ':' || c, ' ')
					   FROM (SELECT n.t, count(j.job_id) AS c FROM noted n
							   LEFT JOIN sb_jobs j USING (t) GROUP BY n.t) x
					  WHERE c <> 1}),
	'0|',
	'failover: every push noted is on the new primary exactly once');
is(sql($standby, q{SELECT count(*) FROM (SELECT t FROM sb_jobs GROUP BY t HAVING count(*) > 1) d}),
	'0', 'failover: no token is the payload of two jobs');
is( sql(
		$standby, q{SELECT count(*) FROM noted_ack n
					 WHERE NOT EXISTS (SELECT 1 FROM pgqueue.jobs j
										WHERE j.queue = 'sb' AND j.job_id = n.job_id
										  AND j.state = 'succeeded')
					   AND NOT EXISTS (SELECT 1 FROM pgqueue_data.archive_store a
										WHERE a.job_id = n.job_id AND a.state = 'd')}),
	'0',
	'failover: every job noted acked has succeeded on the new primary');

ok(poll($standby, $workers, 'pgqueue launcher,pgqueue maintenance', 60),
	'failover: the launcher and a maintenance worker start after the promotion');
my $held_list = join(',', @held);
ok( poll(
		$standby,
		qq{SELECT count(*) FROM pgqueue.jobs WHERE queue = 'held' AND job_id IN ($held_list)
			 AND state = 'available' AND failures = 1},
		'5', 30),
	'failover: the new primary\'s worker expires the holder\'s 5 leases');
like((try_sql($standby, q{SELECT pgqueue.queue_push('sb', '{"t": "after"}')}))[0],
	qr/^\d+$/, 'failover: push works on the new primary');

# the consumers' claims of the last moments (leases of 2 s) end with no
# ack: the worker expires them too
ok(poll($standby, q{SELECT count(*) FROM pgqueue.jobs WHERE queue = 'sb' AND state = 'executing'},
		'0', 30),
	'failover: the worker expires the leases the stopped consumers held');

# push two and a half blocks more (the primary's worker may have archived
# everything before the stop), drain them and what is left, then the
# worker compacts and archives it all
my $drained = sql($standby, <<'EOS');
DO $$
DECLARE ids bigint[];
BEGIN
	PERFORM pgqueue.queue_push_batch('sb', array_fill('{"after": true}'::jsonb, ARRAY[250]));
	LOOP
		SELECT array_agg(job_id) INTO ids FROM pgqueue.queue_pop('sb', 500);
		EXIT WHEN ids IS NULL;
		PERFORM pgqueue.queue_ack('sb', ids);
	END LOOP;
END $$;
SELECT count(*) FROM pgqueue.jobs WHERE queue = 'sb' AND state <> 'succeeded';
EOS
is($drained, '0', 'failover: a drain on the new primary finishes every job')
  or diag(sql($standby, q{SELECT job_id, state, attempt, failures, run_at, lease_until, key, tenant, priority
						  FROM pgqueue.jobs WHERE queue = 'sb' AND state <> 'succeeded'}));
ok(poll($standby, q{SELECT count(*) <= 2 FROM pgqueue.blocks WHERE queue = 'sb'}, 't', 60),
	'failover: the worker compacts sb back to at most two blocks');
ok( poll(
		$standby,
		qq{SELECT count(*) > 0 FROM pgqueue_data.archive_store WHERE archived_at > '$promoted_at'},
		't', 60),
	'failover: ... archiving rows after the promotion');
is( sql(
		$standby, q{SELECT count(*) FROM noted n
					  LEFT JOIN (SELECT j.t, count(*) AS c FROM pgqueue.job_history h
								   JOIN sb_jobs j USING (job_id)
								  WHERE h.queue = 'sb' AND h.state = 'succeeded'
								  GROUP BY j.t) s USING (t)
					 WHERE coalesce(s.c, 0) <> 1}),
	'0',
	'failover: in the end every noted push succeeded exactly once');

for my $node ($primary, $standby)
{
	unlike(slurp_file($node->logfile), qr/PANIC|TRAP|XX000/,
		$node->name . ': no PANIC, TRAP or internal error in the server log');
}

$standby->stop;
done_testing();
