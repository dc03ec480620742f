/*
 * maintenance.sql: what the maintenance worker and pgqueue.maintain() do:
 * lease expiry, block bookkeeping, compaction, archiving.  The duties are
 * listed once, by _maint_operations; the worker runs each one in a
 * transaction of its own, maintain() in a subtransaction, and both record
 * a queue's failure and retry that queue later (backoff) while going on
 * with the others.
 */

/*
 * _expire_leases: end the expired leases of one block, held by status rows
 * or by claim records (expire.c).  Each counts as a failed attempt: the job
 * becomes available at once, or aborted when its attempts are used up.
 * Returns the number expired.
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._expire_leases(queue_id integer, block_no integer)
RETURNS bigint
LANGUAGE c STRICT
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_expire_leases';

/* _archive_table: today's archive table of a queue, created if needed */
CREATE OR REPLACE FUNCTION pgqueue_internal._archive_table(queue_id integer)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
	today date := clock_timestamp()::date;
	a text := pgqueue_internal._archive_rel(queue_id, today);
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pgqueue.archive ar
				   WHERE ar.queue_id = _archive_table.queue_id AND ar.day = today) THEN
		EXECUTE format('CREATE TABLE %s (CHECK (queue_id = %s), PRIMARY KEY (job_id, seq))'
					   ' INHERITS (pgqueue_data.archive_store)', a, queue_id);
		/* like a block's jobs (_block_tables) */
		EXECUTE format('ALTER TABLE %s ALTER COLUMN payload SET STATISTICS 0', a);
		INSERT INTO pgqueue.archive (queue_id, day) VALUES (_archive_table.queue_id, today);
	END IF;
	RETURN a;
END
$$;

/*
 * _unseen: whether a row (by its xmin) was written by a transaction snap did
 * not see, other than this one; a subtransaction counts as its top-level
 * transaction.  For compaction, with a snap taken in the same transaction.
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._unseen(x xid, snap pg_snapshot)
RETURNS boolean
LANGUAGE c STRICT STABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_unseen';

/*
 * _wait_writers: wait until every other transaction that holds a lock to
 * write into one of rels now has ended; false if some has not after
 * timeout_ms.  Polls, takes no lock; for compaction.
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._wait_writers(rels regclass[], timeout_ms integer)
RETURNS boolean
LANGUAGE c STRICT
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_wait_writers';

/*
 * _changed_tids: the tids of the rows on the pages of table rel whose LSN is
 * past since (every row inserted after WAL position since is among them);
 * for compaction
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._changed_tids(rel regclass, since pg_lsn)
RETURNS tid[]
LANGUAGE c STRICT
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_changed_tids';

/*
 * _block_states: the state of every job of a block (job_id, state, at), as
 * _job_state gives it, read at once (claim.c); for compaction, which names
 * the block (its new block covers the ids of the old ones until it commits)
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._block_states(queue_id integer, block_no integer,
														  OUT job_id bigint, OUT state "char",
														  OUT at timestamptz)
RETURNS SETOF record
LANGUAGE c STRICT STABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_block_states_sql';

/*
 * _block_claim_rows: the transitions that claim records hold of every job
 * of a block, as status rows, as _job_claim_rows gives them, read at once
 * (for compaction, like _block_states)
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._block_claim_rows(queue_id integer, block_no integer)
RETURNS SETOF pgqueue_data.status_store
LANGUAGE c STRICT STABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_block_claim_rows';

/*
 * _block_keep: how many jobs a block has, and how many compaction would
 * keep live: unfinished, or finished after cutoff (within the retention).
 * A block cannot qualify at threshold while fewer of its jobs finished by
 * cutoff than its status rows and claim records say at most (those
 * finished, and those its claims took): then the planner's count of its
 * jobs (reltuples) stands for the count, and nothing more is read, so that
 * a block of backlog costs two small reads a round.  Otherwise the kept
 * ones are counted from the states of all its jobs (_block_states), up to
 * clearly too many for the block to qualify (keep is then 2 more than the
 * most it could keep: 1 more could still pass the float division of the
 * test).
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._block_keep(queue_id integer, block_no integer, cutoff timestamptz,
									threshold double precision,
									OUT total bigint, OUT keep bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
	j text := pgqueue_internal._rel('j', queue_id, block_no);
	finished bigint;
	estimate real;
BEGIN
	SELECT c.reltuples INTO estimate FROM pg_class c WHERE c.oid = j::regclass;
	IF pg_relation_size(pgqueue_internal._rel('s', queue_id, block_no)) = 0
	   AND pg_relation_size(pgqueue_internal._rel('c', queue_id, block_no)) = 0 THEN
		finished := 0;
	ELSE
		EXECUTE format($q$
			SELECT (SELECT count(*) FROM %1$s s WHERE s.state IN ('d', 'x') AND s.at <= $1)
				 + (SELECT coalesce(sum(c.n), 0) FROM %2$s c WHERE c.seq = 0 AND c.at <= $1)$q$,
			pgqueue_internal._rel('s', queue_id, block_no),
			pgqueue_internal._rel('c', queue_id, block_no))
		INTO finished USING cutoff;
	END IF;
	IF estimate > 0 AND finished < threshold * estimate THEN
		total := estimate::bigint;
		keep := greatest(total - finished, 0);
		RETURN;
	END IF;
	EXECUTE format('SELECT count(*) FROM %s', j) INTO total;
	SELECT count(*) INTO keep FROM (
	  SELECT 1 FROM pgqueue_internal._block_states(_block_keep.queue_id, _block_keep.block_no) l
	   WHERE l.state IS NULL OR l.state NOT IN ('d', 'x') OR l.at > cutoff
	   ORDER BY l.job_id DESC LIMIT floor(total * (1 - threshold))::bigint + 2) k;
END
$$;

/*
 * _compact_carry: for a compaction, carry over to its new block (tables nj,
 * ns, nc) the rows of block b on pages changed after WAL position since
 * that were written by transactions snap did not see: such status rows and
 * claim records, the jobs the status rows belong to and jobs pushed late.
 * (A claim record written since concerns jobs that were kept: unfinished.)
 * Rows already there are skipped.  Returns the number of jobs added.  The
 * rows are read by tid: the planner, which takes each tid for a random
 * page read, would rather scan a whole table for a few thousand of them,
 * though they lie on a few pages.
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._compact_carry(b pgqueue.block, nj text, ns text, nc text,
									   snap pg_snapshot, since pg_lsn)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
SET enable_seqscan = off
AS $$
DECLARE
	j text := pgqueue_internal._rel('j', b.queue_id, b.block_no);
	s text := pgqueue_internal._rel('s', b.queue_id, b.block_no);
	c text := pgqueue_internal._rel('c', b.queue_id, b.block_no);
	jt tid[] := pgqueue_internal._changed_tids(j::regclass, since);
	st tid[] := pgqueue_internal._changed_tids(s::regclass, since);
	ct tid[] := pgqueue_internal._changed_tids(c::regclass, since);
	n bigint;
BEGIN
	EXECUTE format($q$
		WITH d AS (
			SELECT s.* FROM %2$s s
			 WHERE s.ctid = ANY ($3) AND pgqueue_internal._unseen(s.xmin, $1)),
		ids AS (
			SELECT d.job_id FROM d
			UNION
			SELECT j.job_id FROM %1$s j
			 WHERE j.ctid = ANY ($2) AND pgqueue_internal._unseen(j.xmin, $1)),
		dj AS (
			INSERT INTO %3$s
			SELECT j.queue_id, j.job_id, j.key, j.priority, j.run_at, j.enqueued_at, j.payload,
				   j.tenant
			  FROM %1$s j
			 WHERE j.job_id = ANY (ARRAY(SELECT ids.job_id FROM ids))
			ON CONFLICT DO NOTHING
			RETURNING 1),
		ds AS (
			INSERT INTO %4$s SELECT * FROM d ON CONFLICT DO NOTHING),
		dc AS (
			INSERT INTO %6$s
			SELECT c.* FROM %5$s c
			 WHERE c.ctid = ANY ($4) AND pgqueue_internal._unseen(c.xmin, $1)
			ON CONFLICT DO NOTHING)
		SELECT count(*) FROM dj$q$,
		j, s, nj, ns, c, nc)
	INTO n USING snap, jt, st, ct;
	RETURN n;
END
$$;

/*
 * _compact_step: one unit of compaction for a queue, in the caller's
 * transaction.  Finds the first contiguous run of closed blocks whose jobs
 * are mostly done with (finished longer ago than the queue's retention: at
 * least compact_threshold of them), moves the others (unfinished or
 * recently finished) with their status rows and claim records into one new
 * block keeping their ids, archives (or discards) the transitions of all
 * other jobs with their columns, and drops the old tables.  A run with nothing to keep is archived and
 * dropped without a new block.  The copying happens before the run is
 * fenced; under the fence only the rows on pages changed since the step
 * began are looked at.  The whole step is one transaction: a crash
 * anywhere leaves the blocks as they were.  Waits a bounded time for
 * writers and takes its locks with a short lock_timeout, and gives up
 * ('busy') rather than stall pushes and pops.  Needs READ COMMITTED (a
 * snapshot per statement).
 * Returns what it did, or NULL when nothing qualifies.
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._compact_step(queue_id integer)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
	q pgqueue.queue;
	b pgqueue.block;
	run pgqueue.block[] := '{}';
	rels regclass[] := '{}';
	run_keep bigint := 0;
	run_jobs bigint := 0;
	run_bytes bigint := 0;
	keep bigint;
	total bigint;
	bytes bigint;
	budget bigint := pg_size_bytes(current_setting('shared_buffers')) / 4;
	cutoff timestamptz := clock_timestamp();
	new_no integer;
	nj text;
	ns text;
	nc text;
	a text;
	moved bigint := 0;
	archived bigint := 0;
	n bigint;
	saved_timeout text;
	since pg_lsn;
	snap pg_snapshot;
	caught_up pg_snapshot;
BEGIN
	IF current_setting('transaction_isolation') <> 'read committed' THEN
		RAISE EXCEPTION 'compaction requires the READ COMMITTED isolation level'
			USING ERRCODE = 'feature_not_supported';
	END IF;
	SELECT * INTO q FROM pgqueue.queue qu WHERE qu.queue_id = _compact_step.queue_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'queue with id % does not exist', _compact_step.queue_id
			USING ERRCODE = 'undefined_object';
	END IF;
	cutoff := cutoff - q.retention;

	/*
	 * The first qualifying run of adjacent closed blocks, among the 8 oldest
	 * closed blocks that may qualify (a block created after the cutoff holds
	 * no job that finished before it).  The fence reads every page of the
	 * run's tables, and dropping them takes time too: a run has at most 4
	 * blocks, and more than one only while their tables fit in a quarter of
	 * shared_buffers, so that the fence finds them there.  What is seen
	 * here only chooses the run: the copy below decides what to keep.
	 */
	FOR b IN SELECT * FROM pgqueue.block bl
			  WHERE bl.queue_id = _compact_step.queue_id AND bl.state <> 'open'
				AND bl.created_at <= cutoff
			  ORDER BY bl.first_id LIMIT 8 LOOP
		bytes := pg_relation_size(pgqueue_internal._rel('j', b.queue_id, b.block_no)::regclass)
			+ pg_relation_size(pgqueue_internal._rel('s', b.queue_id, b.block_no)::regclass)
			+ pg_relation_size(pgqueue_internal._rel('c', b.queue_id, b.block_no)::regclass);
		EXIT WHEN cardinality(run) > 0
			AND (run[cardinality(run)].last_id + 1 <> b.first_id
				 OR cardinality(run) = 4 OR run_bytes + bytes > budget);
		SELECT k.total, k.keep INTO total, keep
		  FROM pgqueue_internal._block_keep(b.queue_id, b.block_no, cutoff, q.compact_threshold) k;
		IF (total = 0 OR (total - keep)::float8 / total >= q.compact_threshold)
			AND NOT (keep = total AND b.block_no < 0) THEN
			run := run || b;
			run_keep := run_keep + keep;
			run_jobs := run_jobs + total;
			run_bytes := run_bytes + bytes;
		ELSIF cardinality(run) > 0 THEN
			EXIT;
		END IF;
	END LOOP;
	IF cardinality(run) = 0 OR (cardinality(run) = 1 AND run_keep = run_jobs AND run_jobs > 0) THEN
		RETURN NULL;
	END IF;
	FOR i IN 1 .. cardinality(run) LOOP
		rels := rels || pgqueue_internal._rel('j', run[i].queue_id, run[i].block_no)::regclass
					 || pgqueue_internal._rel('s', run[i].queue_id, run[i].block_no)::regclass
					 || pgqueue_internal._rel('c', run[i].queue_id, run[i].block_no)::regclass;
	END LOOP;

	/*
	 * Copy before fencing.  Without blocking anyone: note the WAL position
	 * since, wait for the transactions that may write into the run now
	 * (they may have written before since), then take snap.  A row snap
	 * does not see was therefore inserted after since, on a page whose LSN
	 * is past since (every heap insert into a WAL-logged table stamps its
	 * page).  Then create the new block (not yet attached to the parent
	 * tables, whose lock a push that opens a block needs), copy the jobs to
	 * keep with their latest status and archive every other status row
	 * that snap sees; then carry over what snap did not see, on the pages
	 * changed since, as of the snapshot caught_up.  Last, fence the run
	 * (exclusive locks, taken with a short lock_timeout): no writer is
	 * left, and the rows caught_up did not see, on the pages changed since,
	 * are carried over.  The new block is then attached, or dropped if it
	 * got no job.  If the writers do not end in time or the locks cannot
	 * be had, the whole step rolls back: 'busy'.
	 */
	BEGIN
		since := pg_current_wal_insert_lsn();
		IF NOT pgqueue_internal._wait_writers(rels, 1000) THEN
			RAISE EXCEPTION USING ERRCODE = 'lock_not_available';
		END IF;
		/* the writers waited for (late pushes) may have made the run not worth it */
		FOR i IN 1 .. cardinality(run) LOOP
			SELECT k.total, k.keep INTO total, keep
			  FROM pgqueue_internal._block_keep(run[i].queue_id, run[i].block_no, cutoff,
												q.compact_threshold) k;
			IF total > 0 AND (total - keep)::float8 / total < q.compact_threshold THEN
				RETURN NULL;
			END IF;
		END LOOP;
		snap := pg_current_snapshot();
		IF q.archive THEN
			a := pgqueue_internal._archive_table(q.queue_id);
		END IF;
		SELECT least(min(bl.block_no), 0) - 1 INTO new_no FROM pgqueue.block bl
		 WHERE bl.queue_id = q.queue_id;
		PERFORM pgqueue_internal._block_tables(q.queue_id, new_no, run[1].first_id,
									  run[cardinality(run)].last_id, 'closed', false);
		nj := pgqueue_internal._rel('j', q.queue_id, new_no);
		ns := pgqueue_internal._rel('s', q.queue_id, new_no);
		nc := pgqueue_internal._rel('c', q.queue_id, new_no);
		PERFORM pgqueue_internal._fault('compact_created');

		FOR i IN 1 .. cardinality(run) LOOP
			/*
			 * keep: unfinished, or finished within the retention, with all
			 * their status rows and the claim records of their lanes whose
			 * ranges hold them (everything their states are made of)
			 */
			EXECUTE format($q$
				WITH k AS (
					SELECT j.queue_id, j.job_id, j.key, j.priority, j.run_at, j.enqueued_at,
						   j.payload, j.tenant
					  FROM %1$s j
					  JOIN pgqueue_internal._block_states($3, $2) l ON l.job_id = j.job_id
					 WHERE l.state IS NULL OR l.state NOT IN ('d', 'x') OR l.at > $1),
				kj AS (INSERT INTO %3$s SELECT * FROM k),
				ks AS (INSERT INTO %4$s SELECT s.* FROM %2$s s
						WHERE s.job_id IN (SELECT k.job_id FROM k)),
				kc AS (INSERT INTO %6$s SELECT c.* FROM %5$s c
						WHERE c.claim_id IN (
							SELECT h.claim_id FROM k
							 CROSS JOIN LATERAL (
								SELECT h.claim_id, h.hi FROM %5$s h
								 WHERE h.seq = 0 AND h.priority = k.priority
								   AND coalesce(h.tenant, '') = coalesce(k.tenant, '')
								   AND h.lo <= k.job_id
								 ORDER BY h.lo DESC LIMIT 1) h
							 WHERE h.hi >= k.job_id))
				SELECT count(*) FROM k$q$,
				pgqueue_internal._rel('j', run[i].queue_id, run[i].block_no),
				pgqueue_internal._rel('s', run[i].queue_id, run[i].block_no), nj, ns,
				pgqueue_internal._rel('c', run[i].queue_id, run[i].block_no), nc)
			INTO n USING cutoff, run[i].block_no, run[i].queue_id;
			moved := moved + n;
			PERFORM pgqueue_internal._fault('compact_copied');

			/*
			 * archive (or discard) the transitions of the other jobs, those
			 * of status rows and those their claim records hold, with the
			 * jobs' columns; rows snap did not see are carried over below
			 */
			EXECUTE format($q$
				WITH g AS (
					SELECT j.* FROM %1$s j
					 WHERE NOT EXISTS (SELECT 1 FROM %4$s m WHERE m.job_id = j.job_id)),
				r AS (
					SELECT s.queue_id, s.job_id, s.seq, s.state, s.attempt, s.fails, s.at,
						   s.due_at, s.error
					  FROM %2$s s
					 WHERE NOT pgqueue_internal._unseen(s.xmin, $2)
					   AND NOT EXISTS (SELECT 1 FROM %4$s m WHERE m.job_id = s.job_id)
					UNION ALL
					SELECT g.queue_id, g.job_id, c.seq, c.state, c.attempt, c.fails, c.at,
						   c.due_at, c.error
					  FROM g JOIN pgqueue_internal._block_claim_rows($5, $3) c
						ON c.job_id = g.job_id),
				x AS (
					INSERT INTO %3$s
					SELECT r.queue_id, r.job_id, r.seq, r.state, r.attempt, r.fails, r.at,
						   r.due_at, r.error, j.key, j.priority, j.enqueued_at, j.payload, $1,
						   j.tenant
					  FROM r JOIN %1$s j ON j.job_id = r.job_id
					 WHERE $4
					ON CONFLICT DO NOTHING
					RETURNING 1)
				SELECT CASE WHEN $4 THEN (SELECT count(*) FROM x) ELSE (SELECT count(*) FROM r) END$q$,
				pgqueue_internal._rel('j', run[i].queue_id, run[i].block_no),
				pgqueue_internal._rel('s', run[i].queue_id, run[i].block_no),
				coalesce(a, 'pgqueue_data.archive_store'), nj)
			INTO n USING clock_timestamp(), snap, run[i].block_no, q.archive, run[i].queue_id;
			archived := archived + n;
			PERFORM pgqueue_internal._fault('compact_archived');
		END LOOP;

		/* what changed since snap, as far as caught_up sees, still unfenced */
		caught_up := pg_current_snapshot();
		FOR i IN 1 .. cardinality(run) LOOP
			moved := moved + pgqueue_internal._compact_carry(run[i], nj, ns, nc, snap, since);
		END LOOP;
		PERFORM pgqueue_internal._fault('compact_caught_up');

		/* fence: no push or claim may change these blocks until commit */
		saved_timeout := current_setting('lock_timeout');
		PERFORM set_config('lock_timeout', '50ms', true);
		FOR i IN 1 .. cardinality(run) LOOP
			IF NOT pgqueue_internal._block_lock(run[i].queue_id, run[i].block_no, true) THEN
				RAISE EXCEPTION USING ERRCODE = 'lock_not_available';
			END IF;
			EXECUTE format('LOCK TABLE %s, %s, %s IN ACCESS EXCLUSIVE MODE',
						   pgqueue_internal._rel('j', run[i].queue_id, run[i].block_no),
						   pgqueue_internal._rel('s', run[i].queue_id, run[i].block_no),
						   pgqueue_internal._rel('c', run[i].queue_id, run[i].block_no));
		END LOOP;
		PERFORM pgqueue_internal._fault('compact_locked');

		/* what changed since caught_up: on the pages changed since, too */
		FOR i IN 1 .. cardinality(run) LOOP
			moved := moved + pgqueue_internal._compact_carry(run[i], nj, ns, nc, caught_up, since);
		END LOOP;

		/* only now lock the parent tables, which a push that opens a block needs */
		IF moved > 0 THEN
			PERFORM pgqueue_internal._block_inherit(q.queue_id, new_no);
		ELSE
			PERFORM pgqueue_internal._block_drop(q.queue_id, new_no);
		END IF;
		PERFORM set_config('lock_timeout', saved_timeout, true);
	EXCEPTION WHEN lock_not_available THEN
		RETURN 'busy';
	END;

	FOR i IN 1 .. cardinality(run) LOOP
		PERFORM pgqueue_internal._block_drop(run[i].queue_id, run[i].block_no);
	END LOOP;
	PERFORM pgqueue_internal._fault('compact_swapped');
	RETURN format('%s blocks %s..%s: %s jobs moved%s, %s status rows %s',
				  cardinality(run), run[1].block_no, run[cardinality(run)].block_no, moved,
				  CASE WHEN moved > 0 THEN ' to block ' || new_no ELSE '' END,
				  archived,
				  CASE WHEN q.archive THEN 'archived' ELSE 'discarded' END);
END
$$;

/*
 * _archive_expire: drop a queue's archive tables whose day is older than
 * its archive retention.  Returns how many.
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._archive_expire(queue_id integer)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
	a record;
	n integer := 0;
BEGIN
	FOR a IN SELECT ar.* FROM pgqueue.archive ar JOIN pgqueue.queue q USING (queue_id)
			  WHERE ar.queue_id = _archive_expire.queue_id
				AND ar.day < (clock_timestamp() - q.archive_retention)::date LOOP
		EXECUTE format('DROP TABLE %s', pgqueue_internal._archive_rel(a.queue_id, a.day));
		DELETE FROM pgqueue.archive ar WHERE ar.queue_id = a.queue_id AND ar.day = a.day;
		PERFORM pgqueue_internal._fault('archive_dropped');
		n := n + 1;
	END LOOP;
	RETURN n;
END
$$;

/*
 * _maintain_queue: the bookkeeping part of a round for one queue: expire
 * leases; close blocks whose id range is used up; mark closed blocks with no
 * unfinished job done, so that pop skips them; and create the next block
 * once the open one is half full, so that pushes do not run DDL.
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._maintain_queue(queue_id integer)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
	q pgqueue.queue;
	b pgqueue.block;
	last_value bigint;
	expired bigint := 0;
	closed integer := 0;
	done integer := 0;
	created integer := 0;
	newest integer;
	saved_timeout text;
BEGIN
	SELECT * INTO q FROM pgqueue.queue qu WHERE qu.queue_id = _maintain_queue.queue_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'queue with id % does not exist', _maintain_queue.queue_id
			USING ERRCODE = 'undefined_object';
	END IF;
	PERFORM pgqueue_internal._fault('maintain_queue:' || q.name);
	EXECUTE format('SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM pgqueue_data.%I',
				   'seq_' || q.queue_id) INTO last_value;
	FOR b IN SELECT * FROM pgqueue.block bl
			  WHERE bl.queue_id = q.queue_id AND bl.state <> 'done'
			  ORDER BY bl.first_id LOOP
		expired := expired + pgqueue_internal._expire_leases(b.queue_id, b.block_no);
		IF b.state = 'open' AND last_value >= b.last_id THEN
			UPDATE pgqueue.block bl SET state = 'closed'
			 WHERE bl.queue_id = b.queue_id AND bl.block_no = b.block_no;
			b.state := 'closed';
			closed := closed + 1;
		END IF;
		/*
		 * A closed block is done when no job in it is unfinished.  The
		 * block lock fences off pushes that have not committed yet, and the
		 * row lock on the block serializes with queue_retry reviving it;
		 * both are taken, and the block looked at again, only when it
		 * seems done, so that a round writes nothing for a block of
		 * backlog.
		 */
		IF b.state = 'closed' AND NOT pgqueue_internal._block_busy(b.queue_id, b.block_no)
		   AND pgqueue_internal._block_lock(b.queue_id, b.block_no, true) THEN
			PERFORM 1 FROM pgqueue.block bl
			  WHERE bl.queue_id = b.queue_id AND bl.block_no = b.block_no
			  FOR UPDATE SKIP LOCKED;
			IF FOUND AND NOT pgqueue_internal._block_busy(b.queue_id, b.block_no) THEN
				UPDATE pgqueue.block bl SET state = 'done'
				 WHERE bl.queue_id = b.queue_id AND bl.block_no = b.block_no;
				PERFORM pgqueue_internal._forget(pgqueue_internal._seq(b.queue_id), b.block_no);
				done := done + 1;
			END IF;
		END IF;
	END LOOP;

	/*
	 * The block after the one the sequence is in, once that is half used.
	 * The parent tables first, which a push transaction that made a block
	 * holds until it commits, then the block's lock, each waited for half a
	 * second at most (less than the default deadlock_timeout): a long push
	 * transaction does not stall the round, and one that goes on into the
	 * new block while this round holds its lock finds it free again before
	 * its deadlock check could abort it.  The push makes the block then.
	 */
	newest := (greatest(last_value - 1, 0) / q.block_size)::integer;
	IF last_value - newest::bigint * q.block_size >= q.block_size / 2
		AND NOT EXISTS (SELECT 1 FROM pgqueue.block bl
						 WHERE bl.queue_id = q.queue_id AND bl.block_no = newest + 1) THEN
		saved_timeout := current_setting('lock_timeout');
		PERFORM set_config('lock_timeout', '500ms', true);
		BEGIN
			LOCK TABLE ONLY pgqueue_data.job_store, ONLY pgqueue_data.status_store,
				ONLY pgqueue_data.claim_store IN SHARE UPDATE EXCLUSIVE MODE;
			PERFORM pgqueue_internal._block_create(q.queue_id, newest + 1);
			PERFORM pgqueue_internal._fault('block_created');
			created := 1;
		EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
			NULL;
		END;
		PERFORM set_config('lock_timeout', saved_timeout, true);
	END IF;
	IF closed > 0 OR done > 0 THEN
		PERFORM pgqueue_internal._cache_invalidate();
	END IF;
	RETURN jsonb_build_object('expired_leases', expired, 'closed_blocks', closed,
							  'done_blocks', done, 'created_blocks', created);
END
$$;

/*
 * _block_busy: whether a block holds an unfinished job (busy.c: one look at
 * one job while the block stays busy)
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._block_busy(queue_id integer, block_no integer)
RETURNS boolean
LANGUAGE c STRICT STABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_block_busy';

/*
 * _forget_gone: a duty of the database: forget what shared memory keeps of
 * queues that are gone
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._forget_gone()
RETURNS text
LANGUAGE sql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
	SELECT pgqueue_internal._forget_dropped(
		ARRAY(SELECT pgqueue_internal._seq(q.queue_id)::oid FROM pgqueue.queue q));
	SELECT NULL::text
$$;

/*
 * _maint_operations: the duties of one maintenance round, in order: those
 * of the database (queue_id NULL; in a round of all queues only), then per
 * queue (all of them, or the one named) the bookkeeping of
 * _maintain_queue, compaction steps (repeated while one finds work),
 * expiry of old archive tables, and _maint_done to record that the queue's
 * round went well.  Without a name, queues whose maintenance failed
 * recently are left out until their retry time.  Each duty is a function
 * of pgqueue_internal taking the queue id (none for those of the
 * database) and returning text: NULL (or 'busy') when a repeated duty has
 * nothing more to do.
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._maint_operations(queue text)
RETURNS TABLE (queue_id integer, queue_name text, op text, repeat boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
	SELECT NULL::integer, NULL::text, '_forget_gone', false
	 WHERE _maint_operations.queue IS NULL
	UNION ALL
	(SELECT q.queue_id, q.name, o.op, o.repeat
	  FROM pgqueue.queue q
	  LEFT JOIN pgqueue.queue_maintenance m ON m.queue_id = q.queue_id
	 CROSS JOIN (VALUES (1, '_maintain_queue', false), (2, '_compact_step', true),
						(3, '_archive_expire', false), (4, '_maint_done', false))
			 AS o(n, op, repeat)
	 WHERE CASE WHEN _maint_operations.queue IS NULL
				THEN m.retry_at IS NULL OR m.retry_at <= clock_timestamp()
				ELSE q.name = _maint_operations.queue END
	 ORDER BY q.queue_id, o.n)
$$;

/*
 * _maint_failed: record that a duty of a queue's maintenance failed: count
 * the failures in a row and leave the queue alone for a backoff that
 * doubles with each, up to five minutes
 */
CREATE OR REPLACE FUNCTION pgqueue_internal._maint_failed(queue_id integer, error text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
	INSERT INTO pgqueue.queue_maintenance AS m
		(queue_id, failures, last_error, last_error_at, retry_at)
	SELECT q.queue_id, 1, error, clock_timestamp(), clock_timestamp() + interval '1 second'
	  FROM pgqueue.queue q WHERE q.queue_id = _maint_failed.queue_id
	ON CONFLICT ON CONSTRAINT queue_maintenance_pkey DO UPDATE
	   SET failures = m.failures + 1, last_error = excluded.last_error,
		   last_error_at = excluded.last_error_at,
		   retry_at = excluded.last_error_at
					  + least(300, 2 ^ least(m.failures, 9)) * interval '1 second'
$$;

/* _maint_done: a queue's round went well; forget its failures */
CREATE OR REPLACE FUNCTION pgqueue_internal._maint_done(queue_id integer)
RETURNS text
LANGUAGE sql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
	DELETE FROM pgqueue.queue_maintenance m WHERE m.queue_id = _maint_done.queue_id;
	SELECT NULL::text
$$;

/*
 * maintain: one round of maintenance for one queue or all of them, in one
 * transaction: every duty of _maint_operations, each in a subtransaction.
 * A queue whose duty fails is recorded (pgqueue.maintenance) and left for
 * this round; the others go on.  A queue's maintenance running elsewhere
 * (the worker's duty, another maintain()) is waited for before the queue's
 * first duty, which then sees what it did.  Idempotent; returns what it did
 * as jsonb, with the failures under "errors".
 */
CREATE OR REPLACE FUNCTION pgqueue_internal.maintain(queue text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
DECLARE
	o record;
	r text;
	failed integer := NULL;
	locked integer := NULL;
	expired bigint := 0;
	closed integer := 0;
	done integer := 0;
	created integer := 0;
	compacted text[] := '{}';
	dropped integer := 0;
	errors jsonb := '[]';
BEGIN
	IF queue IS NOT NULL THEN
		PERFORM pgqueue_internal._queue_id(queue);
	END IF;
	FOR o IN SELECT * FROM pgqueue_internal._maint_operations(queue) LOOP
		CONTINUE WHEN o.queue_id = failed;
		/* before a queue's first duty, wait for its maintenance elsewhere */
		IF o.queue_id IS DISTINCT FROM locked THEN
			PERFORM pgqueue_internal._maint_lock(o.queue_id, false);
			locked := o.queue_id;
		END IF;
		LOOP
			BEGIN
				EXECUTE format('SELECT pgqueue_internal.%I(%s)::text', o.op,
							   CASE WHEN o.queue_id IS NULL THEN '' ELSE '$1' END)
				INTO r USING o.queue_id;
			EXCEPTION WHEN OTHERS THEN
				failed := o.queue_id;
				IF o.queue_id IS NOT NULL THEN
					PERFORM pgqueue_internal._maint_failed(o.queue_id, SQLERRM);
				END IF;
				errors := errors || jsonb_build_object('queue', o.queue_name, 'duty', o.op,
													   'error', SQLERRM);
				EXIT;
			END;
			CASE o.op
				WHEN '_maintain_queue' THEN
					expired := expired + (r::jsonb->>'expired_leases')::bigint;
					closed := closed + (r::jsonb->>'closed_blocks')::integer;
					done := done + (r::jsonb->>'done_blocks')::integer;
					created := created + (r::jsonb->>'created_blocks')::integer;
				WHEN '_compact_step' THEN
					IF r IS NOT NULL AND r <> 'busy' THEN
						compacted := compacted || (o.queue_name || ': ' || r);
					END IF;
				WHEN '_archive_expire' THEN
					dropped := dropped + r::integer;
				ELSE
			END CASE;
			EXIT WHEN NOT o.repeat OR r IS NULL OR r = 'busy';
		END LOOP;
	END LOOP;
	RETURN jsonb_build_object('expired_leases', expired, 'closed_blocks', closed,
							  'done_blocks', done, 'created_blocks', created,
							  'compacted', to_jsonb(compacted),
							  'archives_dropped', dropped, 'errors', errors);
END
$$;

CREATE OR REPLACE FUNCTION pgqueue.maintain(queue text DEFAULT NULL)
RETURNS jsonb
LANGUAGE c
SET search_path = pg_catalog, pgqueue, pg_temp
AS 'MODULE_PATHNAME', 'pgq_admin_call';
