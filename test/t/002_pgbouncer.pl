
# 002_pgbouncer.pl: waiting pops through a real PgBouncer in transaction
# pooling mode, the way applications that cannot LISTEN (pooled
# connections) are meant to consume: a waiting pop holds a server
# connection only for its statement, is woken by a push that another
# client makes through the pooler, and is canceled by a client's cancel
# request that PgBouncer forwards.
#
# What a breakage would change: a pop that is not woken through the pooler
# returns after its 20 s wait (the latency check); a cancel that does not
# reach the sleeping backend keeps the client waiting (the cancel check);
# a server connection left busy after the wait makes the last pop through
# a pool of size 2 block.
#
# Skipped when /usr/sbin/pgbouncer (Debian package pgbouncer) is missing.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time usleep);

my $pgbouncer = '/usr/sbin/pgbouncer';
plan skip_all => "$pgbouncer is not installed" unless -x $pgbouncer;

my $node = PostgreSQL::Test::Cluster->new('pooled');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pgqueue'\n");
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION pgqueue;
SELECT pgqueue.queue_create('pgb');
SELECT pgqueue.queue_push('pgb', '{"seed": true}');
SELECT pgqueue.queue_ack('pgb', job_id, attempt) FROM pgqueue.queue_pop('pgb');
});

# PgBouncer: transaction pooling, 2 server connections, trust
my $user = $node->safe_psql('postgres', 'SELECT current_user');
my $dir = PostgreSQL::Test::Utils::tempdir_short();
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $host = $node->host;
my $node_port = $node->port;
append_to_file("$dir/userlist.txt", qq{"$user" ""\n});
append_to_file("$dir/pgbouncer.ini", qq{
[databases]
postgres = host=$host port=$node_port dbname=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir = $dir
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = 2
max_client_conn = 20
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
});
system_or_bail($pgbouncer, '-d', "$dir/pgbouncer.ini");
my $bouncer_pid;
for (1 .. 100)
{
	last if -s "$dir/pgbouncer.pid";
	usleep(50_000);
}
$bouncer_pid = slurp_file("$dir/pgbouncer.pid");
chomp $bouncer_pid;
ok($bouncer_pid =~ /^\d+$/, "pgbouncer started (pid $bouncer_pid)");

END
{
	kill 'TERM', $bouncer_pid if $bouncer_pid;
}

my @psql = ('psql', '-X', '-At', '-h', '127.0.0.1', '-p', $port, '-U', $user,
	'-d', 'postgres');

# Run SQL through PgBouncer; returns stdout.
sub bouncer_psql
{
	my ($sql) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ @psql, '-v', 'ON_ERROR_STOP=1', '-c', $sql ],
		'>', \$out, '2>', \$err, IPC::Run::timeout(60));
	chomp $out;
	diag($err) if $err ne '';
	return $out;
}

# Start a psql through PgBouncer that runs $sql in the background.
sub bouncer_start
{
	my ($sql, $out, $err) = @_;
	return IPC::Run::start([ @psql, '-c', $sql ], '>', $out, '2>', $err,
		IPC::Run::timeout(60));
}

# Wait (on the server, directly) until a backend sleeps in a waiting pop of
# queue pgb.
sub pop_sleeping
{
	return $node->poll_query_until(
		'postgres', q{
SELECT count(*) > 0 FROM pg_stat_activity
 WHERE wait_event_type = 'Extension' AND query LIKE '%queue_pop(''pgb''%'
   AND pid <> pg_backend_pid()});
}

poll_query_until_bouncer();
sub poll_query_until_bouncer
{
	for (1 .. 100)
	{
		my ($out, $err) = ('', '');
		IPC::Run::run([ @psql, '-c', 'SELECT 1' ], '>', \$out, '2>', \$err);
		return if $out =~ /^1$/m;
		usleep(50_000);
	}
	BAIL_OUT('cannot connect through pgbouncer');
}

# --- a waiting pop through PgBouncer gets a job pushed through PgBouncer
my ($out, $err) = ('', '');
my $h = bouncer_start(
	q{SELECT job_id, payload->>'n' FROM pgqueue.queue_pop('pgb', wait => '20 s')},
	\$out, \$err);
ok(pop_sleeping(), 'a pop through pgbouncer sleeps on the server');
is(bouncer_psql(q{SELECT pgqueue.queue_push('pgb', '{"n": "pooled"}')}), '2',
	'push through pgbouncer (the other server connection of the pool)');
my $t0 = time;
$h->finish;
my $took = time - $t0;
chomp $out;
is($out, '2|pooled', 'the waiting pop returns the job');
cmp_ok($took, '<', 5, 'well before its 20 s wait ends');
note(sprintf('wake-up latency through pgbouncer: %.1f ms', $took * 1000));

# --- a client's cancel request, forwarded by PgBouncer, ends the wait
($out, $err) = ('', '');
$h = bouncer_start(q{SELECT job_id FROM pgqueue.queue_pop('pgb', wait => '20 s')},
	\$out, \$err);
ok(pop_sleeping(), 'a second pop through pgbouncer sleeps');
$t0 = time;
$h->signal('INT');    # psql sends a cancel request to pgbouncer
$h->finish;
$took = time - $t0;
like($err, qr/canceling statement due to user request/,
	'psql cancel (SIGINT) through pgbouncer cancels the waiting pop');
cmp_ok($took, '<', 5, 'at once');

# --- the pool's two server connections are free again: two pops at once,
# one gets a job pushed while both wait, the other's wait ends empty
my ($out1, $err1, $out2, $err2) = ('', '', '', '');
my $h1 = bouncer_start(
	q{SELECT count(*) FROM pgqueue.queue_pop('pgb', wait => '3 s')}, \$out1, \$err1);
my $h2 = bouncer_start(
	q{SELECT count(*) FROM pgqueue.queue_pop('pgb', wait => '3 s')}, \$out2, \$err2);
ok( $node->poll_query_until(
		'postgres', q{
SELECT count(*) = 2 FROM pg_stat_activity
 WHERE wait_event_type = 'Extension' AND query LIKE '%queue_pop(''pgb''%'}),
	'two pops through pgbouncer sleep, one per server connection');
$node->safe_psql('postgres', q{SELECT pgqueue.queue_push('pgb', '{}')});
$h1->finish;
$h2->finish;
chomp $out1;
chomp $out2;
is(join(',', sort($out1, $out2)), '0,1', 'one of them gets the job, the other none');
is(bouncer_psql('SELECT count(*) FROM pgqueue.jobs WHERE state = \'available\''), '0',
	'pgbouncer still serves queries afterwards');

kill 'TERM', $bouncer_pid;
$bouncer_pid = undef;
$node->stop;

done_testing();
