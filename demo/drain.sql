-- demo/drain.sql: run a consumer until nothing is left to do
DO $$
BEGIN
	FOR i IN 1..200 LOOP
		PERFORM demo_work(500);
		EXIT WHEN NOT EXISTS (SELECT 1 FROM pgqueue.jobs
							   WHERE queue = 'emails'
								 AND state IN ('available', 'scheduled', 'executing', 'failed'));
		PERFORM pg_sleep(0.2);
	END LOOP;
END
$$;
