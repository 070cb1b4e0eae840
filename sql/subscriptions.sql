-- subscriptions: table changes that dispatch jobs in the writer's transaction.
CREATE SCHEMA sub;
CREATE TABLE sub.orders (id int PRIMARY KEY, total numeric NOT NULL, note text);
SELECT jobq.register_kind('sub.order_changed', queue => 'sub');
SELECT jobq.register_kind('sub.order_created', queue => 'sub');

SELECT jobq.subscribe('sub.orders', 'sub.orders', 'sub.order_changed');
SELECT name, source, kind, events, trigger_name FROM jobq.subscriptions;
SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger
 WHERE tgrelid = 'sub.orders'::regclass;

-- One job per changed row, with the operation, the table and both rows.
INSERT INTO sub.orders VALUES (1, 10.50, 'first'), (2, 20, NULL);
UPDATE sub.orders SET total = 11 WHERE id = 1;
DELETE FROM sub.orders WHERE id = 2;
SELECT kind, jsonb_pretty(payload) FROM jobq.jobs WHERE queue = 'sub' ORDER BY id;

-- A rolled-back write leaves no job.
BEGIN;
INSERT INTO sub.orders VALUES (3, 30);
SELECT count(*) AS jobs_inside FROM jobq.jobs WHERE queue = 'sub';
ROLLBACK;
SELECT count(*) AS jobs_after_rollback FROM jobq.jobs WHERE queue = 'sub';

-- An error in the trigger is the writer's error: the write fails.
SET jobq.max_payload_size = '1kB';
SELECT * FROM error_of($$INSERT INTO sub.orders VALUES (4, 40, repeat('x', 2000))$$);
RESET jobq.max_payload_size;
SELECT count(*) AS order_4 FROM sub.orders WHERE id = 4;

-- Replacing a subscription keeps one trigger, with the new events.
SELECT jobq.subscribe('sub.orders', 'sub.orders', 'sub.order_created', '{insert}');
SELECT name, kind, events FROM jobq.subscriptions;
SELECT count(*) AS triggers FROM pg_trigger WHERE tgrelid = 'sub.orders'::regclass;
INSERT INTO sub.orders VALUES (5, 50);
UPDATE sub.orders SET total = 51 WHERE id = 5;
SELECT kind, payload->>'op' AS op, payload->'new'->>'id' AS order_id
  FROM jobq.jobs WHERE queue = 'sub' ORDER BY jobs.id DESC LIMIT 1;

-- A kind that a subscription uses cannot be unregistered.
SELECT jobq.register_kind('sub.quiet', queue => 'sub');
SELECT jobq.subscribe('sub.quiet', 'sub.orders', 'sub.quiet', '{delete}');
SELECT * FROM error_of($$SELECT jobq.unregister_kind('sub.quiet')$$);
SELECT jobq.unsubscribe('sub.quiet');
SELECT jobq.unregister_kind('sub.quiet');

-- Unsubscribing drops the trigger; writes go on without jobs.
SELECT jobq.unsubscribe('sub.orders');
SELECT count(*) AS triggers FROM pg_trigger WHERE tgrelid = 'sub.orders'::regclass;
SELECT count(*) AS jobs_before FROM jobq.jobs WHERE queue = 'sub' \gset
INSERT INTO sub.orders VALUES (6, 60);
SELECT count(*) - :jobs_before AS new_jobs FROM jobq.jobs WHERE queue = 'sub';

-- Dropping the table forgets its subscriptions; other tables keep theirs.
CREATE TABLE sub.refunds (id int PRIMARY KEY);
SELECT jobq.subscribe('sub.orders', 'sub.orders', 'sub.order_changed');
SELECT jobq.subscribe('sub.refunds', 'sub.refunds', 'sub.order_changed', '{delete,insert}');
SELECT name, events FROM jobq.subscriptions ORDER BY name;
DROP TABLE sub.orders;
SELECT name FROM jobq.subscriptions ORDER BY name;
-- A trigger dropped by hand takes its subscription too.
DROP TRIGGER "jobq_sub.refunds" ON sub.refunds;
SELECT count(*) AS subscriptions FROM jobq.subscriptions;

-- Bad input.
CREATE TABLE sub.t (id int);
CREATE VIEW sub.v AS SELECT 1 AS one;
CREATE TEMP TABLE tmp_t (id int);
SELECT * FROM error_of($$SELECT jobq.subscribe(NULL, 'sub.t', 'sub.order_changed')$$);
SELECT * FROM error_of($$SELECT jobq.subscribe('s', NULL, 'sub.order_changed')$$);
SELECT * FROM error_of($$SELECT jobq.subscribe('s', 'sub.t', NULL)$$);
SELECT * FROM error_of($$SELECT jobq.subscribe('s', 'sub.t', 'sub.order_changed', NULL)$$);
SELECT * FROM error_of($$SELECT jobq.subscribe('Bad Name', 'sub.t', 'sub.order_changed')$$);
SELECT * FROM error_of(format('SELECT jobq.subscribe(%L, %L, %L)', repeat('a', 59), 'sub.t', 'sub.order_changed'));
SELECT * FROM error_of($$SELECT jobq.subscribe('s', 'sub.t', 'sub.no_such_kind')$$);
SELECT * FROM error_of($$SELECT jobq.subscribe('s', 'sub.t', 'Bad Kind')$$);
SELECT * FROM error_of($$SELECT jobq.subscribe('s', 'sub.t', 'sub.order_changed', '{}')$$);
SELECT * FROM error_of($$SELECT jobq.subscribe('s', 'sub.t', 'sub.order_changed', '{truncate}')$$);
SELECT * FROM error_of($$SELECT jobq.subscribe('s', 'sub.t', 'sub.order_changed', '{INSERT}')$$);
SELECT * FROM error_of($$SELECT jobq.subscribe('s', 'sub.t', 'sub.order_changed', '{insert,insert}')$$);
SELECT * FROM error_of($$SELECT jobq.subscribe('s', 'sub.t', 'sub.order_changed', '{insert,NULL}')$$);
SELECT * FROM error_of($$SELECT jobq.subscribe('s', 'sub.v', 'sub.order_changed')$$);
SELECT * FROM error_of($$SELECT jobq.subscribe('s', 'tmp_t', 'sub.order_changed')$$);
SELECT * FROM error_of($$SELECT jobq.subscribe('s', 'jobq.job', 'sub.order_changed')$$);
SELECT * FROM error_of($$SELECT jobq.subscribe('s', 12345678::oid::regclass, 'sub.order_changed')$$);
SELECT * FROM error_of($$SELECT jobq.unsubscribe('no.such')$$);
SELECT * FROM error_of($$SELECT jobq.unsubscribe(NULL)$$);
-- A trigger of that name that is not jobq's is not replaced.
CREATE FUNCTION sub.noop() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$;
CREATE TRIGGER "jobq_s" AFTER INSERT ON sub.t FOR EACH ROW EXECUTE FUNCTION sub.noop();
SELECT * FROM error_of($$SELECT jobq.subscribe('s', 'sub.t', 'sub.order_changed')$$);
SELECT count(*) AS subscriptions FROM jobq.subscriptions;

-- Subscribing needs the TRIGGER privilege on the table, not ownership.
CREATE ROLE sub_admin IN ROLE jobq_admin;
GRANT USAGE ON SCHEMA sub TO sub_admin;
SET ROLE sub_admin;
SELECT * FROM error_of($$SELECT jobq.subscribe('s2', 'sub.t', 'sub.order_changed')$$);
RESET ROLE;
GRANT TRIGGER ON sub.t TO sub_admin;
SET ROLE sub_admin;
SELECT jobq.subscribe('s2', 'sub.t', 'sub.order_changed');
SELECT created_by = 'sub_admin' AS by_sub_admin FROM jobq.subscriptions WHERE name = 's2';
RESET ROLE;
-- A writer needs no right on jobq: the trigger enqueues for it.
CREATE ROLE sub_writer;
GRANT USAGE ON SCHEMA sub TO sub_writer;
GRANT INSERT ON sub.t TO sub_writer;
SET ROLE sub_writer;
INSERT INTO sub.t VALUES (7);
RESET ROLE;
SELECT payload->>'subscription' AS subscription, payload->'new' AS new
  FROM jobq.jobs WHERE kind = 'sub.order_changed' ORDER BY id DESC LIMIT 1;
-- The payload is built with the writer's rights, never jobq's: a column
-- type's cast to json runs as the writer.
CREATE TYPE sub.mood AS ENUM ('calm');
CREATE FUNCTION sub.mood_json(sub.mood) RETURNS json LANGUAGE sql
    AS $$ SELECT pg_catalog.to_json(current_user::text) $$;
CREATE CAST (sub.mood AS json) WITH FUNCTION sub.mood_json(sub.mood);
ALTER TABLE sub.t ADD COLUMN mood sub.mood;
SET ROLE sub_writer;
INSERT INTO sub.t VALUES (8, 'calm');
RESET ROLE;
SELECT payload->'new' AS new FROM jobq.jobs
 WHERE kind = 'sub.order_changed' ORDER BY id DESC LIMIT 1;
SELECT jobq.unsubscribe('s2');

DROP SCHEMA sub CASCADE;
REVOKE jobq_admin FROM sub_admin;
DROP ROLE sub_admin;
DROP ROLE sub_writer;
