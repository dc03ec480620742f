/*
 * 0.1.0--0.2.0.post.sql: the last part of the upgrade from 0.1.0, run once
 * the functions of 0.2.0 are in place: every block gets a table of claim
 * records, so that pops claim its never-claimed jobs in ranges.  Like the
 * other tables of a block, it belongs to its queue, not to the extension
 * (pg_dump dumps it, and only queue_drop drops it).  Jobs and archive
 * tables lose the statistics of payload, as new ones are made.
 */
DO $$
DECLARE
	b record;
BEGIN
	FOR b IN SELECT * FROM pgqueue.block bl ORDER BY bl.queue_id, bl.block_no LOOP
		PERFORM pgqueue_internal._block_claims(b.queue_id, b.block_no, true);
		EXECUTE pg_catalog.format('ALTER EXTENSION pgqueue DROP TABLE %s',
								  pgqueue_internal._rel('c', b.queue_id, b.block_no));
		EXECUTE pg_catalog.format('ALTER TABLE %s ALTER COLUMN payload SET STATISTICS 0',
								  pgqueue_internal._rel('j', b.queue_id, b.block_no));
	END LOOP;
	FOR b IN SELECT * FROM pgqueue.archive ar ORDER BY ar.queue_id, ar.day LOOP
		EXECUTE pg_catalog.format('ALTER TABLE %s ALTER COLUMN payload SET STATISTICS 0',
								  pgqueue_internal._archive_rel(b.queue_id, b.day));
	END LOOP;
END
$$;
SELECT pgqueue_internal._cache_invalidate();
