/*-------------------------------------------------------------------------
 *
 * latency.c
 *	  Wake-up latency of a consumer, from the moment a push's commit returns
 *	  to the moment the consumer's pop returns the job.
 *
 * One process pushes a job every --every ms (autocommit, so the call
 * returns after the commit) and records when each push returned; each of
 * --consumers consumer processes waits for jobs one of four ways and
 * records when it got each one:
 *
 *   wait      queue_pop(q, 1, wait => '10 s')  (pgqueue's waiting pop)
 *   poll10    queue_pop(q, 1), and a 10 ms sleep whenever it was empty
 *   poll100   the same with 100 ms
 *   notify    LISTEN pgqueue, queue_pop after each notification (the queue
 *             is created with notify => true)
 *
 * Both times are CLOCK_REALTIME on the same machine; a wake-up can beat the
 * pusher's own reply, so single samples may be slightly negative.  The
 * first two jobs per consumer warm its backend up (plans, caches) and are
 * not counted.
 * Prints p50, p99 and max in milliseconds.
 *
 * Usage: latency MODE CONSUMERS JOBS EVERY_MS   (libpq's PG* environment)
 * It drops and creates the queue "lat".
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/select.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "libpq-fe.h"

/* microseconds since the epoch */
static long long
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* connect or die */
static PGconn *
connect_db(void)
{
	PGconn	   *conn = PQconnectdb("");

	if (PQstatus(conn) != CONNECTION_OK)
	{
		fprintf(stderr, "connection failed: %s", PQerrorMessage(conn));
		exit(1);
	}
	return conn;
}

/* run a statement, die on error; returns the result */
static PGresult *
run(PGconn *conn, const char *sql)
{
	PGresult   *res = PQexec(conn, sql);

	if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		fprintf(stderr, "%s: %s", sql, PQerrorMessage(conn));
		exit(1);
	}
	return res;
}

/*
 * one consumer: print "job_id returned_at_us" for every job it gets, until
 * the parent ends it with SIGTERM
 */
static void
consume(const char *mode, FILE *out)
{
	PGconn	   *conn = connect_db();

	setvbuf(out, NULL, _IOLBF, 0);
	if (strcmp(mode, "notify") == 0)
		PQclear(run(conn, "LISTEN pgqueue"));
	for (;;)
	{
		PGresult   *res;

		if (strcmp(mode, "wait") == 0)
			res = run(conn, "SELECT job_id FROM pgqueue.queue_pop('lat', 1, wait => '200 ms')");
		else
			res = run(conn, "SELECT job_id FROM pgqueue.queue_pop('lat', 1)");
		if (PQntuples(res) == 1)
		{
			long long	t = now_us();
			char		ack[128];

			fprintf(out, "%s %lld\n", PQgetvalue(res, 0, 0), t);
			snprintf(ack, sizeof(ack), "SELECT pgqueue.queue_ack('lat', %s)", PQgetvalue(res, 0, 0));
			PQclear(res);
			PQclear(run(conn, ack));
			continue;
		}
		PQclear(res);
		if (strcmp(mode, "poll10") == 0)
			usleep(10000);
		else if (strcmp(mode, "poll100") == 0)
			usleep(100000);
		else if (strcmp(mode, "notify") == 0)
		{
			int			sock = PQsocket(conn);
			fd_set		fds;
			struct timeval tv = {0, 200000};
			PGnotify   *n;

			FD_ZERO(&fds);
			FD_SET(sock, &fds);
			if (select(sock + 1, &fds, NULL, NULL, &tv) > 0)
				PQconsumeInput(conn);
			while ((n = PQnotifies(conn)) != NULL)
				PQfreemem(n);
		}
	}
}

/* qsort order of long longs */
static int
cmp_ll(const void *a, const void *b)
{
	long long	x = *(const long long *) a;
	long long	y = *(const long long *) b;

	return x < y ? -1 : (x > y ? 1 : 0);
}

int
main(int argc, char **argv)
{
	const char *mode;
	int			consumers;
	int			jobs;
	int			every_ms;
	PGconn	   *conn;
	long long  *pushed_at;
	long long  *lat;
	int			nlat = 0;
	char		path[64];
	FILE	   *in;
	long long	id;
	long long	t;
	pid_t	   *pids;

	if (argc != 5)
	{
		fprintf(stderr, "usage: latency MODE CONSUMERS JOBS EVERY_MS\n");
		return 2;
	}
	mode = argv[1];
	consumers = atoi(argv[2]);
	jobs = atoi(argv[3]);
	every_ms = atoi(argv[4]);

	conn = connect_db();
	PQclear(run(conn, "SELECT pgqueue.queue_drop('lat', force => true)"
				 " WHERE EXISTS (SELECT 1 FROM pgqueue.queue WHERE name = 'lat')"));
	PQclear(run(conn, "SELECT pgqueue.queue_create('lat', notify => true)"));

	pids = calloc(consumers, sizeof(pid_t));
	for (int c = 0; c < consumers; c++)
	{
		pids[c] = fork();
		if (pids[c] == 0)
		{
			snprintf(path, sizeof(path), "/tmp/pgq-latency.%d", c);
			consume(mode, fopen(path, "w"));
		}
	}
	usleep(1000000);			/* let the consumers start waiting */

	pushed_at = calloc(jobs + 2 * consumers + 1, sizeof(long long));
	jobs += 2 * consumers;
	for (int i = 0; i < jobs; i++)
	{
		PGresult   *res = run(conn, "SELECT pgqueue.queue_push('lat', '{}')");

		id = atoll(PQgetvalue(res, 0, 0));
		t = now_us();
		if (id >= 1 && id <= jobs)
			pushed_at[id] = t;
		PQclear(res);
		usleep(every_ms * 1000);
	}
	usleep(1000000);			/* the last jobs */
	for (int c = 0; c < consumers; c++)
	{
		kill(pids[c], SIGTERM);
		waitpid(pids[c], NULL, 0);
	}

	lat = calloc(jobs, sizeof(long long));
	for (int c = 0; c < consumers; c++)
	{
		snprintf(path, sizeof(path), "/tmp/pgq-latency.%d", c);
		in = fopen(path, "r");
		while (in != NULL && fscanf(in, "%lld %lld", &id, &t) == 2)
			if (id > 2 * consumers && id <= jobs && pushed_at[id] != 0 && nlat < jobs)
				lat[nlat++] = t - pushed_at[id];
		if (in != NULL)
			fclose(in);
		unlink(path);
	}
	qsort(lat, nlat, sizeof(long long), cmp_ll);
	if (nlat == 0)
	{
		printf("%-8s consumers=%-3d no jobs received\n", mode, consumers);
		return 1;
	}
	printf("%-8s consumers=%-3d jobs=%-5d p50=%7.2f ms  p99=%7.2f ms  max=%7.2f ms\n",
		   mode, consumers, nlat, lat[nlat / 2] / 1000.0,
		   lat[(int) (nlat * 0.99)] / 1000.0, lat[nlat - 1] / 1000.0);
	PQfinish(conn);
	return 0;
}
