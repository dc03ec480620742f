-- demo/drain.sql: run a consumer until nothing is left to do
DO $$
DECLARE
	idle integer := 0;
BEGIN
	FOR i IN 1..200 LOOP
		PERFORM demo_work(500);
		/* three looks in a row: one can miss jobs a compaction is moving */
		IF EXISTS (SELECT 1 FROM pgqueue.jobs
					WHERE queue = 'emails'
					  AND state IN ('available', 'scheduled', 'executing', 'failed')) THEN
			idle := 0;
		ELSE
			idle := idle + 1;
		END IF;
		EXIT WHEN idle = 3;
		PERFORM pg_sleep(0.2);
	END LOOP;
END
$$;
