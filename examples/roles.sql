-- examples/roles.sql: the roles of an application that uses pgqueue, as
-- the README shows them.  Run it as a superuser (or a role with CREATEROLE
-- that owns the queues) after CREATE EXTENSION pgqueue;
-- test/pgtap/12_privileges.sql runs this file as it is.

-- One role per duty; in production give them LOGIN and a password.
CREATE ROLE app_producer NOLOGIN;
CREATE ROLE app_consumer NOLOGIN;
CREATE ROLE ops_monitor NOLOGIN;
CREATE ROLE ops_admin NOLOGIN;

-- pgqueue's group roles hold the grants each duty needs, and no more.
GRANT pgqueue_producer TO app_producer;   -- queue_push, queue_push_batch
GRANT pgqueue_consumer TO app_consumer;   -- queue_pop, queue_ack, queue_fail, queue_extend, queue_release
GRANT pgqueue_monitor TO ops_monitor;     -- SELECT on the views: queues, jobs, job_history, blocks, stats, maintenance
GRANT pgqueue_admin TO ops_admin;         -- queue management, retry, abort, maintain, queue_grant

-- Optional, per queue: only app_producer (and roles that inherit its
-- privileges) may push into queue "emails"; the queue's owner and
-- superusers keep every right.  Rights never granted on a queue stay open.
SELECT pgqueue.queue_create('emails');
SELECT pgqueue.queue_grant('emails', 'app_producer', '{push}');
