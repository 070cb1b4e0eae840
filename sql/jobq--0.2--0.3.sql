/* sql/jobq--0.2--0.3.sql: update jobq from version 0.2 to 0.3 */

\echo Use "ALTER EXTENSION jobq UPDATE TO '0.3'" to load this file. \quit

/*
 * Before 0.3, CREATE EXTENSION adopted a schema jobq that another role had
 * made, and that role kept it: it could drop or replace jobq's tables, or
 * put objects there that this script's names would find.  Such an
 * installation is not updated, before anything else runs, until a
 * superuser has checked the schema and given it to the extension's owner.
 */
DO $guard$
DECLARE
    ext_owner pg_catalog.oid;
    schema_oid pg_catalog.oid;
BEGIN
    SELECT e.extowner, e.extnamespace INTO ext_owner, schema_oid
      FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'jobq';
    IF (SELECT n.nspowner FROM pg_catalog.pg_namespace n WHERE n.oid OPERATOR(pg_catalog.=) schema_oid)
       OPERATOR(pg_catalog.<>) ext_owner THEN
        RAISE EXCEPTION USING
            ERRCODE = 'insufficient_privilege',
            MESSAGE = 'schema "jobq" is not owned by the owner of extension "jobq"',
            DETAIL = pg_catalog.format('Schema "jobq" belongs to role %s.',
                (SELECT n.nspowner::pg_catalog.regrole FROM pg_catalog.pg_namespace n
                  WHERE n.oid OPERATOR(pg_catalog.=) schema_oid)),
            HINT = 'Check its contents, then give it to the extension''s owner with ALTER SCHEMA jobq OWNER TO, and try again.';
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_namespace n,
                      pg_catalog.aclexplode(n.nspacl) a
                WHERE n.oid OPERATOR(pg_catalog.=) schema_oid
                  AND a.privilege_type OPERATOR(pg_catalog.=) 'CREATE'
                  AND a.grantee OPERATOR(pg_catalog.<>) ext_owner) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'insufficient_privilege',
            MESSAGE = 'other roles may create objects in schema "jobq"',
            HINT = 'Revoke CREATE on schema jobq from every role but its owner, check its contents, then try again.';
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_class x WHERE x.relnamespace OPERATOR(pg_catalog.=) schema_oid
                  AND x.relowner OPERATOR(pg_catalog.<>) ext_owner)
       OR EXISTS (SELECT FROM pg_catalog.pg_proc x WHERE x.pronamespace OPERATOR(pg_catalog.=) schema_oid
                  AND x.proowner OPERATOR(pg_catalog.<>) ext_owner)
       OR EXISTS (SELECT FROM pg_catalog.pg_type x WHERE x.typnamespace OPERATOR(pg_catalog.=) schema_oid
                  AND x.typowner OPERATOR(pg_catalog.<>) ext_owner)
       OR EXISTS (SELECT FROM pg_catalog.pg_operator x WHERE x.oprnamespace OPERATOR(pg_catalog.=) schema_oid
                  AND x.oprowner OPERATOR(pg_catalog.<>) ext_owner)
       OR EXISTS (SELECT FROM pg_catalog.pg_collation x WHERE x.collnamespace OPERATOR(pg_catalog.=) schema_oid
                  AND x.collowner OPERATOR(pg_catalog.<>) ext_owner)
       OR EXISTS (SELECT FROM pg_catalog.pg_conversion x WHERE x.connamespace OPERATOR(pg_catalog.=) schema_oid
                  AND x.conowner OPERATOR(pg_catalog.<>) ext_owner)
       OR EXISTS (SELECT FROM pg_catalog.pg_opclass x WHERE x.opcnamespace OPERATOR(pg_catalog.=) schema_oid
                  AND x.opcowner OPERATOR(pg_catalog.<>) ext_owner)
       OR EXISTS (SELECT FROM pg_catalog.pg_opfamily x WHERE x.opfnamespace OPERATOR(pg_catalog.=) schema_oid
                  AND x.opfowner OPERATOR(pg_catalog.<>) ext_owner)
       OR EXISTS (SELECT FROM pg_catalog.pg_ts_config x WHERE x.cfgnamespace OPERATOR(pg_catalog.=) schema_oid
                  AND x.cfgowner OPERATOR(pg_catalog.<>) ext_owner)
       OR EXISTS (SELECT FROM pg_catalog.pg_ts_dict x WHERE x.dictnamespace OPERATOR(pg_catalog.=) schema_oid
                  AND x.dictowner OPERATOR(pg_catalog.<>) ext_owner)
       OR EXISTS (SELECT FROM pg_catalog.pg_statistic_ext x WHERE x.stxnamespace OPERATOR(pg_catalog.=) schema_oid
                  AND x.stxowner OPERATOR(pg_catalog.<>) ext_owner)
       OR EXISTS (SELECT FROM pg_catalog.pg_extension x
                   WHERE x.extnamespace OPERATOR(pg_catalog.=) schema_oid
                     AND x.extname OPERATOR(pg_catalog.<>) 'jobq') THEN
        RAISE EXCEPTION USING
            ERRCODE = 'insufficient_privilege',
            MESSAGE = 'schema "jobq" holds objects that the owner of extension "jobq" does not own',
            HINT = 'Check them, drop those that are not jobq''s, then try again.';
    END IF;
END
$guard$;

/*
 * Schema jobq becomes a member of the extension, as in a fresh install of
 * 0.3, so that DROP EXTENSION drops it.  A schema cannot be a member of the
 * extension recorded in it, so the extension moves to pg_catalog first:
 * ALTER EXTENSION SET SCHEMA cannot move one that is not relocatable, so
 * its row and its dependency on its schema are changed in place (this
 * script runs as a superuser, as every jobq script does).
 */
UPDATE pg_catalog.pg_extension
   SET extnamespace = 'pg_catalog'::pg_catalog.regnamespace
 WHERE extname OPERATOR(pg_catalog.=) 'jobq';
DELETE FROM pg_catalog.pg_depend d
 WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
   AND d.objid OPERATOR(pg_catalog.=)
       (SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'jobq')
   AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_namespace'::pg_catalog.regclass
   AND d.deptype OPERATOR(pg_catalog.=) 'n';
ALTER EXTENSION jobq ADD SCHEMA jobq;

/*
 * A kind fixes its handler's search_path, as CREATE FUNCTION ... SET does.
 * Kinds registered before had their handlers resolve names with the
 * worker's settings; they get the default path as it resolves today for
 * their role ("$user" as the role's schema if there is one, public), with
 * pg_temp last.
 * Register a kind again to give it the path of the registering session.
 */
ALTER TABLE jobq.kind ADD COLUMN search_path text;
UPDATE jobq.kind k
   SET search_path = pg_catalog.concat_ws(', ',
           (SELECT pg_catalog.quote_ident(n.nspname) FROM pg_catalog.pg_namespace n
             WHERE n.nspname OPERATOR(pg_catalog.=) pg_catalog.pg_get_userbyid(k.owner::pg_catalog.oid)),
           (SELECT 'public' FROM pg_catalog.pg_namespace n
             WHERE n.nspname OPERATOR(pg_catalog.=) 'public'),
           'pg_temp');
ALTER TABLE jobq.kind ALTER COLUMN search_path SET NOT NULL;

/* The kind jobq.compensate() enqueues for a failed or held job of this one. */
ALTER TABLE jobq.kind ADD COLUMN compensate_with text;

CREATE OR REPLACE VIEW jobq.kinds AS
    SELECT name, handler, queue, max_attempts, backoff_base, backoff_max, timeout,
           side_effects, retry_safe, owner, created_at, updated_at, search_path,
           compensate_with
      FROM jobq.kind;

/*
 * A dropped table or trigger takes its subscription with it.  The
 * subscription's trigger is the one on its table that calls jobq.dispatch()
 * with the subscription's name first, whatever it is called now.  It runs
 * at every DROP, as whoever drops: every name is qualified, and pg_temp
 * comes last, or a temporary view could stand in for pg_trigger.
 */
CREATE OR REPLACE FUNCTION jobq.forget_dropped_subscriptions()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM jobq.subscription s
     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_trigger t
                        WHERE t.tgrelid OPERATOR(pg_catalog.=) s.source::pg_catalog.oid
                          AND t.tgfoid OPERATOR(pg_catalog.=)
                              pg_catalog.to_regprocedure('jobq.dispatch()')
                          AND pg_catalog.split_part(pg_catalog.encode(t.tgargs, 'escape'),
                                                    E'\\000', 1) OPERATOR(pg_catalog.=) s.name);
END
$$;

/*
 * Operation ids are per role: jobq.once() records current_user with each,
 * and one role's ids never answer for another's (nor can another role
 * learn them, or make a worker wait for its uncommitted one).  Ids
 * recorded before have no role ('-'): who recorded them is unknown, so
 * they keep answering for every role, until jobq.retention removes them.
 */
ALTER TABLE jobq.operation ADD COLUMN recorded_by pg_catalog.regrole NOT NULL
    DEFAULT 0::pg_catalog.oid::pg_catalog.regrole;
ALTER TABLE jobq.operation DROP CONSTRAINT operation_pkey;
ALTER TABLE jobq.operation ADD CONSTRAINT operation_pkey PRIMARY KEY (recorded_by, operation_id);

/*
 * Schedules have owners, as kinds do: replacing, pausing, resuming,
 * running or dropping one needs its owner's privileges, and each change is
 * logged in jobq.operator_log, which names the schedule.  A schedule made
 * before belongs to the role that created it (created_by) if that role
 * still exists, else to the extension's owner (superusers only, then).
 */
ALTER TABLE jobq.schedule ADD COLUMN owner pg_catalog.regrole;
UPDATE jobq.schedule s
   SET owner = coalesce(
           (SELECT r.oid FROM pg_catalog.pg_roles r
             WHERE r.rolname OPERATOR(pg_catalog.=) s.created_by),
           (SELECT e.extowner FROM pg_catalog.pg_extension e
             WHERE e.extname OPERATOR(pg_catalog.=) 'jobq'))::pg_catalog.regrole;
ALTER TABLE jobq.schedule ALTER COLUMN owner SET NOT NULL;

ALTER TABLE jobq.operator_action ADD COLUMN schedule text;

CREATE OR REPLACE VIEW jobq.operator_log AS
    SELECT id, at, role, action, job_ids, queue, reason, schedule FROM jobq.operator_action;

CREATE OR REPLACE VIEW jobq.schedules AS
    SELECT s.name, s.cron, s.timezone, s.kind, s.payload, s.overlap, s.misfire,
           s.concurrency_key, s.paused, s.next_fire_at, s.last_fire_at,
           s.last_outcome, s.last_job_id, j.state AS last_job_state,
           s.last_evaluated_at, s.created_by, s.created_at, s.updated_at, s.owner
      FROM jobq.schedule s
      LEFT JOIN jobq.job j ON j.id = s.last_job_id;

/*
 * A subscription's trigger is the one on its table that calls
 * jobq.dispatch() with the subscription's name first: a renamed trigger
 * stays the subscription's, and jobq.subscriptions shows its name now.
 */
CREATE OR REPLACE VIEW jobq.subscriptions AS
    SELECT s.name, s.source, s.kind, s.events,
           (SELECT t.tgname FROM pg_catalog.pg_trigger t
             WHERE t.tgrelid = s.source::pg_catalog.oid
               AND t.tgfoid = pg_catalog.to_regprocedure('jobq.dispatch()')
               AND pg_catalog.split_part(pg_catalog.encode(t.tgargs, 'escape'), E'\\000', 1)
                   = s.name) AS trigger_name,
           s.created_by, s.created_at
      FROM jobq.subscription s;

/*
 * Leases that fit how clients connect.  The lease token is the lease: any
 * session may report with it, so a client behind a connection pooler, or
 * psql, can claim in one session and complete in another.  A lease lasts
 * "lease" (jobq.default_lease, or the kind's timeout if shorter, when
 * NULL) from the claim or the last heartbeat; bound_to_session also ends it
 * when the claiming backend exits, as every claim did before.  Outside a
 * handler, step_result and external_key take the job's lease token (from
 * any session), or none in the session the lease is bound to or as an
 * operator of the job's queue.
 */
ALTER TABLE jobq.lease ALTER COLUMN holder_pid DROP NOT NULL;

DROP FUNCTION jobq.claim(text, text, integer, interval);
CREATE FUNCTION jobq.claim(
    queue               text DEFAULT 'default',
    worker              text DEFAULT NULL,
    max_jobs            integer DEFAULT 1,
    lease               interval DEFAULT NULL,
    bound_to_session    boolean DEFAULT false)
RETURNS SETOF jobq.claimed_job
AS 'MODULE_PATHNAME', 'jobq_claim_v2'
LANGUAGE C CALLED ON NULL INPUT VOLATILE PARALLEL UNSAFE ROWS 10;
REVOKE ALL ON FUNCTION jobq.claim(text, text, integer, interval, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jobq.claim(text, text, integer, interval, boolean) TO jobq_worker;

/*
 * A claim whose row lock is the lease: the jobs are locked for the calling
 * transaction and not changed; the transaction completes or fails them
 * with a NULL lease_token (txclaim.c, README "Claiming jobs").
 */
CREATE FUNCTION jobq.claim_in_transaction(
    queue               text DEFAULT 'default',
    worker              text DEFAULT NULL,
    max_jobs            integer DEFAULT 1)
RETURNS SETOF jobq.claimed_job
AS 'MODULE_PATHNAME', 'jobq_claim_in_transaction'
LANGUAGE C CALLED ON NULL INPUT VOLATILE PARALLEL UNSAFE ROWS 10;
REVOKE ALL ON FUNCTION jobq.claim_in_transaction(text, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jobq.claim_in_transaction(text, text, integer) TO jobq_worker;

DROP FUNCTION jobq.step_result(bigint, text);
CREATE FUNCTION jobq.step_result(job_id bigint, step text, lease_token bigint DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'jobq_step_result_v2'
LANGUAGE C CALLED ON NULL INPUT STABLE PARALLEL UNSAFE;

DROP FUNCTION jobq.external_key(bigint, text);
CREATE FUNCTION jobq.external_key(job_id bigint, step text DEFAULT '',
                                  lease_token bigint DEFAULT NULL)
RETURNS text
AS 'MODULE_PATHNAME', 'jobq_external_key_v2'
LANGUAGE C CALLED ON NULL INPUT VOLATILE PARALLEL UNSAFE;

REVOKE ALL ON FUNCTION jobq.step_result(bigint, text, bigint),
    jobq.external_key(bigint, text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jobq.step_result(bigint, text, bigint),
    jobq.external_key(bigint, text, bigint) TO PUBLIC;

/*
 * Queues and who may use them.  Only administrators make queues: a
 * producer naming one that does not exist gets an error, never a new
 * queue.  The queues that exist stay.
 */
CREATE FUNCTION jobq.create_queue(queue text, if_not_exists boolean DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'jobq_create_queue'
LANGUAGE C CALLED ON NULL INPUT VOLATILE PARALLEL UNSAFE;

REVOKE ALL ON FUNCTION jobq.create_queue(text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jobq.create_queue(text, boolean) TO jobq_admin;

/*
 * Limits of concurrency keys: a key may run up to max_running jobs at once,
 * each holding a slot of its own.
 */
ALTER TABLE jobq.concurrency_lock ADD COLUMN slot integer NOT NULL DEFAULT 0;
ALTER TABLE jobq.concurrency_lock DROP CONSTRAINT concurrency_lock_pkey,
    ADD PRIMARY KEY (key, slot);
CREATE TABLE jobq.concurrency_limit (
    key             text PRIMARY KEY,
    max_running     integer NOT NULL,
    set_at          timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('jobq.concurrency_limit', '');
REVOKE ALL ON jobq.concurrency_limit FROM PUBLIC;
CREATE VIEW jobq.concurrency_limits AS
    SELECT key, max_running, set_at FROM jobq.concurrency_limit;
GRANT SELECT ON jobq.concurrency_limits TO jobq_operator;

/*
 * Rate limits of concurrency keys, set by jobq.set_rate_limit(): at most
 * max_starts jobs with the key start within any span of "per".  starts
 * holds the start times of the last max_starts jobs that started, oldest
 * first: another may start once the oldest of them is "per" old.
 */
CREATE TABLE jobq.rate_limit (
    key             text PRIMARY KEY,
    max_starts      integer NOT NULL,
    per             interval NOT NULL,
    starts          timestamptz[] NOT NULL DEFAULT '{}',
    set_at          timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('jobq.rate_limit', '');
REVOKE ALL ON jobq.rate_limit FROM PUBLIC;
CREATE VIEW jobq.rate_limits AS
    SELECT key, max_starts, per,
           (SELECT pg_catalog.count(*) FROM pg_catalog.unnest(starts) s
             WHERE s > pg_catalog.now() OPERATOR(pg_catalog.-) per) AS starts_in_window,
           CASE WHEN pg_catalog.cardinality(starts) >= max_starts
                THEN starts[1] OPERATOR(pg_catalog.+) per END AS next_start_at,
           set_at
      FROM jobq.rate_limit;
GRANT SELECT ON jobq.rate_limits TO jobq_operator;

CREATE FUNCTION jobq.set_limit(concurrency_key text, max_running integer)
RETURNS void
AS 'MODULE_PATHNAME', 'jobq_set_limit'
LANGUAGE C CALLED ON NULL INPUT VOLATILE PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION jobq.set_limit(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jobq.set_limit(text, integer) TO jobq_admin;

/*
 * At most max_starts jobs with this concurrency key start within any span
 * of "per" (NULL and NULL: no rate limit).  For jobq_admin, as set_limit.
 */
CREATE FUNCTION jobq.set_rate_limit(concurrency_key text, max_starts integer, per interval)
RETURNS void
AS 'MODULE_PATHNAME', 'jobq_set_rate_limit'
LANGUAGE C CALLED ON NULL INPUT VOLATILE PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION jobq.set_rate_limit(text, integer, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jobq.set_rate_limit(text, integer, interval) TO jobq_admin;

/*
 * Compensation: a kind may name the kind that undoes its effects, and
 * jobq.compensate() enqueues it for a failed or held job.
 */
DROP FUNCTION jobq.register_kind(text, pg_catalog.regprocedure, text, integer, interval,
                                 interval, interval, text[], boolean);
CREATE FUNCTION jobq.register_kind(
    kind            text,
    handler         pg_catalog.regprocedure DEFAULT NULL,
    queue           text DEFAULT 'default',
    max_attempts    integer DEFAULT 25,
    backoff_base    interval DEFAULT '1 second',
    backoff_max     interval DEFAULT '1 hour',
    timeout         interval DEFAULT '5 minutes',
    side_effects    text[] DEFAULT '{}',
    retry_safe      boolean DEFAULT false,
    compensate_with text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'jobq_register_kind'
LANGUAGE C CALLED ON NULL INPUT VOLATILE PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION jobq.register_kind(text, pg_catalog.regprocedure, text, integer,
    interval, interval, interval, text[], boolean, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jobq.register_kind(text, pg_catalog.regprocedure, text, integer,
    interval, interval, interval, text[], boolean, text) TO jobq_admin;

CREATE FUNCTION jobq.compensate(id bigint, reason text DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'jobq_compensate'
LANGUAGE C CALLED ON NULL INPUT VOLATILE PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION jobq.compensate(bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jobq.compensate(bigint, text) TO jobq_operator, PUBLIC;

/*
 * A job's external keys come from its id and a random nonce drawn at
 * enqueue: after an asynchronous failover the new primary hands out again
 * the ids of the commits it never received, and a key from the id alone
 * named two jobs.  Jobs enqueued before have no nonce and keep the keys
 * they had (an API may have seen them).
 */
ALTER TABLE jobq.job ADD COLUMN key_nonce bigint;

/*
 * Dependencies: enqueue(..., after => ids) and enqueue_many(..., after =>
 * ids) make jobs that wait until the jobs named have completed.  The new
 * states cannot be named in this script (an enum value added in a
 * transaction is not usable before it commits): views compare them as
 * text.
 */
ALTER TYPE jobq.job_state ADD VALUE 'waiting';
ALTER TYPE jobq.job_state ADD VALUE 'blocked';

ALTER TABLE jobq.job ADD COLUMN waiting_for integer,
    ADD COLUMN blocked_by integer,
    ADD COLUMN has_dependents boolean;

CREATE TABLE jobq.job_dependency (
    job_id          bigint NOT NULL,
    after_id        bigint NOT NULL,
    completed_at    timestamptz,
    blocking        boolean NOT NULL DEFAULT false, /* counted in job_id's blocked_by */
    CONSTRAINT job_dependency_pkey PRIMARY KEY (job_id, after_id)
);
CREATE INDEX job_dependency_after_idx ON jobq.job_dependency (after_id);
REVOKE ALL ON jobq.job_dependency FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('jobq.job_dependency', '');

CREATE FUNCTION jobq.dependency_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'jobq_dependency_changed'
LANGUAGE C;
REVOKE ALL ON FUNCTION jobq.dependency_changed() FROM PUBLIC;

CREATE TRIGGER dependency_changed AFTER UPDATE OF state ON jobq.job
    FOR EACH ROW WHEN (NEW.has_dependents AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION jobq.dependency_changed();
ALTER TABLE jobq.job ENABLE ALWAYS TRIGGER dependency_changed;

DROP FUNCTION jobq.enqueue(text, jsonb, text, timestamptz, integer, text, text);
CREATE FUNCTION jobq.enqueue(
    kind            text,
    payload         jsonb DEFAULT '{}',
    idempotency_key text DEFAULT NULL,
    run_at          timestamptz DEFAULT pg_catalog.now(),
    priority        integer DEFAULT 0,
    queue           text DEFAULT NULL,
    concurrency_key text DEFAULT NULL,
    after           bigint[] DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'jobq_enqueue'
LANGUAGE C CALLED ON NULL INPUT VOLATILE PARALLEL UNSAFE;

DROP FUNCTION jobq.enqueue_many(text, jsonb[], text[], timestamptz, integer, text);
CREATE FUNCTION jobq.enqueue_many(
    kind                text,
    payloads            jsonb[],
    idempotency_keys    text[] DEFAULT NULL,
    run_at              timestamptz DEFAULT pg_catalog.now(),
    priority            integer DEFAULT 0,
    queue               text DEFAULT NULL,
    after               bigint[] DEFAULT NULL)
RETURNS SETOF bigint
AS 'MODULE_PATHNAME', 'jobq_enqueue_many'
LANGUAGE C CALLED ON NULL INPUT VOLATILE PARALLEL UNSAFE ROWS 1000;
REVOKE ALL ON FUNCTION jobq.enqueue(text, jsonb, text, timestamptz, integer, text, text, bigint[]),
    jobq.enqueue_many(text, jsonb[], text[], timestamptz, integer, text, bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    jobq.enqueue(text, jsonb, text, timestamptz, integer, text, text, bigint[]),
    jobq.enqueue_many(text, jsonb[], text[], timestamptz, integer, text, bigint[])
    TO jobq_producer;

/*
 * Per-queue privileges: produce (enqueue into it), work (claim its jobs,
 * report on them, run them) and operate (read its jobs, act on them, pause
 * it), granted to roles by jobq.grant() and taken back by jobq.revoke().
 * A role has a privilege on a queue through a grant to a role whose
 * privileges it has, or through the privilege's shorthand role, which
 * stands for every queue: jobq_producer, jobq_worker, jobq_operator.  Rows
 * of roles dropped since grant nothing and are forgotten at the next
 * grant or revoke.
 */
CREATE TABLE jobq.queue_grant (
    queue_id    integer NOT NULL,           /* jobq.queue.id */
    privilege   text NOT NULL,              /* produce | work | operate */
    grantee     pg_catalog.regrole NOT NULL,
    granted_by  name NOT NULL,
    granted_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT queue_grant_pkey PRIMARY KEY (queue_id, privilege, grantee)
);

SELECT pg_catalog.pg_extension_config_dump('jobq.queue_grant', '');

CREATE FUNCTION jobq."grant"(queue text, role pg_catalog.regrole, privileges text[])
RETURNS void
AS 'MODULE_PATHNAME', 'jobq_grant'
LANGUAGE C CALLED ON NULL INPUT VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION jobq."revoke"(queue text, role pg_catalog.regrole,
                              privileges text[] DEFAULT '{all}')
RETURNS void
AS 'MODULE_PATHNAME', 'jobq_revoke'
LANGUAGE C CALLED ON NULL INPUT VOLATILE PARALLEL UNSAFE;

/*
 * The grants: all of them for members of jobq_operator, a role's own (and
 * those of the roles whose privileges it has) for anyone else.
 */
CREATE VIEW jobq.queue_privileges WITH (security_barrier) AS
    SELECT q.name AS queue, g.grantee, g.privilege, g.granted_by, g.granted_at
      FROM jobq.queue_grant g
      JOIN jobq.queue q ON q.id = g.queue_id
     WHERE (SELECT pg_catalog.pg_has_role('jobq_operator', 'USAGE'))
        OR pg_catalog.pg_has_role(g.grantee::pg_catalog.oid, 'USAGE');

REVOKE ALL ON jobq.queue_grant FROM PUBLIC;
REVOKE ALL ON FUNCTION jobq."grant"(text, pg_catalog.regrole, text[]),
    jobq."revoke"(text, pg_catalog.regrole, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jobq."grant"(text, pg_catalog.regrole, text[]),
    jobq."revoke"(text, pg_catalog.regrole, text[]) TO jobq_admin;
GRANT SELECT ON jobq.queue_privileges TO PUBLIC;

/*
 * The functions that touch a queue's jobs check the caller's privilege on
 * the queue themselves, so PUBLIC may execute them: a role granted a
 * privilege on one queue needs nothing else.  The four roles keep their own
 * EXECUTE grants, so revoking these from PUBLIC limits jobq to them.
 */
GRANT EXECUTE ON FUNCTION
    jobq.enqueue(text, jsonb, text, timestamptz, integer, text, text, bigint[]),
    jobq.enqueue_many(text, jsonb[], text[], timestamptz, integer, text, bigint[]),
    jobq.claim(text, text, integer, interval, boolean),
    jobq.claim_in_transaction(text, text, integer),
    jobq.complete(bigint, bigint, jsonb),
    jobq.complete_many(bigint[], bigint[]),
    jobq.fail(bigint, bigint, text, interval),
    jobq.heartbeat(bigint, bigint, interval),
    jobq.snooze(bigint, bigint, interval),
    jobq.retry(bigint, text, boolean),
    jobq.retry_failed(text, timestamptz, text),
    jobq.cancel(bigint, text),
    jobq.discard(bigint, text),
    jobq.resolve(bigint, text),
    jobq.pause_queue(text, text),
    jobq.resume_queue(text, text),
    jobq.run_pending(integer)
    TO PUBLIC;

/*
 * Every attempt of a job with its timing, worker and outcome, and every
 * operator action on it, oldest first, for a reader who may operate the
 * job's queue (42501 otherwise).  The actions on a job that no longer
 * exists are for members of jobq_operator.
 * It was a SECURITY DEFINER SQL function, which cannot tell who calls it.
 */
CREATE OR REPLACE FUNCTION jobq.history(id bigint)
RETURNS TABLE (at timestamptz, attempt integer, event text, worker text,
               duration interval, detail text)
AS 'MODULE_PATHNAME', 'jobq_history'
LANGUAGE C CALLED ON NULL INPUT STABLE PARALLEL UNSAFE ROWS 20;

/*
 * Every job, live or retained, of the queues the reader may operate (every
 * queue for members of jobq_operator).  The views that show jobs are
 * security barriers: a reader's own conditions, and the functions in them,
 * see only the rows the view lets through.  The lease token is the lease's
 * secret (it lets a session report on the job): it is NULL here but for
 * superusers.
 */
CREATE OR REPLACE VIEW jobq.jobs WITH (security_barrier) AS
    SELECT j.id, j.kind, q.name AS queue, j.state, j.priority, j.attempt,
           j.max_attempts, j.run_at, j.idempotency_key, j.payload, j.result,
           j.last_error, j.created_at, j.started_at, j.finished_at,
           CASE WHEN (SELECT r.rolsuper FROM pg_catalog.pg_roles r
                       WHERE r.rolname = CURRENT_USER)
                THEN j.lease_token END AS lease_token,
           j.lease_expires_at, j.heartbeat_at, j.worker,
           j.holder_pid, j.concurrency_key
      FROM jobq.job j
      JOIN jobq.queue q ON q.id = j.queue_id
     WHERE (SELECT pg_catalog.pg_has_role('jobq_operator', 'USAGE'))
        OR j.queue_id IN (SELECT g.queue_id FROM jobq.queue_grant g
                           WHERE g.privilege = 'operate'
                             AND pg_catalog.pg_has_role(g.grantee::pg_catalog.oid, 'USAGE'));

/*
 * Per queue, kind and state: how many jobs, and how late the ready ones
 * are, for the queues the reader may operate.
 */
CREATE OR REPLACE VIEW jobq.overview WITH (security_barrier) AS
    WITH live AS (
        SELECT queue_id, kind, 'pending'::jobq.job_state AS state, run_at AS ready_since
          FROM jobq.job WHERE lane = 'r' AND in_db
        UNION ALL
        SELECT queue_id, kind, 'pending', run_at
          FROM jobq.job WHERE lane = 'r' AND NOT in_db
        UNION ALL
        SELECT queue_id, kind, 'pending', NULL
          FROM jobq.job WHERE lane = 's'
        UNION ALL
        SELECT queue_id, kind, state, NULL
          FROM jobq.job WHERE lane = 'a'
        UNION ALL
        SELECT j.queue_id, j.kind, j.state, NULL
          FROM (SELECT DISTINCT u.id FROM jobq.lease l
                 CROSS JOIN LATERAL pg_catalog.unnest(l.job_ids) AS u(id)) leased
          JOIN jobq.job j ON j.id = leased.id
         WHERE j.state = 'running'
    )
    SELECT q.name AS queue, j.kind, j.state,
           pg_catalog.count(*) AS jobs,
           pg_catalog.count(j.ready_since) AS ready,
           pg_catalog.now() - pg_catalog.min(j.ready_since) AS oldest_ready_age,
           q.paused AS queue_paused
      FROM live j
      JOIN jobq.queue q ON q.id = j.queue_id
     WHERE (SELECT pg_catalog.pg_has_role('jobq_operator', 'USAGE'))
        OR j.queue_id IN (SELECT g.queue_id FROM jobq.queue_grant g
                           WHERE g.privilege = 'operate'
                             AND pg_catalog.pg_has_role(g.grantee::pg_catalog.oid, 'USAGE'))
     GROUP BY q.name, j.kind, j.state, q.paused;

/* Failed and held jobs: the work that waits for an operator. */
CREATE OR REPLACE VIEW jobq.failures WITH (security_barrier) AS
    SELECT j.id, j.kind, q.name AS queue, j.state, j.attempt, j.max_attempts,
           j.last_error, e.sqlstate, e.failed_at, j.idempotency_key, j.payload,
           k.compensate_with,
           (SELECT jk.job_id FROM jobq.job_key jk
             WHERE jk.kind = k.compensate_with AND jk.key = 'compensate:' || j.id)
             AS compensation_job,
           CASE WHEN j.has_dependents THEN
             (SELECT pg_catalog.count(*)::integer FROM jobq.job_dependency d
                JOIN jobq.job w ON w.id = d.job_id
               WHERE d.after_id = j.id AND d.completed_at IS NULL
                 AND w.state::text IN ('waiting', 'blocked'))
           ELSE 0 END AS blocked_jobs
      FROM jobq.job j
      JOIN jobq.queue q ON q.id = j.queue_id
      LEFT JOIN jobq.kind k ON k.name = j.kind
      LEFT JOIN LATERAL (
            SELECT je.sqlstate, je.failed_at FROM jobq.job_error je
             WHERE je.job_id = j.id
             ORDER BY je.failed_at DESC LIMIT 1) e ON true
     WHERE j.lane = 'a'
       AND ((SELECT pg_catalog.pg_has_role('jobq_operator', 'USAGE'))
            OR j.queue_id IN (SELECT g.queue_id FROM jobq.queue_grant g
                               WHERE g.privilege = 'operate'
                                 AND pg_catalog.pg_has_role(g.grantee::pg_catalog.oid, 'USAGE')));

/*
 * Jobs running now: leased ones (external workers, and in-database jobs
 * with side effects), then those a background worker runs inside a batch
 * that has not committed yet.  Monitoring roles with pg_read_all_data see
 * every queue's (they may read jobq's tables anyway).
 */
CREATE OR REPLACE VIEW jobq.running WITH (security_barrier) AS
    SELECT r.id, r.kind, q.name AS queue, r.attempt, r.worker, r.pid, r.started_at,
           r.running_for, r.heartbeat_at, r.lease_expires_at, r.leased_at
      FROM (
        SELECT j.id, j.kind, j.queue_id, j.attempt, j.worker, j.holder_pid AS pid,
               j.started_at, pg_catalog.now() - j.started_at AS running_for,
               j.heartbeat_at, j.lease_expires_at, leased.leased_at
          FROM (SELECT u.id, pg_catalog.max(l.claimed_at) AS leased_at
                  FROM jobq.lease l
                 CROSS JOIN LATERAL pg_catalog.unnest(l.job_ids) AS u(id)
                 GROUP BY u.id) leased
          JOIN jobq.job j ON j.id = leased.id
         WHERE j.state = 'running'
        UNION ALL
        SELECT w.job_id, w.kind, k.queue_id, w.attempt, 'jobq worker', w.pid,
               w.started_at, pg_catalog.now() - w.started_at,
               NULL, NULL, NULL
          FROM jobq.worker_jobs() w
          LEFT JOIN jobq.kind k ON k.name = w.kind
         WHERE NOT EXISTS (SELECT FROM jobq.job j
                            WHERE j.id = w.job_id AND j.state = 'running')
      ) r
      LEFT JOIN jobq.queue q ON q.id = r.queue_id
     WHERE (SELECT pg_catalog.pg_has_role('jobq_operator', 'USAGE'))
        OR (SELECT pg_catalog.pg_has_role('pg_read_all_data', 'USAGE'))
        OR r.queue_id IN (SELECT g.queue_id FROM jobq.queue_grant g
                           WHERE g.privilege = 'operate'
                             AND pg_catalog.pg_has_role(g.grantee::pg_catalog.oid, 'USAGE'));

GRANT EXECUTE ON FUNCTION jobq.history(bigint) TO PUBLIC;
/*
 * The views of jobs show each reader the queues it may operate;
 * worker_jobs(), behind jobq.running, the jobs of those queues (it reads
 * them, so it runs in the leader only).  It returns at most one row per
 * worker slot; expecting 1000, the planner checked them against
 * jobq.running by reading every job.
 */
ALTER FUNCTION jobq.worker_jobs() ROWS 8 PARALLEL RESTRICTED;
GRANT SELECT ON jobq.jobs, jobq.overview, jobq.failures, jobq.running TO PUBLIC;

CREATE VIEW jobq.dependencies WITH (security_barrier) AS
    SELECT d.job_id, j.kind AS job_kind, j.state AS job_state,
           d.after_id, a.kind AS after_kind, a.state AS after_state, d.completed_at
      FROM jobq.job_dependency d
      JOIN jobq.jobs j ON j.id = d.job_id
      LEFT JOIN jobq.jobs a ON a.id = d.after_id;
GRANT SELECT ON jobq.dependencies TO jobq_operator, PUBLIC;
GRANT EXECUTE ON FUNCTION jobq.worker_jobs() TO PUBLIC;

/*
 * Monitoring: members of pg_read_all_stats (pg_monitor among them) see
 * the workers of every database, as in pg_stat_activity.
 */
GRANT EXECUTE ON FUNCTION jobq.worker_status() TO pg_read_all_stats;
GRANT SELECT ON jobq.workers TO pg_read_all_stats;

/*
 * Batch handlers: a kind's handler may take every job of the kind a batch
 * picked in one call, a jobq.batch_job[] (attempt: this one, 1 for the
 * first), and return a jobq.batch_result[] with a row per job: a NULL
 * error completes the job with its result, an error fails its attempt.
 */
CREATE TYPE jobq.batch_job AS (
    id                  bigint,
    kind                text,
    payload             jsonb,
    attempt             integer,
    idempotency_key     text
);

CREATE TYPE jobq.batch_result AS (
    id                  bigint,
    result              jsonb,
    error               text
);

/*
 * Cumulative counters per queue and kind, kept in shared memory (none
 * without preloading): updated when the transaction that caused them
 * commits, kept across clean restarts, discarded after a crash.  Each
 * reader sees the queues it may operate; members of pg_read_all_stats
 * (pg_monitor among them) see every queue's, for monitoring.
 * handler_buckets counts handler calls by time, at most 0.1, 0.25, 0.5, 1,
 * 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500 and 10000 ms, and more.
 */
CREATE FUNCTION jobq.stats_counters(
    OUT queue_id integer, OUT kind text,
    OUT enqueued bigint, OUT started bigint, OUT completed bigint, OUT failed bigint,
    OUT retried bigint, OUT held bigint, OUT exhausted bigint, OUT rescued bigint,
    OUT cancelled bigint, OUT timed_out bigint, OUT conflicts bigint,
    OUT handler_calls bigint, OUT handler_seconds double precision,
    OUT handler_buckets bigint[], OUT handler_p50 double precision,
    OUT handler_p95 double precision, OUT handler_p99 double precision,
    OUT since timestamptz, OUT updated_at timestamptz, OUT evicted bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'jobq_stats_counters'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED ROWS 50;

CREATE VIEW jobq.stats WITH (security_barrier) AS
    SELECT q.name AS queue, s.kind, s.enqueued, s.started, s.completed, s.failed,
           s.retried, s.held, s.exhausted, s.rescued, s.cancelled, s.timed_out,
           s.conflicts, s.handler_calls, s.handler_seconds, s.handler_buckets,
           s.handler_p50, s.handler_p95, s.handler_p99, s.since, s.updated_at,
           s.evicted
      FROM jobq.stats_counters() s
      JOIN jobq.queue q ON q.id = s.queue_id;

/*
 * Remove this database's counters of the queues the caller may operate;
 * returns how many queue and kind entries went.
 */
CREATE FUNCTION jobq.stats_reset()
RETURNS integer
AS 'MODULE_PATHNAME', 'jobq_stats_reset'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;

/*
 * Per queue, what waits in it now: ready jobs and how long the oldest has
 * been due, jobs scheduled for later, leased jobs, held and failed ones.
 * It reads the ready, scheduled and attention indexes and the lease table,
 * never the finished jobs, so its cost follows the live jobs, not the
 * history.
 */
CREATE VIEW jobq.queue_stats WITH (security_barrier) AS
    WITH live AS (
        SELECT queue_id, 'r'::"char" AS lane, NULL::jobq.job_state AS state, run_at
          FROM jobq.job WHERE lane = 'r' AND in_db
        UNION ALL
        SELECT queue_id, 'r', NULL, run_at
          FROM jobq.job WHERE lane = 'r' AND NOT in_db
        UNION ALL
        SELECT queue_id, 's', NULL, NULL
          FROM jobq.job WHERE lane = 's'
        UNION ALL
        SELECT queue_id, 'a', state, NULL
          FROM jobq.job WHERE lane = 'a'
        UNION ALL
        SELECT j.queue_id, NULL, j.state, NULL
          FROM (SELECT DISTINCT u.id FROM jobq.lease l
                 CROSS JOIN LATERAL pg_catalog.unnest(l.job_ids) AS u(id)) leased
          JOIN jobq.job j ON j.id = leased.id
         WHERE j.state = 'running'
    ), per_queue AS (
        SELECT queue_id,
               pg_catalog.count(*) FILTER (WHERE lane = 'r') AS ready,
               pg_catalog.count(*) FILTER (WHERE lane = 's') AS scheduled,
               pg_catalog.count(*) FILTER (WHERE state = 'running') AS running,
               pg_catalog.count(*) FILTER (WHERE state = 'held') AS held,
               pg_catalog.count(*) FILTER (WHERE state = 'failed') AS failed,
               pg_catalog.min(run_at) AS oldest_ready_at
          FROM live GROUP BY queue_id
    )
    SELECT q.name AS queue, q.paused,
           COALESCE(p.ready, 0) AS ready,
           COALESCE(p.scheduled, 0) AS scheduled,
           COALESCE(p.running, 0) AS running,
           COALESCE(p.held, 0) AS held,
           COALESCE(p.failed, 0) AS failed,
           pg_catalog.now() - p.oldest_ready_at AS oldest_ready_age
      FROM jobq.queue q
      LEFT JOIN per_queue p ON p.queue_id = q.id
     WHERE (SELECT pg_catalog.pg_has_role('jobq_operator', 'USAGE'))
        OR (SELECT pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE'))
        OR q.id IN (SELECT g.queue_id FROM jobq.queue_grant g
                     WHERE g.privilege = 'operate'
                       AND pg_catalog.pg_has_role(g.grantee::pg_catalog.oid, 'USAGE'));

/*
 * The counters and the queues check the reader's privileges themselves
 * (above), so PUBLIC may read them; jobq.stats_reset() checks that the
 * caller operates some queue.
 */
REVOKE ALL ON FUNCTION jobq.stats_counters(), jobq.stats_reset() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jobq.stats_counters(), jobq.stats_reset() TO jobq_operator;
GRANT SELECT ON jobq.stats, jobq.queue_stats TO jobq_operator;
GRANT EXECUTE ON FUNCTION jobq.stats_counters(), jobq.stats_reset() TO PUBLIC;
GRANT SELECT ON jobq.stats, jobq.queue_stats TO PUBLIC;

/*
 * Each backend keeps the settings of the kinds it enqueued into
 * (src/kind_cache.c); every statement that changes jobq.kind, whoever runs
 * it, tells them all to read the rows again.
 */
CREATE FUNCTION jobq.kind_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'jobq_kind_changed'
LANGUAGE C;
REVOKE ALL ON FUNCTION jobq.kind_changed() FROM PUBLIC;

CREATE TRIGGER kind_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON jobq.kind
    FOR EACH STATEMENT EXECUTE FUNCTION jobq.kind_changed();
/* Also for changes applied with session_replication_role = replica. */
ALTER TABLE jobq.kind ENABLE ALWAYS TRIGGER kind_changed;

/*
 * Waiting for a job: block until it is completed, failed, held or
 * cancelled (none of which runs again without an operator), or until the
 * timeout (at most an hour) passes, woken at the commit that finishes it.
 * Returns the job's state then, with its result and last error: on a
 * timeout, the state it is still in.  The roles that may produce into or
 * operate the job's queue may wait on it; for others it does not exist.
 */
CREATE FUNCTION jobq.wait(id bigint, timeout interval DEFAULT '30 seconds',
                          OUT state jobq.job_state, OUT result jsonb, OUT last_error text)
RETURNS record
AS 'MODULE_PATHNAME', 'jobq_wait'
LANGUAGE C CALLED ON NULL INPUT VOLATILE PARALLEL UNSAFE;

/* It checks the caller's privilege on the job's queue itself. */
REVOKE ALL ON FUNCTION jobq.wait(bigint, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jobq.wait(bigint, interval) TO jobq_producer, jobq_operator;
GRANT EXECUTE ON FUNCTION jobq.wait(bigint, interval) TO PUBLIC;
