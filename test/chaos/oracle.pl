#!/usr/bin/perl
# test/chaos/oracle.pl: the randomized oracle of issue 14.  Producers and
# consumers (separate processes, a connection each) work two queues while a
# fault process kills backends, stops the server and cancels statements;
# then everything is drained and every job is checked against what the
# clients saw commit.  test/t/110_chaos.pl runs it for a few short seeds,
# test/chaos.sh for as long as asked.
#
#   perl test/chaos/oracle.pl --host H --port P [--dbname postgres]
#        [--datadir D --bindir B --logfile L] [--seed N] [--seconds S]
#        [--producers 3] [--consumers 4] [--max-blocks 100] [--workdir DIR]
#        [--no-faults] [--verbose]
#
# Without --datadir, --bindir and --logfile there are no immediate stops; without
# --logfile the server log is not read.  It prints "count <name> <n>"
# lines and one "check <name>: ok" or "check <name>: FAILED: ..." line a
# check, and exits 0 when every check passed, 1 when one failed, 2 when
# it could not run.  It must run as the operating system user of the
# server (kill -9 of backends, pg_ctl).
#
# The load.  Two queues a seed: chaos_<seed> (blocks of 100) and
# chaos_<seed>_k (blocks of 100, ordering keys k0-k14 on most jobs,
# tenants t0-t3 on many), both with retention 0 (finished blocks are
# compacted and archived all along), max_attempts 4, a short backoff.
# Producers push one job (autocommit), batches of 1-40 (autocommit), or
# several pushes in one transaction that commits or, one time in seven,
# rolls back on purpose; some jobs have a priority or a run_at a second
# ahead.  Producers pause while a queue holds max-blocks blocks (pops
# keep up with pushes: the backlog, and so the drain, stays bounded
# however long the run).  Each payload carries a unique token ({"tok": "s<seed>p<i>-<n>"});
# the producer writes it to its ledger (<workdir>/<process>.ledger) as
# committed only after the commit returned, as not committed after an
# error or a rollback, and as uncertain when the connection was lost
# during the commit (or during an autocommit push).  Consumers pop 1-50
# jobs with leases of 0.5-3 s (sometimes waiting 150 ms), and per job ack
# it (alone or in an array ack), fail it (retry_in 0, 100 ms or none),
# extend its lease and then ack, release it, forget it (its lease
# expires), ack it 0.1 s after its lease ended (must be refused), or die: the
# process exits holding its jobs and is started again.  Others pop and ack
# in one transaction (sometimes failing one job, sometimes rolling back).
# Every call passes the attempt.  A fifth of the sessions run with a
# statement_timeout of 150-600 ms.  A maintenance process calls
# pgqueue.maintain() beside the worker every 0.2-1.5 s.  The fault
# process, every 0.7-2.5 s: pg_cancel_backend of a client backend, kill
# -9 of a client backend or of the maintenance worker (the postmaster
# restarts all backends), or pg_ctl stop -m immediate and start.  Clients
# reconnect after any of that.  Expected outcomes are counted, not
# failures: PQ001 (lease lost), 57014 (canceled, timeout), 40001 (blocks
# keep changing), lost connections and refused connections during a
# restart.  Any other error is unexpected.
#
# Reproducibility: every process seeds its random numbers from the seed
# and its number, so the choices a seed makes are the same each run; when
# faults strike depends on timing and is not.
#
# Checks (after faults stopped, the clients ended, leases expired through
# maintain() and pop-and-ack drained both queues; the worker is turned
# off while the checks read, so that no compaction moves jobs under them):
#   pushes       every push a client saw commit exists exactly once (its
#                token in one live job of pgqueue.jobs or one archived job
#                of the archive, never both), an uncertain one at most
#                once, a rolled-back or failed one never, and no job holds
#                a token no client pushed;
#   terminal     every job of the two queues is succeeded or aborted (the
#                live state in pgqueue.jobs, the last history row of an
#                archived job);
#   once         no job has two succeeded rows in its history;
#   history      every job's history (pgqueue.job_history, live and
#                archived) is consistent: seq runs 1, 2, 3 ... with no
#                gap and no duplicate; a job is wholly live or wholly
#                archived; attempt and failures never decrease, failures
#                never exceed max_attempts; executing follows a non-
#                executing row with attempt + 1 (a claim) or executing of
#                the same attempt (an extend), failures unchanged;
#                succeeded follows executing of the same attempt, failures
#                unchanged; failed follows executing of the same attempt
#                with failures + 1; available (release, expiry) follows
#                executing of the same attempt with failures unchanged or
#                + 1, or begins the history with attempt 0 (a job passed
#                over for its key); scheduled begins the history with
#                attempt 0; aborted follows executing of the same attempt
#                with failures + 1 = max_attempts; nothing follows
#                succeeded or aborted; the last row is succeeded or
#                aborted; and the live state shown by pgqueue.jobs is the
#                last history row's;
#   ledger       what clients saw commit is in the history: each popped
#                (job, attempt) has its executing row, each ack its
#                succeeded row of that attempt, each fail a failed or
#                aborted row of that attempt, each release an available
#                row of that attempt; no (job, attempt) was popped twice;
#   stale_acks   no ack sent later than 0.05 s after the lease it answers
#                ended was accepted (the server's clock is the client's);
#   key_order    in the keyed queue no job of a key is claimed while a
#                job of the key with a lower id is claimed and not finished
#                (by the clients' clocks, where the overlap is certain: see
#                the check);
#   errors       no client met an unexpected error (SQLSTATE and message
#                listed), maintain() reported no failed duty, and every
#                client process ended;
#   server_log   the server log written during the run has no PANIC, no
#                TRAP (assertion), no XX000 (internal error; the wrappers
#                set log_error_verbosity = verbose so SQLSTATEs are
#                logged), no backend ended by a signal other than our
#                kill -9, and no failed duty of the worker on these
#                queues.
#
# Consistency is as README.md describes the states: a claim (pop) writes
# executing at attempt + 1; ack writes succeeded; fail writes failed, or
# aborted when failures reach max_attempts; extend writes executing again;
# release writes available; lease expiry writes available (or aborted)
# with failures + 1.
#
# Mutations of the product, each built into a private install, made the
# oracle fail as listed (bash test/chaos.sh --minutes 1 --bindir <it>):
#   - finish.c accepts an ack, fail, extend or release of an expired lease
#     (finish_sql without "l.due_at >= $4", claim_check without
#     "claim->lease_until < f->now"): stale_acks fails (82 acks accepted
#     0.1-0.3 s after their lease ended, seed 12); the history stays
#     consistent, since the accepted ack follows the claim of its attempt.
#   - flow.c key_ready takes a key's first unfinished job for no blocker
#     when it is executing: key_order fails (112 overlaps, seed 3, 15 s,
#     no faults).
# What the oracle found in 0.2.0 (with the fixes of issue 14's two bugs):
# two pushes that made blocks deadlocked (40P01) now and then (fixed in
# _block_create); and key_order, when it compared the rows' times, failed
# on most seeds: a claim's row carries the time its pop began, so a pop
# that saw an ack commit while it ran looked early.  Judged by the
# clients' clocks, no overlap remains.
use strict;
use warnings;

use DBI;
use File::Path qw(make_path);
use File::Temp qw(tempdir);
use Getopt::Long;
use JSON::PP;
use POSIX qw(:sys_wait_h _exit);
use Time::HiRes qw(time sleep);

my %opt = (
	host => '/tmp',
	port => 5432,
	dbname => 'postgres',
	user => scalar getpwuid($<),
	seed => 1,
	seconds => 20,
	producers => 3,
	consumers => 4,
	drain_timeout => 90,
	max_blocks => 100,
	faults => 1,
);
GetOptions(
	\%opt, 'host=s', 'port=i', 'dbname=s', 'user=s', 'datadir=s', 'bindir=s',
	'logfile=s', 'seed=i', 'seconds=f', 'producers=i', 'consumers=i',
	'workdir=s', 'drain_timeout|drain-timeout=i', 'max_blocks|max-blocks=i', 'faults!',
	'verbose')
  or die "usage: see the header of $0\n";

$opt{workdir} //= tempdir("chaos-$opt{seed}-XXXX", TMPDIR => 1, CLEANUP => 0);
make_path($opt{workdir});

my $seed = $opt{seed};
my $qa = "chaos_$seed";
my $qk = "chaos_${seed}_k";
my @queues = ($qa, $qk);
my $max_attempts = 4;
my $restarts_possible = defined $opt{datadir} && defined $opt{bindir} && defined $opt{logfile};
my $dsn =
  "dbi:Pg:host=$opt{host};port=$opt{port};dbname=$opt{dbname};connect_timeout=5";
my $json = JSON::PP->new->canonical;

$| = 1;

sub note { print "# @_\n" if $opt{verbose}; }

###########################################################################
# connections and errors

my $stop_at;          # the end of the load, for the processes
my $ledger;           # this process's ledger file handle
my $dbh;              # this process's connection
my $session_timeout;  # statement_timeout of this process's sessions (ms)

sub ledger
{
	print $ledger join(' ', @_), "\n";
}

# connect; retry while the server restarts, for up to $secs seconds
sub connect_db
{
	my ($secs) = @_;
	my $deadline = time() + ($secs // 60);
	while (1)
	{
		my $d = DBI->connect($dsn, $opt{user}, '',
			{ AutoCommit => 1, RaiseError => 0, PrintError => 0, PrintWarn => 0, pg_server_prepare => 0 });
		if ($d)
		{
			$d->{RaiseError} = 1;
			my $ok = eval {
				$d->do("SET application_name = 'chaos'");
				$d->do("SET statement_timeout = $session_timeout") if $session_timeout;
				1;
			};
			return $d if $ok;
		}
		return undef if time() > $deadline;
		sleep(0.1);
	}
}

# make sure $dbh is a live connection; false if none could be had
sub ensure_db
{
	return 1 if $dbh;
	eval { $dbh->disconnect if $dbh; };
	$dbh = connect_db(60);
	unless ($dbh)
	{
		ledger('X', 'connect', 'no connection for 60 s');
		return 0;
	}
	return 1;
}

# Classify the error of the last call on $dbh:
#   conn    the connection is gone (or the server is restarting)
#   cancel  canceled (pg_cancel_backend, statement_timeout)
#   lease   PQ001, lease lost
#   retry   40001, the blocks keep changing
#   other   anything else: unexpected
sub classify
{
	my ($err) = @_;
	my $state = $dbh ? ($dbh->state // '') : '';
	return 'cancel' if $state eq '57014';
	return 'lease' if $state eq 'PQ001';
	return 'retry' if $state eq '40001';
	return 'conn'
	  if $state =~ /^(08|57P0)/
	  || $err =~ /server closed the connection|no connection to the server|terminating connection/
	  || !($dbh && eval { $dbh->ping });
	return 'other';
}

# after an error: note it, drop a dead connection; returns the class
my %tally;
sub failed_call
{
	my ($what, $err) = @_;
	my $class = classify($err);
	$tally{"err_$class"}++;
	if ($class eq 'conn')
	{
		eval { $dbh->disconnect; };
		$dbh = undef;
	}
	elsif ($class eq 'cancel')
	{
		ledger('T', $err =~ /statement timeout/ ? 'timeout' : 'cancel');
	}
	elsif ($class eq 'other')
	{
		my $state = $dbh->state // '?';
		(my $msg = $err) =~ s/\s+/ /g;
		$msg =~ s/ at \S+ line \d+\.?\s*$//;
		ledger('X', $what, $state, substr($msg, 0, 300));
	}
	# leave no transaction open
	if ($dbh && !$dbh->{AutoCommit})
	{
		eval { $dbh->rollback; };
	}
	return $class;
}

# run one statement; returns (rows arrayref) or (undef, class)
sub q_rows
{
	my ($what, $sql, @bind) = @_;
	my $rows = eval { $dbh->selectall_arrayref($sql, undef, @bind) };
	return ($rows) if $rows;
	return (undef, failed_call($what, $@));
}

###########################################################################
# producers

sub token { return "s${seed}p$_[0]-$_[1]"; }

sub payload
{
	my ($tok) = @_;
	return $json->encode({ tok => $tok, pad => 'x' x int(rand(120)) });
}

sub producer
{
	my ($i) = @_;
	my $n = 0;
	my $looked = 0;
	while (time() < $stop_at)
	{
		ensure_db() or next;
		# backpressure: no pushes while a queue holds max_blocks blocks
		if (time() > $looked + 1)
		{
			$looked = time();
			my ($rows) = q_rows('backlog',
				'SELECT count(*) FROM pgqueue.block b JOIN pgqueue.queue q USING (queue_id)'
				  . ' WHERE q.name = ANY(?) GROUP BY q.name ORDER BY 1 DESC LIMIT 1', \@queues);
			if ($rows && @$rows && $rows->[0][0] >= $opt{max_blocks})
			{
				$tally{backpressure}++;
				sleep(0.5);
				$looked = 0;
				next;
			}
		}
		my $r = rand();
		if ($r < 0.35)
		{
			# one push, autocommit
			my $tok = token($i, $n++);
			my ($sql, @bind) = push_sql($tok);
			my ($rows, $class) = q_rows('push', $sql, @bind);
			if ($rows) { ledger('C', $tok); $tally{push}++; }
			else { ledger($class eq 'conn' ? 'U' : 'N', $tok); }
		}
		elsif ($r < 0.7)
		{
			# a batch, autocommit
			my @toks = map { token($i, $n++) } 1 .. 1 + int(rand(20));
			my ($sql, @bind) = batch_sql(@toks);
			my ($rows, $class) = q_rows('push_batch', $sql, @bind);
			my $code = $rows ? 'C' : $class eq 'conn' ? 'U' : 'N';
			ledger($code, $_) for @toks;
			$tally{batch}++ if $rows;
		}
		else
		{
			# several pushes in one transaction; only a commit whose
			# connection was lost leaves the outcome unknown
			my @toks;
			my $code = 'N';
			my $ok = eval { $dbh->begin_work; 1 };
			failed_call('begin', $@) unless $ok;
			for my $k (1 .. 1 + int(rand(4)))
			{
				last unless $ok;
				my @t = rand() < 0.5 ? (token($i, $n++)) : map { token($i, $n++) } 1 .. 1 + int(rand(20));
				push @toks, @t;
				my ($sql, @bind) = @t == 1 ? push_sql(@t) : batch_sql(@t);
				my ($rows) = q_rows('push_tx', $sql, @bind);
				$ok = 0 unless $rows;
			}
			if ($ok && rand() < 1 / 7)
			{
				eval { $dbh->rollback; };
				$tally{rollback}++;
			}
			elsif ($ok)
			{
				if (eval { $dbh->commit; 1 }) { $code = 'C'; $tally{push_tx}++; }
				else
				{
					my $class = failed_call('commit', $@);
					$code = 'U' if $class eq 'conn' || $class eq 'cancel';
				}
			}
			ledger($code, $_) for @toks;
		}
		sleep(0.01 + rand(0.06));
	}
}

# the push of one token: a queue, and for the keyed queue a key and tenant
sub push_sql
{
	my ($tok) = @_;
	my $prio = rand() < 0.2 ? int(rand(4)) - 1 : 0;
	my $run_at = rand() < 0.1 ? sprintf("clock_timestamp() + interval '%d ms'", 200 + int(rand(1300))) : 'NULL';
	if (rand() < 0.7)
	{
		return ("SELECT pgqueue.queue_push(?, ?::jsonb, priority => ?, run_at => $run_at)",
			$qa, payload($tok), $prio);
	}
	my $key = rand() < 0.8 ? 'k' . int(rand(15)) : undef;
	my $tenant = rand() < 0.6 ? 't' . int(rand(4)) : undef;
	return ("SELECT pgqueue.queue_push(?, ?::jsonb, key => ?, priority => ?, run_at => $run_at, tenant => ?)",
		$qk, payload($tok), $key, $prio, $tenant);
}

sub batch_sql
{
	my @toks = @_;
	my $run_at = rand() < 0.1 ? sprintf("clock_timestamp() + interval '%d ms'", 200 + int(rand(1300))) : 'NULL';
	my @pay = map { payload($_) } @toks;
	my @prio = map { rand() < 0.2 ? int(rand(4)) - 1 : 0 } @toks;
	if (rand() < 0.7)
	{
		return ("SELECT pgqueue.queue_push_batch(?, ?::jsonb[], priorities => ?::int[], run_at => $run_at)",
			$qa, \@pay, \@prio);
	}
	my @keys = map { rand() < 0.8 ? 'k' . int(rand(15)) : undef } @toks;
	my @tenants = map { rand() < 0.6 ? 't' . int(rand(4)) : undef } @toks;
	return ("SELECT pgqueue.queue_push_batch(?, ?::jsonb[], keys => ?::text[], priorities => ?::int[],"
		  . " run_at => $run_at, tenants => ?::text[])",
		$qk, \@pay, \@keys, \@prio, \@tenants);
}

###########################################################################
# consumers

# ack one job; $lease is when its lease ends (epoch), for the stale check
sub ack_one
{
	my ($q, $job, $att, $lease) = @_;
	my $sent = time();
	my ($rows, $class) = q_rows('ack', 'SELECT pgqueue.queue_ack(?, ?::bigint, ?::int)', $q, $job, $att);
	if ($rows)
	{
		ledger('A', $q, $job, $att, sprintf('%.6f', $sent));
		ledger('SA', $q, $job, $att, sprintf('%.3f', $sent - $lease)) if $sent > $lease + 0.05;
		$tally{ack}++;
	}
	elsif ($class eq 'conn') { ledger('UA', $q, $job, $att); }
	elsif ($class eq 'lease') { $tally{lease_lost}++; }
	return $rows ? 1 : 0;
}

sub consumer
{
	my ($i) = @_;
	while (time() < $stop_at)
	{
		ensure_db() or next;
		my $q = rand() < 0.6 ? $qa : $qk;
		if (rand() < 0.65) { consume_apart($q); }
		else { consume_in_tx($q); }
		sleep(rand(0.02));
	}
}

# pop in a transaction of its own, then finish each job by a call of its own
sub consume_apart
{
	my ($q) = @_;
	my $n = rand() < 0.2 ? 1 + int(rand(50)) : 1 + int(rand(10));
	my $lease = (0.5, 1, 2, 3)[int(rand(4))];
	my $wait = rand() < 0.2 ? '150 ms' : '0';
	my $sent = time();
	my ($rows, $class) = q_rows('pop',
		'SELECT job_id, attempt, extract(epoch from lease_until)::float8'
		  . ' FROM pgqueue.queue_pop(?, ?, lease => ?::interval, wait => ?::interval)',
		$q, $n, "$lease s", $wait);
	return unless $rows;
	my $returned = time();
	ledger('P', $q, @$_[0, 1], sprintf('%.6f %.6f', $sent, $returned)) for @$rows;
	$tally{popped} += @$rows;

	# die holding the jobs
	if (@$rows && rand() < 0.02)
	{
		ledger('D', scalar(@$rows));
		close($ledger);
		_exit(42);
	}

	my @batch;
	for my $r (@$rows)
	{
		my ($job, $att, $until) = @$r;
		last unless $dbh;
		sleep(rand(0.02));
		my $a = rand();
		if ($a < 0.5) { ack_one($q, $job, $att, $until); }
		elsif ($a < 0.65) { push @batch, [ $job, $att, $until ]; }
		elsif ($a < 0.77)
		{
			my $retry = (undef, '0 s', '100 ms')[int(rand(3))];
			my $fsent = time();
			my ($res, $cl) = q_rows('fail', 'SELECT pgqueue.queue_fail(?, ?::bigint, ?, ?::interval, ?::int)',
				$q, $job, "chaos fail $att", $retry, $att);
			if ($res) { ledger('F', $q, $job, $att, $res->[0][0], sprintf('%.6f', $fsent)); $tally{fail}++; }
			elsif ($cl eq 'conn') { ledger('UF', $q, $job, $att); }
			elsif ($cl eq 'lease') { $tally{lease_lost}++; }
		}
		elsif ($a < 0.85)
		{
			my ($res, $cl) = q_rows('extend',
				'SELECT extract(epoch from pgqueue.queue_extend(?, ?::bigint, ?::interval, ?::int))::float8',
				$q, $job, (1 + int(rand(3))) . ' s', $att);
			if ($res)
			{
				$tally{extend}++;
				sleep(rand(0.2));
				ack_one($q, $job, $att, $res->[0][0]);
			}
			elsif ($cl eq 'lease') { $tally{lease_lost}++; }
		}
		elsif ($a < 0.9)
		{
			my ($res, $cl) = q_rows('release', 'SELECT pgqueue.queue_release(?, ?::bigint, ?::int)',
				$q, $job, $att);
			if ($res) { ledger('L', $q, $job, $att); $tally{release}++; }
			elsif ($cl eq 'lease') { $tally{lease_lost}++; }
		}
		elsif ($a < 0.97)
		{
			# forget it: its lease expires
			$tally{forgotten}++;
		}
		else
		{
			# ack after the lease ended: must be refused
			my $left = $until + 0.1 - time();
			sleep($left) if $left > 0 && $left < 5;
			$tally{late_ack}++;
			ack_one($q, $job, $att, $until);
		}
	}
	if (@batch && $dbh)
	{
		my $sent = time();
		my ($res, $cl) = q_rows('ack_array', 'SELECT pgqueue.queue_ack(?, ?::bigint[], ?::int[])',
			$q, [ map { $_->[0] } @batch ], [ map { $_->[1] } @batch ]);
		if ($res)
		{
			for my $b (@batch)
			{
				ledger('A', $q, @$b[0, 1], sprintf('%.6f', $sent));
				ledger('SA', $q, @$b[0, 1], sprintf('%.3f', $sent - $b->[2])) if $sent > $b->[2] + 0.05;
			}
			$tally{ack} += @batch;
		}
		elsif ($cl eq 'conn') { ledger('UA', $q, @$_[0, 1]) for @batch; }
		elsif ($cl eq 'lease')
		{
			# all or none: ack the others one by one
			$tally{lease_lost}++;
			ack_one($q, @$_) for grep { $dbh } @batch;
		}
	}
}

# pop, work and ack in one transaction
sub consume_in_tx
{
	my ($q) = @_;
	my $n = 1 + int(rand(10));
	unless (eval { $dbh->begin_work; 1 }) { failed_call('begin', $@); return; }
	my $sent = time();
	my ($rows, $class) = q_rows('pop_tx',
		'SELECT job_id, attempt FROM pgqueue.queue_pop(?, ?, lease => ?::interval)', $q, $n, '5 s');
	return unless $rows;
	my (@ack, @fail);
	for my $r (@$rows)
	{
		if (rand() < 0.1) { push @fail, $r; } else { push @ack, $r; }
	}
	sleep(rand(0.05));
	my $ended = time();
	for my $r (@fail)
	{
		my ($res) = q_rows('fail_tx', 'SELECT pgqueue.queue_fail(?, ?::bigint, ?, ?::interval, ?::int)',
			$q, @$r[0], 'chaos fail in tx', '0 s', $r->[1]);
		return unless $res;
		$r->[2] = $res->[0][0];
	}
	if (@ack)
	{
		my ($res) = q_rows('ack_tx', 'SELECT pgqueue.queue_ack(?, ?::bigint[], ?::int[])',
			$q, [ map { $_->[0] } @ack ], [ map { $_->[1] } @ack ]);
		return unless $res;
	}
	if (rand() < 0.1)
	{
		eval { $dbh->rollback; };
		$tally{rollback_tx}++;
		return;
	}
	if (eval { $dbh->commit; 1 })
	{
		my $returned = time();
		ledger('P', $q, @$_[0, 1], sprintf('%.6f %.6f', $sent, $returned)) for @$rows;
		ledger('A', $q, @$_[0, 1], sprintf('%.6f', $ended)) for @ack;
		ledger('F', $q, @$_[0, 1, 2], sprintf('%.6f', $ended)) for @fail;
		$tally{popped} += @$rows;
		$tally{ack} += @ack;
		$tally{fail} += @fail;
		$tally{tx}++;
	}
	else
	{
		failed_call('commit_tx', $@);
		ledger('UA', $q, @$_[0, 1]) for @ack;
		ledger('UF', $q, @$_[0, 1]) for @fail;
	}
}

###########################################################################
# maintenance beside the worker

sub maintainer
{
	while (time() < $stop_at)
	{
		sleep(0.2 + rand(1.3));
		ensure_db() or next;
		my $q = (undef, $qa, $qk)[int(rand(3))];
		my ($rows) = q_rows('maintain', 'SELECT pgqueue.maintain(?)::text', $q);
		next unless $rows;
		my $r = $json->decode($rows->[0][0]);
		$tally{maintain}++;
		my @mine = grep { /^\Q$qa\E(_k)?: / } @{ $r->{compacted} };
		ledger('M', scalar(@mine), $r->{expired_leases});
		for my $e (@{ $r->{errors} })
		{
			next unless defined $e->{queue} && ($e->{queue} eq $qa || $e->{queue} eq $qk);
			# a canceled duty (statement_timeout, pg_cancel_backend) is expected
			next if $e->{error} =~ /canceling statement/;
			ledger('X', 'maintain', 'errors', $json->encode($e));
		}
	}
}

###########################################################################
# faults

sub pg_ctl
{
	my @args = @_;
	my $out = `"$opt{bindir}/pg_ctl" -D "$opt{datadir}" @args 2>&1`;
	return ($? == 0, $out);
}

sub server_running
{
	my ($ok) = pg_ctl('status');
	return $ok;
}

sub start_server
{
	my $log = defined $opt{logfile} ? "-l '$opt{logfile}'" : '';
	for my $try (1 .. 5)
	{
		my ($ok, $out) = pg_ctl("-w -t 120 $log start");
		return 1 if $ok || server_running();
		note("pg_ctl start failed: $out");
		sleep(1);
	}
	ledger('X', 'fault', 'start', 'could not start the server');
	return 0;
}

sub faults
{
	while (time() < $stop_at)
	{
		sleep(0.7 + rand(1.8));
		last if time() >= $stop_at;
		ensure_db() or next;
		my $r = rand();
		if ($r < 0.4)
		{
			my ($rows) = q_rows('fault',
				"SELECT pg_cancel_backend(pid) FROM pg_stat_activity"
				  . " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
				  . " AND datname = current_database() AND application_name = 'chaos'"
				  . " ORDER BY random() LIMIT 1");
			if ($rows && @$rows) { ledger('K', 'cancel'); }
		}
		elsif ($r < 0.75 || !$restarts_possible)
		{
			my $type = rand() < 0.15 ? 'pgqueue maintenance' : 'client backend';
			my ($rows) = q_rows('fault',
				"SELECT pid FROM pg_stat_activity WHERE backend_type = ? AND pid <> pg_backend_pid()"
				  . " AND datname = current_database() ORDER BY random() LIMIT 1", $type);
			next unless $rows && @$rows;
			if (kill('KILL', $rows->[0][0]))
			{
				ledger('K', 'kill', $type eq 'client backend' ? 'client' : 'worker');
				eval { $dbh->disconnect; };
				$dbh = undef;
				sleep(0.5);
			}
		}
		else
		{
			eval { $dbh->disconnect; };
			$dbh = undef;
			my ($ok, $out) = pg_ctl('-m immediate -w stop');
			ledger('K', 'restart');
			note("immediate stop: $out") unless $ok;
			sleep(rand(1));
			start_server();
		}
	}
	# leave the server up
	start_server() if $restarts_possible && !server_running();
}

###########################################################################
# processes

my %children;    # pid => [role, number]
my $next_consumer = 0;

sub spawn
{
	my ($role, $i) = @_;
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid)
	{
		$children{$pid} = [ $role, $i ];
		return;
	}
	# child
	srand($seed * 1_000_003 + { producer => 0, consumer => 1000, maint => 900_000, fault => 900_001 }->{$role} + $i);
	open($ledger, '>>', "$opt{workdir}/$role$i.ledger") or die "ledger: $!";
	$ledger->autoflush(1);
	$session_timeout = ($role ne 'fault' && rand() < 0.2) ? 150 + int(rand(450)) : 0;
	$SIG{PIPE} = 'IGNORE';
	# the server's goodbye when it stops at once is no news here
	$SIG{__WARN__} = sub { print STDERR @_ unless $_[0] =~ /terminating connection due to/; };
	my $ok = eval {
		if ($role eq 'producer') { producer($i); }
		elsif ($role eq 'consumer') { consumer($i); }
		elsif ($role eq 'maint') { maintainer(); }
		else { faults(); }
		1;
	};
	unless ($ok)
	{
		(my $e = $@) =~ s/\s+/ /g;
		ledger('X', 'crash', $role, substr($e, 0, 300));
	}
	for my $k (sort keys %tally) { ledger('N_' . $k, $tally{$k}); }
	eval { $dbh->disconnect if $dbh; };
	close($ledger);
	_exit(0);
}

###########################################################################
# setup

srand($seed);
$session_timeout = 0;
open($ledger, '>>', "$opt{workdir}/main.ledger") or die "ledger: $!";
$ledger->autoflush(1);

my $log_offset = defined $opt{logfile} && -f $opt{logfile} ? -s $opt{logfile} : 0;

$dbh = connect_db(30) or die "cannot connect: $DBI::errstr\n";
$dbh->do('CREATE EXTENSION IF NOT EXISTS pgqueue');
for my $q (@queues)
{
	$dbh->do('SELECT pgqueue.queue_drop(?, force => true) FROM pgqueue.queue WHERE name = ?', undef, $q, $q);
	$dbh->do(
		"SELECT pgqueue.queue_create(?, block_size => 100, default_lease => '2 s', max_attempts => ?,"
		  . " backoff_base => '50 ms', backoff_cap => '400 ms', backoff_jitter => 0.2,"
		  . " retention => '0 s')", undef, $q, $max_attempts);
}
$dbh->disconnect;
$dbh = undef;

my $t0 = time();
$stop_at = $t0 + $opt{seconds};
print "seed $seed: $opt{producers} producers, $opt{consumers} consumers, $opt{seconds} s,"
  . " queues $qa and $qk, ledgers in $opt{workdir}\n";

spawn('producer', $_) for 1 .. $opt{producers};
spawn('consumer', $next_consumer++) for 1 .. $opt{consumers};
spawn('maint', 0);
spawn('fault', 0) if $opt{faults};

my $died = 0;
my @hung;
my $hard_deadline = $stop_at + 90;
while (%children)
{
	my $pid = waitpid(-1, WNOHANG);
	if ($pid > 0)
	{
		my ($role, $i) = @{ delete $children{$pid} };
		my $status = $? >> 8;
		if ($role eq 'consumer' && $status == 42)
		{
			$died++;
			spawn('consumer', $next_consumer++) if time() < $stop_at;
		}
		elsif ($status != 0)
		{
			ledger('X', 'process', "$role$i", "exit status $status");
		}
		next;
	}
	if (time() > $hard_deadline)
	{
		for my $p (keys %children)
		{
			push @hung, join('', @{ $children{$p} });
			kill('KILL', $p);
			waitpid($p, 0);
			delete $children{$p};
		}
		last;
	}
	sleep(0.1);
}
ledger('X', 'process', 'hung', "@hung") if @hung;
printf "load ended after %.1f s\n", time() - $t0;

###########################################################################
# drain

start_server() if $restarts_possible && !server_running();
$dbh = connect_db(120) or die "cannot connect after the load: $DBI::errstr\n";
my $drain_end = time() + $opt{drain_timeout};
my $drained = 0;
my $remaining = -1;
my $maintained = 0;
while (time() < $drain_end)
{
	$dbh = connect_db(60) unless $dbh;
	my $got = 0;
	for my $q (@queues)
	{
		my $sent = time();
		my ($rows) = q_rows('drain_pop',
			"SELECT job_id, attempt FROM pgqueue.queue_pop(?, 1000, lease => '5 min')", $q);
		next unless $rows && @$rows;
		my $returned = time();
		ledger('P', $q, @$_[0, 1], sprintf('%.6f %.6f', $sent, $returned)) for @$rows;
		my ($res) = q_rows('drain_ack', 'SELECT pgqueue.queue_ack(?, ?::bigint[], ?::int[])',
			$q, [ map { $_->[0] } @$rows ], [ map { $_->[1] } @$rows ]);
		if ($res)
		{
			ledger('A', $q, @$_[0, 1], sprintf('%.6f', $returned)) for @$rows;
			$drained += @$rows;
		}
		$got += @$rows;
	}
	# expire the leases that ended (the worker may be held back after
	# many crashes), every second and whenever nothing could be popped
	if (!$got || time() > $maintained + 1)
	{
		q_rows('drain_maintain', 'SELECT pgqueue.maintain(?)::text', $_) for @queues;
		$maintained = time();
	}
	next if $got;
	my ($left) = q_rows('drain_left',
		"SELECT count(*) FROM pgqueue.jobs WHERE queue = ANY(?) AND state NOT IN ('succeeded', 'aborted')",
		\@queues);
	$remaining = $left ? $left->[0][0] : -1;
	last if $remaining == 0;
	sleep(0.2);
}
printf "drained %d jobs in %.1f s, %d unfinished left\n", $drained, time() - $drain_end + $opt{drain_timeout},
  $remaining;

###########################################################################
# the checks

# the worker must not compact under the reads
$dbh->do('ALTER SYSTEM SET pgqueue.worker = off');
$dbh->do('SELECT pg_reload_conf()');
for (1 .. 100)
{
	my ($n) = $dbh->selectrow_array(
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgqueue maintenance'");
	last if $n == 0;
	sleep(0.1);
}
# one more round of our own, so the reads see a settled state
$dbh->do('SELECT pgqueue.maintain(?)', undef, $_) for @queues;

$dbh->begin_work;
$dbh->do('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ');
my $qids = $dbh->selectall_arrayref('SELECT queue_id, name FROM pgqueue.queue WHERE name = ANY(?)',
	undef, \@queues);
my %qname = map { $_->[0] => $_->[1] } @$qids;
my @qid = keys %qname;

# live jobs: queue, job_id, state, token, key
my $live = $dbh->selectall_arrayref(
	"SELECT queue, job_id, state, payload->>'tok', key FROM pgqueue.jobs WHERE queue = ANY(?)",
	undef, \@queues);
# archived jobs: one row a transition, each with the job's columns
my $arch = $dbh->selectall_arrayref(
	"SELECT DISTINCT queue_id, job_id, payload->>'tok', key FROM pgqueue_data.archive_store"
	  . " WHERE queue_id = ANY(?)", undef, \@qid);
my ($archived_rows) = $dbh->selectrow_array(
	'SELECT count(*) FROM pgqueue_data.archive_store WHERE queue_id = ANY(?)', undef, \@qid);

# the ledgers
my (%tok_code, %popped, %acked, %failed, %released, @unexpected, @stale, %count);
my (%pop_times, %end_sent);
opendir(my $dh, $opt{workdir}) or die;
for my $f (sort grep { /\.ledger$/ } readdir($dh))
{
	open(my $fh, '<', "$opt{workdir}/$f") or die;
	while (my $line = <$fh>)
	{
		chomp $line;
		my ($code, @f) = split / /, $line;
		next unless defined $code;
		if ($code =~ /^[CUN]$/)
		{
			# a token pushed twice (never) would keep its strongest claim
			my $old = $tok_code{ $f[0] } // '';
			$tok_code{ $f[0] } = $code unless $old eq 'C';
		}
		elsif ($code eq 'P')
		{
			push @{ $popped{"$f[0] $f[1] $f[2]"} }, $f;
			push @{ $pop_times{"$f[0] $f[1]"} }, [ @f[ 3, 4 ] ] if defined $f[4];
		}
		elsif ($code eq 'A')
		{
			$acked{"$f[0] $f[1] $f[2]"}++;
			$end_sent{"$f[0] $f[1]"} = $f[3] if defined $f[3];
		}
		elsif ($code eq 'F')
		{
			$failed{"$f[0] $f[1] $f[2]"}++;
			$count{fails}++;
			$end_sent{"$f[0] $f[1]"} = $f[4] if defined $f[4] && $f[3] eq 'aborted';
		}
		elsif ($code eq 'L') { $released{"$f[0] $f[1] $f[2]"}++; }
		elsif ($code eq 'SA') { push @stale, "$f[0] job $f[1] attempt $f[2] ($f[3] s late)"; }
		elsif ($code eq 'X') { push @unexpected, "$f: @f"; }
		elsif ($code eq 'K') { $count{ $f[0] eq 'kill' ? "kills_$f[1]" : $f[0] eq 'cancel' ? 'cancels' : 'restarts' }++; }
		elsif ($code eq 'T') { $count{"canceled_$f[0]"}++; }
		elsif ($code eq 'D') { $count{deaths}++; }
		elsif ($code eq 'M') { $count{compactions_by_maintain} += $f[0]; }
		elsif ($code =~ /^N_(.*)/) { $count{$1} += $f[0]; }
		elsif ($code =~ /^U[AF]$/) { $count{uncertain_finishes}++; }
	}
	close($fh);
}
closedir($dh);
$count{pushes} = grep { $_ eq 'C' } values %tok_code;
$count{pushes_uncertain} = grep { $_ eq 'U' } values %tok_code;
$count{pushes_not_committed} = grep { $_ eq 'N' } values %tok_code;
$count{acks} = scalar keys %acked;
$count{drained} = $drained;
$count{archived_rows} = $archived_rows;
$count{jobs_live} = @$live;
$count{jobs_archived} = @$arch;

my %fails;    # check name => [problems]
sub problem { my $c = shift; push @{ $fails{$c} }, @_; }
my @checks = qw(pushes terminal once history ledger stale_acks key_order errors server_log);

# pushes: tokens
my %where;    # token => [ "queue job live|archived" ]
my %job_tok;  # "queue job" => token
my %job_key;
my %live_state;
for my $r (@$live)
{
	my ($q, $job, $state, $tok, $key) = @$r;
	push @{ $where{ $tok // '?' } }, "$q $job live";
	$job_tok{"$q $job"} = $tok;
	$job_key{"$q $job"} = $key;
	$live_state{"$q $job"} = $state;
}
for my $r (@$arch)
{
	my ($qid, $job, $tok, $key) = @$r;
	my $q = $qname{$qid};
	push @{ $where{ $tok // '?' } }, "$q $job archived";
	problem('pushes', "job $q $job is both live and archived") if exists $job_tok{"$q $job"};
	problem('pushes', "archived job $q $job has two tokens") if exists $job_tok{"$q $job"} && $job_tok{"$q $job"} ne ($tok // '?');
	$job_tok{"$q $job"} = $tok;
	$job_key{"$q $job"} = $key;
}
for my $tok (sort keys %tok_code)
{
	my $n = @{ $where{$tok} // [] };
	my $c = $tok_code{$tok};
	problem('pushes', "committed push $tok exists $n times (@{$where{$tok} // []})") if $c eq 'C' && $n != 1;
	problem('pushes', "uncertain push $tok exists $n times (@{$where{$tok}})") if $c eq 'U' && $n > 1;
	problem('pushes', "push $tok that did not commit exists (@{$where{$tok}})") if $c eq 'N' && $n > 0;
}
for my $tok (sort keys %where)
{
	problem('pushes', "job with token $tok that no client pushed (@{$where{$tok}})")
	  unless exists $tok_code{$tok};
}
$count{pushes_uncertain_committed} = grep { $tok_code{$_} eq 'U' && $where{$_} } keys %tok_code;

# history, by job, read through a cursor (a long run has millions of rows)
my (%claims, %succ, %failrow, %relrow, %claimed_at, %terminal_at, %seen);
sub check_job
{
	my ($j, $rows) = @_;
	$seen{$j} = 1;
	unless (exists $job_tok{$j})
	{
		problem('history', "history of job $j, which has no job row");
		return;
	}
	my %arch = map { ($_->{archived} ? 1 : 0) => 1 } @$rows;
	problem('history', "job $j has live and archived history rows") if keys %arch > 1;
	my ($pstate, $patt, $pfails, $pseq) = ('new', 0, 0, 0);
	my $nsucc = 0;
	for my $r (@$rows)
	{
		my ($s, $a, $f) = @$r{qw(state attempt fails)};
		my $why;
		if ($r->{seq} != $pseq + 1) { $why = "seq $r->{seq} after $pseq"; }
		elsif ($pstate eq 'succeeded' || $pstate eq 'aborted') { $why = "$s after $pstate"; }
		elsif ($a < $patt || $f < $pfails) { $why = "attempt or failures decrease"; }
		elsif ($f > $max_attempts) { $why = "failures $f above max_attempts"; }
		elsif ($s eq 'executing')
		{
			if ($pstate eq 'executing') { $why = 'extend changes attempt or failures' if $a != $patt || $f != $pfails; }
			else { $why = "claim at attempt $a after attempt $patt" if $a != $patt + 1 || $f != $pfails; }
			if (!$why && $pstate ne 'executing')
			{
				$claims{"$j $a"}++;
				push @{ $claimed_at{$j} }, $r->{at} if $j =~ /^\Q$qk\E /;
			}
		}
		elsif ($s eq 'succeeded')
		{
			$why = "succeeded not after executing of attempt $a" if $pstate ne 'executing' || $a != $patt || $f != $pfails;
			$nsucc++;
			$succ{"$j $a"}++;
		}
		elsif ($s eq 'failed')
		{
			$why = "failed not after executing of attempt $a, failures + 1"
			  if $pstate ne 'executing' || $a != $patt || $f != $pfails + 1 || $f >= $max_attempts;
			$failrow{"$j $a"}++;
		}
		elsif ($s eq 'aborted')
		{
			$why = "aborted not after executing of attempt $a with failures reaching $max_attempts"
			  if $pstate ne 'executing' || $a != $patt || $f != $pfails + 1 || $f != $max_attempts;
			$failrow{"$j $a"}++;
		}
		elsif ($s eq 'available')
		{
			if ($pstate eq 'executing')
			{
				$why = "available after executing: attempt or failures wrong"
				  if $a != $patt || ($f != $pfails && $f != $pfails + 1) || $f >= $max_attempts;
				$relrow{"$j $a"}++ if $f == $pfails;
				# an expiry names its attempt (a release keeps the last error)
				if ($f == $pfails + 1 && $r->{error} !~ /^lease of attempt $a expired/)
				{
					$why = "expiry of attempt $a with error \"$r->{error}\"";
				}
			}
			elsif ($pstate ne 'new' || $a != 0) { $why = "available after $pstate"; }
		}
		elsif ($s eq 'scheduled')
		{
			$why = "scheduled after $pstate" if $pstate ne 'new' || $a != 0;
		}
		else { $why = "unknown state $s"; }
		if ($why)
		{
			problem('history', "job $j seq $r->{seq} ($s, attempt $a, failures $f): $why");
			last;
		}
		$count{expiries}++
		  if ($s eq 'available' || $s eq 'aborted') && $f == $pfails + 1
		  && $r->{error} =~ /^lease of attempt $a expired/;
		($pstate, $patt, $pfails, $pseq) = ($s, $a, $f, $r->{seq});
	}
	$pstate = $rows->[-1]{state};
	problem('terminal', "job $j ends $pstate") unless $pstate eq 'succeeded' || $pstate eq 'aborted';
	problem('history', "job $j: pgqueue.jobs says $live_state{$j}, its history ends $pstate")
	  if exists $live_state{$j} && $live_state{$j} ne $pstate;
	problem('once', "job $j succeeded $nsucc times") if $nsucc > 1;
	$terminal_at{$j} = $rows->[-1]{at} if $j =~ /^\Q$qk\E / && ($pstate eq 'succeeded' || $pstate eq 'aborted');
}

$dbh->do("DECLARE hist NO SCROLL CURSOR FOR"
	  . " SELECT queue, job_id, seq, state, attempt, failures, archived, extract(epoch from at)::float8, error"
	  . " FROM pgqueue.job_history WHERE queue = ANY(?) ORDER BY queue, job_id, seq, archived",
	undef, \@queues);
{
	my ($cur, @rows);
	while (1)
	{
		my $batch = $dbh->selectall_arrayref('FETCH 20000 FROM hist');
		last unless @$batch;
		for my $r (@$batch)
		{
			my ($q, $job, $seq, $state, $att, $fails, $archived, $at, $err) = @$r;
			my $j = "$q $job";
			if (defined $cur && $j ne $cur)
			{
				check_job($cur, \@rows);
				@rows = ();
			}
			$cur = $j;
			push @rows, { seq => $seq, state => $state, attempt => $att, fails => $fails,
				archived => $archived, at => $at, error => $err // '' };
		}
	}
	check_job($cur, \@rows) if defined $cur;
}
$dbh->commit;
$dbh->do('ALTER SYSTEM RESET pgqueue.worker');
$dbh->do('SELECT pg_reload_conf()');
$dbh->disconnect;
for my $j (sort keys %job_tok)
{
	next if $seen{$j};
	problem('terminal', "job $j has no history");
	problem('history', "job $j has no history");
}

# ledger against history
for my $k (sort keys %popped)
{
	my $n = @{ $popped{$k} };
	problem('ledger', "job attempt $k popped $n times") if $n > 1;
	problem('ledger', "popped job attempt $k has no claim in its history") unless $claims{$k};
}
for my $k (sort keys %acked)
{
	problem('ledger', "acked job attempt $k has no succeeded row of that attempt") unless $succ{$k};
	problem('ledger', "job attempt $k acked $acked{$k} times") if $acked{$k} > 1;
}
for my $k (sort keys %failed)
{
	problem('ledger', "failed job attempt $k has no failed or aborted row of that attempt") unless $failrow{$k};
}
for my $k (sort keys %released)
{
	problem('ledger', "released job attempt $k has no available row of that attempt") unless $relrow{$k};
}
problem('stale_acks', @stale) if @stale;

# key order: a job of a key is claimed only after the lower ones ended.
# Judged by the clients' clocks, so that only a certain overlap counts: job
# y of a key had been claimed (a pop of it returned) before a pop of a later
# job x of the key was sent, and that pop returned before y's last call
# (the ack, or the fail that aborted it) was sent, or before the time of
# its terminal row when maintenance aborted it.  The rows' own times are
# not enough: a claim's row carries the time its pop began, and the pop
# may see an ack that commits meanwhile.  The 200 lower jobs of the key
# nearest to x are compared with each of its pops.
my %by_key;
for my $j (keys %job_key)
{
	my ($q, $job) = split / /, $j;
	next unless $q eq $qk && defined $job_key{$j};
	push @{ $by_key{ $job_key{$j} } }, $job;
}
for my $key (sort keys %by_key)
{
	my @lower;    # [job, first pop returned, last call sent]
	for my $job (sort { $a <=> $b } @{ $by_key{$key} })
	{
		my $j = "$qk $job";
		my @pops = @{ $pop_times{$j} // [] };
		POP: for my $p (@pops)
		{
			for my $y (reverse @lower)
			{
				if ($p->[0] > $y->[1] && $p->[1] < $y->[2])
				{
					problem('key_order',
						sprintf("key %s: job %d claimed (pop sent %.6f, returned %.6f) while job %d"
							  . " was claimed (at %.6f) and not finished (until %.6f)",
							$key, $job, @$p, @$y));
					last POP;
				}
			}
		}
		my ($first) = sort { $a <=> $b } map { $_->[1] } @pops;
		my $end = $end_sent{$j} // $terminal_at{$j};
		push @lower, [ $job, $first, $end ] if defined $first && defined $end;
		shift @lower if @lower > 200;
	}
}

problem('errors', @unexpected) if @unexpected;

# the server log
if (defined $opt{logfile})
{
	open(my $lf, '<', $opt{logfile}) or die "log: $!";
	seek($lf, $log_offset, 0);
	while (my $l = <$lf>)
	{
		chomp $l;
		$count{crash_restarts}++ if $l =~ /all server processes terminated; reinitializing/;
		$count{compactions_by_worker}++ if $l =~ /pgqueue: queue "\Q$qa\E(_k)?": _compact_step: /;
		if ($l =~ /\bPANIC\b|\bTRAP\b|\bXX000\b/
			|| ($l =~ /terminated by signal (\d+)/ && $1 != 9)
			|| $l =~ /pgqueue maintenance of queue "\Q$qa\E(_k)?" failed/)
		{
			problem('server_log', $l);
		}
	}
	close($lf);
}
$count{compactions} = ($count{compactions_by_worker} // 0) + ($count{compactions_by_maintain} // 0);

for my $k (sort keys %count) { print "count $k $count{$k}\n"; }
my $bad = 0;
for my $c (@checks)
{
	if ($fails{$c})
	{
		$bad++;
		my @p = @{ $fails{$c} };
		my $more = @p > 10 ? sprintf(' (and %d more)', @p - 10) : '';
		print "check $c: FAILED: ", scalar(@p), " problems$more\n";
		print "  $_\n" for @p[ 0 .. ($#p < 9 ? $#p : 9) ];
	}
	else
	{
		print "check $c: ok\n";
	}
}
print $bad ? "seed $seed: $bad checks FAILED\n" : "seed $seed: all checks passed\n";
exit($bad ? 1 : 0);
