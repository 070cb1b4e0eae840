-- security: the attacks of the trust-boundary review (DESIGN.md principle 9),
-- each tried as an attacker would and shown refused.  jobq must never let
-- a role do what it could not do without jobq: run code as another role,
-- become superuser, make another role's handler use its objects, read what
-- another role's handler left behind, or stall jobq's own work.
--
-- The attackers are ordinary login roles in sessions of their own (\c), so
-- that their temporary objects are theirs.  Every planted object records,
-- when it is used, who used it (current_user) in public.hijack_log, and
-- counts uses by any role other than the attacker in a sequence, which a
-- rollback does not undo; and it tries ALTER ROLE <attacker> SUPERUSER,
-- which only succeeds if it runs as a superuser.  Outcomes are shown as
-- roles, states and SQLSTATEs, never as message text, ids or timestamps.
-- The file makes and drops all it uses; it only needs the extension.
\set VERBOSITY sqlstate
SELECT current_user AS sec_su \gset

-- Jobs other files left are not this file's: their queues are paused while
-- it runs (and resumed at the end), so that run_pending runs only the jobs
-- made here.
CREATE TABLE sec_paused_queues AS SELECT name FROM jobq.queue WHERE NOT paused;
UPDATE jobq.queue SET paused = true WHERE name IN (SELECT name FROM sec_paused_queues);

-- What the attackers' objects record.  Anyone may write here: a planted
-- object runs as whoever uses it.
CREATE TABLE public.hijack_log (attacker name, who name, what text);
GRANT INSERT, SELECT ON public.hijack_log TO PUBLIC;
CREATE SEQUENCE public.hijack_foreign_uses MINVALUE 0 START 0;
SELECT setval('public.hijack_foreign_uses', 0, true) AS no_foreign_use_yet;
GRANT USAGE, SELECT ON SEQUENCE public.hijack_foreign_uses TO PUBLIC;

-- Run in an attacker's session (as the attacker: no SECURITY DEFINER):
-- pg_temp.hijack(what), which records its use and tries to make the
-- session's role superuser when it runs as anyone else, and
-- pg_temp.hijack_at_plan(what), an IMMUTABLE wrapper that the planner
-- calls while it plans a query, before any row is read.  Every name in
-- their bodies is qualified: the attacker's own shadows stay out of them.
CREATE FUNCTION public.sec_plant_probe() RETURNS void LANGUAGE plpgsql AS $plant$
BEGIN
    EXECUTE $f$
        CREATE FUNCTION pg_temp.hijack(what pg_catalog.text) RETURNS pg_catalog.bool
        LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO public.hijack_log (attacker, who, what)
                VALUES (session_user, current_user, what);
            IF current_user OPERATOR(pg_catalog.<>) session_user THEN
                PERFORM pg_catalog.nextval('public.hijack_foreign_uses');
                BEGIN
                    EXECUTE pg_catalog.format('ALTER ROLE %I SUPERUSER', session_user);
                EXCEPTION WHEN OTHERS THEN
                    NULL;
                END;
            END IF;
            RETURN true;
        END $$ $f$;
    EXECUTE $f$
        CREATE FUNCTION pg_temp.hijack_at_plan(what pg_catalog.text) RETURNS pg_catalog.bool
        LANGUAGE plpgsql IMMUTABLE AS $$
        BEGIN
            RETURN pg_temp.hijack(what OPERATOR(pg_catalog.||) ' (at plan time)');
        END $$ $f$;
END $plant$;

-- Who ran a planted object, as shown here: the attacker itself, or else
-- the role (a superuser by that word, whatever its name).
CREATE FUNCTION sec_who(who name, attacker name) RETURNS text LANGUAGE sql AS $$
    SELECT CASE WHEN who = attacker THEN 'itself'
                WHEN (SELECT rolsuper FROM pg_roles WHERE rolname = who) THEN 'a superuser'
                ELSE who::text END
$$;

--
-- (a) Every SECURITY DEFINER function of the extension pins
-- search_path = pg_catalog, pg_temp.  Without pg_temp in the path,
-- PostgreSQL searches it *first* for relations and types, and a caller's
-- temporary view or domain stands in for a catalog or a type.  The list
-- comes from the catalog, so that a new one cannot slip in.
--
SELECT p.oid::regprocedure AS security_definer, l.lanname AS language, p.proconfig
  FROM pg_proc p
  JOIN pg_language l ON l.oid = p.prolang
  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
 WHERE d.refclassid = 'pg_extension'::regclass
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'jobq')
   AND d.deptype = 'e'
   AND p.prosecdef
 ORDER BY 1::text;
-- Those without it (none).
SELECT p.oid::regprocedure AS unpinned_security_definer, p.proconfig
  FROM pg_proc p
  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
 WHERE d.refclassid = 'pg_extension'::regclass
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'jobq')
   AND d.deptype = 'e'
   AND p.prosecdef
   AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)
 ORDER BY 1::text;

--
-- (b) Finding 1: any login role, through the sql_drop event trigger.
-- jobq.forget_dropped_subscriptions() runs at every DROP, SECURITY DEFINER,
-- and reads pg_trigger.  A temporary view named pg_trigger, whose WHERE
-- calls the attacker's function, must not be what it reads: the attacker
-- drops a table of its own and must stay what it was.  (The function is
-- IMMUTABLE, so the planner runs it as soon as it plans the trigger's
-- DELETE, whether or not any subscription exists.)
--
CREATE ROLE sec_anyone LOGIN;
\c - sec_anyone
SELECT public.sec_plant_probe();
CREATE TEMP VIEW pg_trigger AS
    SELECT * FROM pg_catalog.pg_trigger WHERE pg_temp.hijack_at_plan('view pg_trigger');
-- The view does stand in for pg_trigger in the attacker's own queries.
SELECT count(*) >= 0 AS read_pg_trigger FROM pg_trigger;
CREATE TEMP TABLE sec_mine (x int);
DROP TABLE sec_mine;
\c - :sec_su
SELECT rolsuper AS anyone_is_superuser FROM pg_roles WHERE rolname = 'sec_anyone';
SELECT DISTINCT sec_who(who, attacker) AS ran_as, what FROM hijack_log
 WHERE attacker = 'sec_anyone' ORDER BY 1, 2;
ALTER ROLE sec_anyone NOSUPERUSER;

--
-- (c) Finding 2: jobq_operator, through jobq.history() (LANGUAGE sql,
-- SECURITY DEFINER, with ::text casts).  Temporary domains named text,
-- jsonb, int4... whose CHECK calls the attacker's function must not be the
-- types history() casts to.  The job has failed attempts and an operator
-- action, so that every branch of history() runs.
--
CREATE ROLE sec_history_op LOGIN IN ROLE jobq_operator;
SELECT jobq.register_kind('sec.hist', queue => 'sec_hist', max_attempts => 1);
SELECT jobq.enqueue('sec.hist', '{"n": 1}') AS sec_hist_job \gset
SELECT jobq.fail(id, lease_token, 'card declined') FROM jobq.claim('sec_hist', 'w1');
SET ROLE sec_history_op;
SELECT jobq.retry(:sec_hist_job, 'customer fixed the card');
RESET ROLE;
SELECT count(jobq.complete(id, lease_token)) AS completed FROM jobq.claim('sec_hist', 'w2');
\c - sec_history_op
SELECT public.sec_plant_probe();
CREATE DOMAIN pg_temp.text AS pg_catalog.text CHECK (pg_temp.hijack('type text'));
CREATE DOMAIN pg_temp.jsonb AS pg_catalog.jsonb CHECK (pg_temp.hijack('type jsonb'));
CREATE DOMAIN pg_temp.int4 AS pg_catalog.int4 CHECK (pg_temp.hijack('type int4'));
CREATE DOMAIN pg_temp.int8 AS pg_catalog.int8 CHECK (pg_temp.hijack('type int8'));
CREATE DOMAIN pg_temp.name AS pg_catalog.name CHECK (pg_temp.hijack('type name'));
CREATE DOMAIN pg_temp.bool AS pg_catalog.bool CHECK (pg_temp.hijack('type bool'));
CREATE DOMAIN pg_temp.timestamptz AS pg_catalog.timestamptz
    CHECK (pg_temp.hijack('type timestamptz'));
CREATE DOMAIN pg_temp."interval" AS pg_catalog."interval" CHECK (pg_temp.hijack('type interval'));
-- The domain does stand in for text in the operator's own queries.
SELECT 'x'::text AS cast_to_text;
SELECT attempt, event, worker, detail FROM jobq.history(:sec_hist_job);
\c - :sec_su
SELECT rolsuper AS history_op_is_superuser FROM pg_roles WHERE rolname = 'sec_history_op';
SELECT DISTINCT sec_who(who, attacker) AS ran_as, what FROM hijack_log
 WHERE attacker = 'sec_history_op' ORDER BY 1, 2;
ALTER ROLE sec_history_op NOSUPERUSER;

--
-- (d) The generic hijack test.  For each of the four roles, a login role
-- holding only it plants temporary domains shadowing common type names,
-- and temporary views shadowing catalog names and the names of jobq's own
-- tables and views, then calls every function of the extension with
-- arguments that make the real code paths run (and selects every view).
-- Nothing may run as anyone but the attacker.
--
-- The shadows.  Type names that are grammar keywords (interval, numeric,
-- varchar) resolve to pg_catalog when written bare; their domains are only
-- reached through a quoted name, and cost nothing to try.
CREATE TABLE public.sec_shadow (name text PRIMARY KEY, ddl text NOT NULL, probe text NOT NULL);
GRANT SELECT ON public.sec_shadow TO PUBLIC;
INSERT INTO sec_shadow
SELECT t.name,
       format('CREATE DOMAIN pg_temp.%I AS pg_catalog.%I CHECK (pg_temp.hijack(%L))',
              t.name, t.name, 'type ' || t.name),
       format('SELECT CAST(%L AS %s)', t.sample, quote_ident(t.name))
  FROM (VALUES ('text', 'x'), ('varchar', 'x'), ('name', 'x'), ('char', 'x'),
               ('jsonb', '{}'), ('json', '{}'), ('int2', '1'), ('int4', '1'), ('int8', '1'),
               ('numeric', '1'), ('float4', '1'), ('float8', '1'), ('bool', 't'),
               ('oid', '1'), ('xid', '1'), ('tid', '(0,1)'), ('regclass', 'pg_catalog.pg_class'),
               ('regproc', 'pg_catalog.now'), ('regprocedure', 'pg_catalog.now()'),
               ('regtype', 'pg_catalog.int4'), ('regrole', 'pg_database_owner'),
               ('regnamespace', 'pg_catalog'), ('timestamptz', '2020-01-01 00:00+00'),
               ('timestamp', '2020-01-01 00:00'), ('date', '2020-01-01'),
               ('interval', '1 hour'), ('bytea', '\x00'), ('uuid', gen_random_uuid()::text),
               ('inet', '127.0.0.1')) t(name, sample);
-- Catalogs: their columns (but those of a pseudo-type, which a view
-- cannot have: pg_attribute.attmissingval), rows and all.
INSERT INTO sec_shadow
SELECT c.name,
       format('CREATE TEMP VIEW %I AS SELECT %s FROM pg_catalog.%I'
              ' WHERE pg_temp.hijack_at_plan(%L) AND pg_temp.hijack(%L)',
              c.name,
              (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
                 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                WHERE a.attrelid = ('pg_catalog.' || c.name)::regclass
                  AND a.attnum > 0 AND NOT a.attisdropped AND t.typtype <> 'p'),
              c.name, 'relation ' || c.name, 'relation ' || c.name),
       format('SELECT FROM %I LIMIT 1', c.name)
  FROM unnest(ARRAY['pg_class', 'pg_trigger', 'pg_namespace', 'pg_proc', 'pg_roles',
                    'pg_extension', 'pg_stat_activity', 'pg_locks', 'pg_cursors',
                    'pg_database', 'pg_type', 'pg_attribute', 'pg_depend', 'pg_settings',
                    'pg_index', 'pg_constraint', 'pg_operator', 'pg_event_trigger',
                    'pg_auth_members', 'pg_inherits', 'pg_description',
                    'pg_prepared_statements', 'pg_language', 'pg_collation']) c(name);
-- jobq's tables and views, from the catalog: same columns, no rows (the
-- attackers may not read jobq's tables).
INSERT INTO sec_shadow
SELECT c.relname,
       format('CREATE TEMP VIEW %I AS SELECT %s'
              ' WHERE pg_temp.hijack_at_plan(%L) AND pg_temp.hijack(%L)',
              c.relname,
              (SELECT string_agg(format('CAST(NULL AS %I.%I) AS %I',
                                        n.nspname, t.typname, a.attname), ', '
                                 ORDER BY a.attnum)
                 FROM pg_attribute a
                 JOIN pg_type t ON t.oid = a.atttypid
                 JOIN pg_namespace n ON n.oid = t.typnamespace
                WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
              'relation ' || c.relname, 'relation ' || c.relname),
       format('SELECT FROM %I LIMIT 1', c.relname)
  FROM pg_class c
 WHERE c.relnamespace = 'jobq'::regnamespace AND c.relkind IN ('r', 'v');
SELECT shadow, string_agg(name, ' ' ORDER BY name) AS names
  FROM (SELECT CASE WHEN ddl LIKE 'CREATE DOMAIN %' THEN 'domain' ELSE 'view' END AS shadow,
               name, (row_number() OVER (PARTITION BY ddl LIKE 'CREATE DOMAIN %'
                                         ORDER BY name) - 1) / 8 AS line
          FROM sec_shadow) s
 GROUP BY shadow, line ORDER BY shadow, line;

-- Plant them all in the caller's session, then use each once as the
-- caller: every shadow must fire (else the test proves nothing).  Lists
-- the shadows that did not.
CREATE FUNCTION public.sec_plant_shadows() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    s record;
BEGIN
    PERFORM public.sec_plant_probe();
    FOR s IN SELECT ddl FROM public.sec_shadow ORDER BY name LOOP
        EXECUTE s.ddl;
    END LOOP;
END $$;
CREATE FUNCTION public.sec_dead_shadows() RETURNS SETOF pg_catalog.text
LANGUAGE plpgsql AS $$
DECLARE
    s record;
BEGIN
    FOR s IN SELECT name, probe FROM public.sec_shadow ORDER BY name LOOP
        EXECUTE s.probe;
        IF NOT EXISTS (SELECT FROM public.hijack_log h
                        WHERE h.attacker OPERATOR(pg_catalog.=) session_user
                          AND h.who OPERATOR(pg_catalog.=) session_user
                          AND pg_catalog.split_part(h.what, ' ', 2)
                              OPERATOR(pg_catalog.=) s.name) THEN
            RETURN NEXT s.name;
        END IF;
    END LOOP;
END $$;

-- What each attacker gets to work on, made by the superuser just before
-- the attacker connects (sec_gen_fixture): kinds of its own names (an
-- external one, one with side effects, and "victim", an in-database kind
-- registered by the superuser whose handler uses unqualified names), jobs
-- that are failed, held, completed after a retry (for history), pending
-- later (for cancel), four ready to claim and one victim job; a schedule;
-- a subscribed table anyone may write; a table the attacker may subscribe.
CREATE FUNCTION public.sec_victim(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM count(*) FROM pg_class WHERE relname = 'sec_nothing';
    RETURN jsonb_build_object('n', (p->>'n')::int4, 'by', current_user::text);
END $$;
CREATE FUNCTION public.sec_own_handler(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM count(*) FROM pg_class WHERE relname = 'sec_nothing';
    RETURN jsonb_build_object('n', (p->>'n')::int4, 'by', current_user::text);
END $$;
CREATE TABLE public.sec_fixture (attacker name, what text, id bigint);
GRANT SELECT ON public.sec_fixture TO PUBLIC;
CREATE TABLE public.sec_claims (attacker name, n bigint, id bigint, lease_token bigint);
GRANT SELECT, INSERT ON public.sec_claims TO PUBLIC;
CREATE FUNCTION public.sec_id(what text) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT id FROM public.sec_fixture WHERE attacker = session_user AND what = $1
$$;
CREATE FUNCTION public.sec_claim_id(n bigint) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT id FROM public.sec_claims WHERE attacker = session_user AND n = $1
$$;
CREATE FUNCTION public.sec_claim_token(n bigint) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT lease_token FROM public.sec_claims WHERE attacker = session_user AND n = $1
$$;
CREATE FUNCTION public.sec_id_of(who name, what text) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT id FROM public.sec_fixture WHERE attacker = $1 AND what = $2
$$;
CREATE FUNCTION sec_gen_fixture(level text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    who name := 'sec_gen_' || level;
    q text := 'sec_gen_' || level;
    k text := 'sec.gen.' || level;
    job bigint;
    w text;
BEGIN
    PERFORM jobq.register_kind(k || '.ext', queue => q, max_attempts => 1);
    PERFORM jobq.register_kind(k || '.mail', queue => q || '_mail', side_effects => '{email}');
    PERFORM jobq.register_kind(k || '.victim', 'public.sec_victim(jsonb)', queue => q || '_db');
    -- Failed jobs, and one completed after a failure and a retry.
    FOREACH w IN ARRAY ARRAY['failed', 'failed2', 'failed3', 'history'] LOOP
        job := jobq.enqueue(k || '.ext', jsonb_build_object('what', w));
        PERFORM jobq.fail(c.id, c.lease_token, 'card declined') FROM jobq.claim(q, 'fixture') c;
        INSERT INTO public.sec_fixture VALUES (who, w, job);
    END LOOP;
    PERFORM jobq.retry(public.sec_id_of(who, 'history'), 'card fixed');
    PERFORM jobq.complete(c.id, c.lease_token) FROM jobq.claim(q, 'fixture') c;
    -- Held: side effects, not retry_safe.
    job := jobq.enqueue(k || '.mail', '{"what": "held"}');
    PERFORM jobq.fail(c.id, c.lease_token, 'smtp 421') FROM jobq.claim(q || '_mail', 'fixture') c;
    INSERT INTO public.sec_fixture VALUES (who, 'held', job);
    job := jobq.enqueue(k || '.ext', '{"what": "later"}', run_at => now() + interval '1 day');
    INSERT INTO public.sec_fixture VALUES (who, 'later', job);
    FOR i IN 1..4 LOOP
        PERFORM jobq.enqueue(k || '.ext', jsonb_build_object('n', i),
                             run_at => now() - interval '1 hour');
    END LOOP;
    PERFORM jobq.enqueue(k || '.victim', '{"n": 1}');
    PERFORM jobq.schedule(k, '0 0 1 1 *', k || '.ext', start_at => '2100-01-01 00:00+00');
    -- The attacker's own, so that its calls run the whole code path.
    UPDATE jobq.schedule SET owner = who::regrole WHERE name = k;
    EXECUTE format('CREATE TABLE public.%I (id int PRIMARY KEY, note text)', q || '_feed');
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON public.%I TO PUBLIC', q || '_feed');
    PERFORM jobq.subscribe(k || '.feed', format('public.%I', q || '_feed')::regclass,
                           k || '.ext');
    EXECUTE format('CREATE TABLE public.%I (id int)', q || '_src');
    EXECUTE format('GRANT TRIGGER ON public.%I TO %I', q || '_src', who);
END $$;

-- The calls, in order; {L} stands for the attacker's level.  fn names the
-- function a call exercises (the trigger and event trigger functions run
-- through the writes and DROPs that fire them); views come from the
-- catalog.  Types are written qualified, so that the attacker's own
-- shadows do not fire in its own statements (they would only record
-- "itself").
CREATE TABLE public.sec_calls (n int PRIMARY KEY, fn regprocedure, stmt text NOT NULL);
GRANT SELECT ON public.sec_calls TO PUBLIC;
INSERT INTO public.sec_calls VALUES
 (1, 'jobq.enqueue(text, jsonb, text, timestamptz, integer, text, text, bigint[])',
  $$SELECT jobq.enqueue('sec.gen.{L}.ext', '{"by": "attacker"}', idempotency_key => 'k1', concurrency_key => 'ck1')$$),
 (2, 'jobq.enqueue_many(text, jsonb[], text[], timestamptz, integer, text, bigint[])',
  $$SELECT pg_catalog.count(*) FROM jobq.enqueue_many('sec.gen.{L}.ext', ARRAY['{"m": 1}', '{"m": 2}']::pg_catalog.jsonb[], ARRAY['m1', 'm2'])$$),
 (3, 'jobq.cancel(bigint, text)',
  $$SELECT jobq.cancel(public.sec_id('later'), 'not needed')$$),
 (4, 'jobq.claim(text, text, integer, interval, boolean)',
  $$INSERT INTO public.sec_claims SELECT session_user, c.n, c.id, c.lease_token FROM jobq.claim('sec_gen_{L}', 'attacker', 4, '1 hour') WITH ORDINALITY AS c(id, kind, payload, attempt, lease_token, lease_expires_at, idempotency_key, n)$$),
 (5, 'jobq.heartbeat(bigint, bigint, interval)',
  $$SELECT jobq.heartbeat(public.sec_claim_id(1), public.sec_claim_token(1), '2 hours')$$),
 (6, 'jobq.record_step(bigint, text, jsonb, bigint)',
  $$SELECT jobq.record_step(public.sec_claim_id(1), 'charge', '{"ok": true}', public.sec_claim_token(1))$$),
 (7, 'jobq.step_result(bigint, text, bigint)',
  $$SELECT jobq.step_result(public.sec_claim_id(1), 'charge', public.sec_claim_token(1))$$),
 (8, 'jobq.external_key(bigint, text, bigint)',
  $$SELECT jobq.external_key(public.sec_claim_id(1), 'charge', public.sec_claim_token(1))$$),
 (9, 'jobq.complete(bigint, bigint, jsonb)',
  $$SELECT jobq.complete(public.sec_claim_id(1), public.sec_claim_token(1), '{"done": true}')$$),
 (10, 'jobq.fail(bigint, bigint, text, interval)',
  $$SELECT jobq.fail(public.sec_claim_id(2), public.sec_claim_token(2), 'boom')$$),
 (11, 'jobq.snooze(bigint, bigint, interval)',
  $$SELECT jobq.snooze(public.sec_claim_id(3), public.sec_claim_token(3), '1 hour')$$),
 (12, 'jobq.complete_many(bigint[], bigint[])',
  $$SELECT jobq.complete_many(ARRAY[public.sec_claim_id(4)], ARRAY[public.sec_claim_token(4)])$$),
 (13, 'jobq.rescue_leases()', $$SELECT jobq.rescue_leases()$$),
 (14, 'jobq.once(text)', $$SELECT jobq.once('sec.gen.{L}.op')$$),
 (15, 'jobq.current_job()', $$SELECT jobq.current_job()$$),
 (16, 'jobq.cron_next(text, timestamptz, text)',
  $$SELECT jobq.cron_next('*/5 * * * *', '2020-01-01 00:00+00', 'Europe/Paris')$$),
 (17, 'jobq.history(bigint)',
  $$SELECT pg_catalog.count(*) FROM jobq.history(public.sec_id('history'))$$),
 (18, 'jobq.retry(bigint, text, boolean)',
  $$SELECT jobq.retry(public.sec_id('failed'), 'try again')$$),
 (19, 'jobq.discard(bigint, text)',
  $$SELECT jobq.discard(public.sec_id('failed2'), 'give up')$$),
 (20, 'jobq.retry_failed(text, timestamptz, text)',
  $$SELECT jobq.retry_failed('sec.gen.{L}.ext', NULL, 'all of them')$$),
 (21, 'jobq.resolve(bigint, text)',
  $$SELECT jobq.resolve(public.sec_id('held'), 'refunded by hand')$$),
 (22, 'jobq.pause_queue(text, text)', $$SELECT jobq.pause_queue('sec_gen_{L}', 'maintenance')$$),
 (23, 'jobq.resume_queue(text, text)', $$SELECT jobq.resume_queue('sec_gen_{L}', 'done')$$),
 (24, 'jobq.pause_schedule(text)', $$SELECT jobq.pause_schedule('sec.gen.{L}')$$),
 (25, 'jobq.resume_schedule(text)', $$SELECT jobq.resume_schedule('sec.gen.{L}')$$),
 (26, 'jobq.run_schedule_now(text)', $$SELECT jobq.run_schedule_now('sec.gen.{L}')$$),
 (27, 'jobq.register_kind(text, regprocedure, text, integer, interval, interval, interval, text[], boolean, text)',
  $$SELECT jobq.register_kind('sec.gen.{L}.own', 'public.sec_own_handler(pg_catalog.jsonb)', queue => 'sec_gen_{L}_own')$$),
 (28, NULL, $$SELECT jobq.enqueue('sec.gen.{L}.own', '{"n": 2}')$$),
 (29, 'jobq.run_pending(integer)', $$SELECT jobq.run_pending()$$),
 (30, 'jobq.unregister_kind(text)', $$SELECT jobq.unregister_kind('sec.gen.{L}.own')$$),
 (31, 'jobq.schedule(text, text, text, jsonb, text, text, text, text, timestamptz)',
  $$SELECT jobq.schedule('sec.gen.{L}.own', '0 * * * *', 'sec.gen.{L}.ext', start_at => '1999-12-31 23:00+00')$$),
 (32, 'jobq.tick_schedules(timestamptz)', $$SELECT jobq.tick_schedules('2000-01-01 00:00:30+00')$$),
 (33, 'jobq.unschedule(text)', $$SELECT jobq.unschedule('sec.gen.{L}.own')$$),
 (34, 'jobq.subscribe(text, regclass, text, text[])',
  $$SELECT jobq.subscribe('sec.gen.{L}.src', 'public.sec_gen_{L}_src', 'sec.gen.{L}.ext')$$),
 (35, 'jobq.unsubscribe(text)', $$SELECT jobq.unsubscribe('sec.gen.{L}.src')$$),
 (36, 'jobq.dispatch()', $$INSERT INTO public.sec_gen_{L}_feed VALUES (1, 'new')$$),
 (37, NULL, $$UPDATE public.sec_gen_{L}_feed SET note = 'changed'$$),
 (38, NULL, $$DELETE FROM public.sec_gen_{L}_feed$$),
 (39, 'jobq.purge_finished(interval)', $$SELECT jobq.purge_finished('100 years')$$),
 (40, 'jobq.worker_status()', $$SELECT pg_catalog.count(*) FROM jobq.worker_status()$$),
 (41, 'jobq.worker_jobs()', $$SELECT pg_catalog.count(*) FROM jobq.worker_jobs()$$),
 (42, 'jobq.wake_launcher()', $$SELECT jobq.wake_launcher()$$),
 (43, 'jobq.forget_dropped_subscriptions()',
  $$CREATE TEMP TABLE sec_gone (x pg_catalog.int4); DROP TABLE sec_gone$$),
 -- Not the owner: refused, but the ddl_command_start trigger runs first.
 -- (Should the attacker have become superuser, the division by zero rolls
 -- the drop back.)
 (44, 'jobq.drop_subscription_triggers()', $$DROP EXTENSION jobq; SELECT 1 / 0$$),
 (45, 'jobq.create_queue(text, boolean)', $$SELECT jobq.create_queue('sec_gen_{L}_new')$$),
 (46, 'jobq."grant"(text, regrole, text[])', $$SELECT jobq.grant('sec_gen_{L}', 'sec_gen_{L}', '{operate}')$$),
 (47, 'jobq.revoke(text, regrole, text[])', $$SELECT jobq.revoke('sec_gen_{L}', 'sec_gen_{L}')$$),
 (48, 'jobq.claim_in_transaction(text, text, integer)',
  $$SELECT pg_catalog.count(jobq.complete(c.id, NULL)) FROM jobq.claim_in_transaction('sec_gen_{L}', 'attacker', 1) c$$),
 (49, 'jobq.stats_counters()', $$SELECT pg_catalog.count(*) FROM jobq.stats_counters()$$),
 (50, 'jobq.stats_reset()', $$SELECT jobq.stats_reset()$$),
 -- jobq.kind's trigger function, put on a table of the attacker's: refused
 -- at CREATE TRIGGER (no EXECUTE); were it not, it refuses any other table.
 (51, 'jobq.kind_changed()',
  $$CREATE TEMP TABLE sec_kc (x pg_catalog.int4); CREATE TRIGGER sec_kc AFTER INSERT ON sec_kc EXECUTE FUNCTION jobq.kind_changed(); INSERT INTO sec_kc VALUES (1)$$),
 (52, 'jobq.wait(bigint, interval)',
  $$SELECT (jobq.wait(public.sec_id('history'), '0')).state$$),
 (53, 'jobq.set_limit(text, integer)', $$SELECT jobq.set_limit('sec-gen-{L}', 5)$$),
 (54, 'jobq.set_rate_limit(text, integer, interval)',
  $$SELECT jobq.set_rate_limit('sec-gen-{L}', 5, '1 minute')$$),
 (55, 'jobq.compensate(bigint, text)',
  $$SELECT jobq.compensate(public.sec_id('held'), 'undo it')$$),
 -- jobq.job's trigger function, put on a table of the attacker's: refused
 -- at CREATE TRIGGER; were it not, it refuses any other table.
 (56, 'jobq.dependency_changed()',
  $$CREATE TEMP TABLE sec_dc (x pg_catalog.int4); CREATE TRIGGER sec_dc AFTER UPDATE ON sec_dc FOR EACH ROW EXECUTE FUNCTION jobq.dependency_changed(); INSERT INTO sec_dc VALUES (1); UPDATE sec_dc SET x = 2$$),
 -- A job after a failed one: the dependency's row is locked and marked.
 (57, NULL,
  $$SELECT jobq.enqueue('sec.gen.{L}.ext', after => ARRAY[public.sec_id('failed3')])$$);
INSERT INTO public.sec_calls
SELECT 100 + row_number() OVER (ORDER BY c.relname), NULL,
       format('SELECT pg_catalog.count(*) FROM jobq.%I', c.relname)
  FROM pg_class c
 WHERE c.relnamespace = 'jobq'::regnamespace AND c.relkind = 'v';

-- Every function of the extension is called (a new one shows up here).
SELECT count(*) AS extension_functions FROM pg_depend d
 WHERE d.classid = 'pg_proc'::regclass AND d.refclassid = 'pg_extension'::regclass
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'jobq') AND d.deptype = 'e';
SELECT d.objid::regprocedure AS not_called FROM pg_depend d
 WHERE d.classid = 'pg_proc'::regclass AND d.refclassid = 'pg_extension'::regclass
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'jobq') AND d.deptype = 'e'
   AND d.objid NOT IN (SELECT fn FROM public.sec_calls WHERE fn IS NOT NULL)
 ORDER BY 1::text;
SELECT count(*) AS views_read FROM public.sec_calls WHERE n > 100;

-- The attack: each call in a transaction of its own, its error caught; for
-- each, its SQLSTATE and how many times a planted object ran as another
-- role (counted by a sequence, which the call's rollback does not undo).
CREATE TABLE public.sec_outcome (attacker name, n int, sqlstate text, foreign_uses bigint);
GRANT INSERT ON public.sec_outcome TO PUBLIC;
CREATE FUNCTION public.sec_try(stmt pg_catalog.text) RETURNS pg_catalog.text
LANGUAGE plpgsql AS $$
DECLARE
    state pg_catalog.text;
BEGIN
    EXECUTE stmt;
    RETURN '00000';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE;
    RETURN state;
END $$;
CREATE PROCEDURE public.sec_attack() LANGUAGE plpgsql AS $$
DECLARE
    level pg_catalog.text := pg_catalog.substr(session_user, 9);
    c record;
    before pg_catalog.int8;
    state pg_catalog.text;
BEGIN
    FOR c IN SELECT n, stmt FROM public.sec_calls ORDER BY n LOOP
        SELECT last_value INTO before FROM public.hijack_foreign_uses;
        state := public.sec_try(pg_catalog.replace(c.stmt, '{L}', level));
        INSERT INTO public.sec_outcome
        SELECT session_user, c.n, state, s.last_value OPERATOR(pg_catalog.-) before
          FROM public.hijack_foreign_uses s;
        COMMIT;
    END LOOP;
END $$;

CREATE ROLE sec_gen_producer LOGIN IN ROLE jobq_producer;
CREATE ROLE sec_gen_worker LOGIN IN ROLE jobq_worker;
CREATE ROLE sec_gen_operator LOGIN IN ROLE jobq_operator;
CREATE ROLE sec_gen_admin LOGIN IN ROLE jobq_admin;

SELECT sec_gen_fixture('producer');
\c - sec_gen_producer
SELECT public.sec_plant_shadows();
SELECT public.sec_dead_shadows() AS dead_shadow;
CALL public.sec_attack();
\c - :sec_su

SELECT sec_gen_fixture('worker');
\c - sec_gen_worker
SELECT public.sec_plant_shadows();
SELECT public.sec_dead_shadows() AS dead_shadow;
CALL public.sec_attack();
\c - :sec_su

SELECT sec_gen_fixture('operator');
\c - sec_gen_operator
SELECT public.sec_plant_shadows();
SELECT public.sec_dead_shadows() AS dead_shadow;
CALL public.sec_attack();
\c - :sec_su

SELECT sec_gen_fixture('admin');
\c - sec_gen_admin
SELECT public.sec_plant_shadows();
SELECT public.sec_dead_shadows() AS dead_shadow;
CALL public.sec_attack();
\c - :sec_su

-- What each call did, per role (00000: it ran; 42501: not this role's;
-- 22004 or 42704: it got no job or kind to work on, having claimed or
-- registered none).  A role that had become superuser would show 00000
-- where its rights end.
SELECT c.n, coalesce(c.fn::oid::regproc::text, c.stmt) AS call,
       max(o.sqlstate) FILTER (WHERE o.attacker = 'sec_gen_producer') AS producer,
       max(o.sqlstate) FILTER (WHERE o.attacker = 'sec_gen_worker') AS worker,
       max(o.sqlstate) FILTER (WHERE o.attacker = 'sec_gen_operator') AS operator,
       max(o.sqlstate) FILTER (WHERE o.attacker = 'sec_gen_admin') AS admin
  FROM public.sec_calls c JOIN public.sec_outcome o ON o.n = c.n
 GROUP BY c.n, c.fn, c.stmt ORDER BY c.n;
-- The calls during which a planted object ran as another role (none).
SELECT o.attacker, o.n, o.foreign_uses FROM public.sec_outcome o
 WHERE o.foreign_uses <> 0 ORDER BY 1, 2;
SELECT last_value AS foreign_uses_in_all FROM public.hijack_foreign_uses;
-- Who ran the attackers' objects: only the attackers themselves.
SELECT attacker, string_agg(DISTINCT sec_who(who, attacker), ', ') AS ran_as
  FROM hijack_log WHERE attacker LIKE 'sec\_gen\_%' GROUP BY attacker ORDER BY 1;
SELECT rolname, rolsuper FROM pg_roles WHERE rolname LIKE 'sec\_gen\_%' ORDER BY 1;
ALTER ROLE sec_gen_producer NOSUPERUSER;
ALTER ROLE sec_gen_worker NOSUPERUSER;
ALTER ROLE sec_gen_operator NOSUPERUSER;
ALTER ROLE sec_gen_admin NOSUPERUSER;
-- The victim jobs (handlers registered by the superuser): nobody but a
-- role with the superuser's privileges may run them.
SELECT kind, state, attempt FROM jobq.jobs WHERE kind LIKE 'sec.gen.%.victim' ORDER BY 1;
-- The generic test's jobs stay out of the run_pending calls below.
UPDATE jobq.queue SET paused = true WHERE name LIKE 'sec\_gen\_%';

--
-- (e) Finding 4: jobq_operator and other roles' handlers.  run_pending runs
-- a handler in the caller's session, where the caller's temporary table
-- would stand in for the handler's unqualified "invoices".  The README's
-- charge_invoice, registered by the superuser: an operator's run_pending
-- must not run it at all (it has not the superuser's privileges), so the
-- job stays pending and run_pending returns 0; and in a session that has
-- temporary objects run_pending runs nothing at all (55000), since a
-- handler could also leave temporary objects there for the caller.
--
CREATE SCHEMA sec_billing;
CREATE TABLE sec_billing.invoices (id int, charged boolean);
CREATE FUNCTION sec_billing.charge_invoice(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO invoices VALUES ((p->>'invoice')::int, true);
END $$;
SET search_path = sec_billing, public;
SELECT jobq.register_kind('sec.billing.charge', 'sec_billing.charge_invoice(jsonb)',
                          queue => 'sec_billing');
RESET search_path;
SELECT jobq.enqueue('sec.billing.charge', '{"invoice": 7}') IS NOT NULL AS enqueued;
CREATE ROLE sec_op LOGIN IN ROLE jobq_operator;
-- Planted by the operator: a temporary invoices with a trigger.
CREATE FUNCTION public.sec_plant_invoices() RETURNS void LANGUAGE plpgsql AS $plant$
BEGIN
    PERFORM public.sec_plant_probe();
    CREATE TEMP TABLE invoices (id pg_catalog.int4, charged pg_catalog.bool);
    EXECUTE $f$
        CREATE FUNCTION pg_temp.invoices_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_temp.hijack('temp table invoices');
            RETURN NEW;
        END $$ $f$;
    CREATE TRIGGER steal BEFORE INSERT ON pg_temp.invoices
        FOR EACH ROW EXECUTE FUNCTION pg_temp.invoices_trigger();
END $plant$;
\c - sec_op
SELECT jobq.run_pending() AS ran;
SELECT public.sec_plant_invoices();
SELECT jobq.run_pending() AS ran;
SELECT count(*) AS rows_in_temp_invoices FROM pg_temp.invoices;
\c - :sec_su
SELECT rolsuper AS op_is_superuser FROM pg_roles WHERE rolname = 'sec_op';
ALTER ROLE sec_op NOSUPERUSER;
SELECT state, attempt FROM jobq.jobs WHERE kind = 'sec.billing.charge';
SELECT DISTINCT sec_who(who, attacker) AS ran_as, what FROM hijack_log
 WHERE attacker = 'sec_op' ORDER BY 1, 2;

-- A kind registered by a role the operator is a member of does run in the
-- operator's run_pending (in a session without temporary objects), and its
-- unqualified "invoices" is the one of the search_path fixed when the kind
-- was registered.
CREATE ROLE sec_team LOGIN;
CREATE SCHEMA sec_team AUTHORIZATION sec_team;
GRANT jobq_admin TO sec_team;
SET ROLE sec_team;
CREATE TABLE sec_team.invoices (id int, charged boolean);
CREATE FUNCTION sec_team.charge_invoice(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO invoices VALUES ((p->>'invoice')::int, true);
END $$;
SET search_path = sec_team, public;
SELECT jobq.register_kind('sec.team.charge', 'sec_team.charge_invoice(jsonb)',
                          queue => 'sec_team');
RESET search_path;
SELECT jobq.enqueue('sec.team.charge', '{"invoice": 8}') IS NOT NULL AS enqueued;
RESET ROLE;
REVOKE jobq_admin FROM sec_team;
GRANT sec_team TO sec_op;
SELECT name, search_path FROM jobq.kinds WHERE name LIKE 'sec.%.charge' ORDER BY 1;
\c - sec_op
SELECT public.sec_plant_invoices();
SELECT jobq.run_pending() AS ran;
\c - sec_op
SELECT jobq.run_pending() AS ran;
\c - :sec_su
SELECT kind, state, attempt FROM jobq.jobs WHERE kind LIKE 'sec.%.charge' ORDER BY 1;
SELECT id, charged FROM sec_team.invoices ORDER BY 1;
SELECT DISTINCT sec_who(who, attacker) AS ran_as, what FROM hijack_log
 WHERE attacker = 'sec_op' ORDER BY 1, 2;
SELECT rolsuper AS op_is_superuser FROM pg_roles WHERE rolname = 'sec_op';
ALTER ROLE sec_op NOSUPERUSER;
-- The superuser's job is still there for the superuser to run, and its
-- "invoices" is sec_billing's.
SELECT jobq.run_pending() AS ran;
SELECT id, charged FROM sec_billing.invoices ORDER BY 1;

--
-- (f) Finding 7: handlers of two roles, one after the other.  Alice's
-- handler opens a cursor over her table and returns without closing it;
-- Bob's handler runs next (same priority, enqueued after) and fetches from
-- a cursor of that name.  The cursor must be gone: Bob's job fails with
-- 34000 (invalid_cursor_name) and he read nothing.  (Handlers of two roles
-- never share a batch, nor a run_pending call: the first call runs
-- Alice's, the second Bob's.)
--
CREATE ROLE sec_alice LOGIN;
CREATE ROLE sec_bob LOGIN;
CREATE SCHEMA sec_alice AUTHORIZATION sec_alice;
CREATE SCHEMA sec_bob AUTHORIZATION sec_bob;
GRANT jobq_admin TO sec_alice, sec_bob;
SET ROLE sec_alice;
CREATE TABLE sec_alice.alice_secrets (secret text);
INSERT INTO sec_alice.alice_secrets VALUES ('alice pin 1234'), ('alice pin 5678');
CREATE FUNCTION sec_alice.leave_cursor(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    c refcursor := 'alice_cur';
BEGIN
    OPEN c FOR SELECT secret FROM sec_alice.alice_secrets ORDER BY secret;
END $$;
SELECT jobq.register_kind('sec.alice', 'sec_alice.leave_cursor(jsonb)', queue => 'sec_portal');
RESET ROLE;
SET ROLE sec_bob;
CREATE TABLE sec_bob.loot (stolen text);
CREATE FUNCTION sec_bob.read_cursor(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    c refcursor := 'alice_cur';
    v text;
BEGIN
    LOOP
        FETCH c INTO v;
        EXIT WHEN NOT FOUND;
        INSERT INTO sec_bob.loot VALUES (v);
    END LOOP;
END $$;
SELECT jobq.register_kind('sec.bob', 'sec_bob.read_cursor(jsonb)', queue => 'sec_portal',
                          max_attempts => 1);
RESET ROLE;
REVOKE jobq_admin FROM sec_alice, sec_bob;
SELECT has_table_privilege('sec_bob', 'sec_alice.alice_secrets', 'SELECT') AS bob_may_read;
SELECT jobq.enqueue('sec.alice', run_at => now() - interval '2 seconds') IS NOT NULL AS enqueued;
SELECT jobq.enqueue('sec.bob', run_at => now() - interval '1 second') IS NOT NULL AS enqueued;
SELECT jobq.run_pending() AS ran;
SELECT jobq.run_pending() AS ran;
SELECT count(*) AS rows_bob_read FROM sec_bob.loot;
SELECT j.kind, j.state, j.attempt, e.sqlstate
  FROM jobq.jobs j LEFT JOIN jobq.job_error e ON e.job_id = j.id
 WHERE j.kind IN ('sec.alice', 'sec.bob') ORDER BY 1;

--
-- (g) Finding 8, the handler's side: a session-level advisory lock a
-- handler takes does not outlive it.  This session holds none before
-- run_pending, and none after.
--
CREATE FUNCTION public.sec_take_lock(p jsonb) RETURNS void LANGUAGE sql
    AS $$ SELECT pg_advisory_lock(777) $$;
SELECT jobq.register_kind('sec.locker', 'public.sec_take_lock(jsonb)', queue => 'sec_locks');
SELECT count(*) AS advisory_locks_before FROM pg_locks
 WHERE locktype = 'advisory' AND pid = pg_backend_pid();
SELECT jobq.enqueue('sec.locker') IS NOT NULL AS enqueued;
SELECT jobq.run_pending() AS ran;
SELECT state, attempt FROM jobq.jobs WHERE kind = 'sec.locker';
SELECT count(*) AS advisory_locks_after FROM pg_locks
 WHERE locktype = 'advisory' AND pid = pg_backend_pid();
SELECT pg_advisory_unlock_all();

--
-- (h) Finding 9: the 40P01 hand-back.  A handler that raises
-- deadlock_detected is handed back, uncharged, to the next transaction, at
-- most 5 times; then its attempt is charged.  Two jobs whose ids are equal
-- modulo 64 must not reset each other's count: after 20 transactions each
-- has been charged (max_attempts 1: failed), with 40P01 recorded.
--
CREATE FUNCTION public.sec_deadlocked(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'simulated deadlock' USING ERRCODE = 'deadlock_detected';
END $$;
SELECT jobq.register_kind('sec.deadlock', 'public.sec_deadlocked(jsonb)', queue => 'sec_deadlock',
                          max_attempts => 1, backoff_base => '1 hour');
SELECT setval('jobq.job_id_seq', (nextval('jobq.job_id_seq') / 64 + 1) * 64 + 5, false) > 0
    AS placed;
SELECT jobq.enqueue('sec.deadlock', '{"n": 1}') AS sec_dl_1 \gset
SELECT setval('jobq.job_id_seq', (nextval('jobq.job_id_seq') / 64 + 1) * 64 + 5, false) > 0
    AS placed;
SELECT jobq.enqueue('sec.deadlock', '{"n": 2}') AS sec_dl_2 \gset
SELECT :sec_dl_1 % 64 = :sec_dl_2 % 64 AS congruent_mod_64;
-- run_pending stops at a hand-back so that its caller commits first: one
-- call per transaction.
DO $$
BEGIN
    FOR i IN 1..20 LOOP
        PERFORM jobq.run_pending();
        COMMIT;
    END LOOP;
END $$;
SELECT payload->>'n' AS n, state, attempt FROM jobq.jobs WHERE kind = 'sec.deadlock' ORDER BY 1;
SELECT j.payload->>'n' AS n, e.attempt, e.sqlstate
  FROM jobq.job_error e JOIN jobq.jobs j ON j.id = e.job_id
 WHERE j.kind = 'sec.deadlock' ORDER BY 1, 2;

--
-- The second review of 0.3.  Its attackers plant permanent objects (the
-- handlers they target run in the superuser's sessions, not theirs):
-- public.sec_make_trap(fn, attacker, what) creates, as its caller, a
-- function fn returning jsonb that records its use in hijack_log, counts
-- uses by any role other than the attacker, and then tries ALTER ROLE
-- <attacker> SUPERUSER.  Every jobq.run_pending() below runs in a session
-- that has made no temporary object.
--
CREATE FUNCTION public.sec_make_trap(fn text, attacker name, what text) RETURNS void
LANGUAGE plpgsql AS $make$
BEGIN
    EXECUTE pg_catalog.format($f$
        CREATE FUNCTION %s RETURNS pg_catalog.jsonb LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO public.hijack_log (attacker, who, what) VALUES (%L, current_user, %L);
            IF current_user OPERATOR(pg_catalog.<>) %L THEN
                PERFORM pg_catalog.nextval('public.hijack_foreign_uses');
                BEGIN
                    EXECUTE pg_catalog.format('ALTER ROLE %%I SUPERUSER', %L);
                EXCEPTION WHEN OTHERS THEN
                    NULL;
                END;
            END IF;
            RETURN '{"by": "the trap"}';
        END $$ $f$, fn, attacker, what, attacker, attacker);
END $make$;

--
-- (i) Second review, finding 1: the owner of the schema that a superuser
-- kind's handler lives in (as a database's owner owns public) replaces the
-- handler.  The superuser registers sec.swap with sec_dbo.work(jsonb), a
-- function of its own in sec_dbo's schema; sec_dbo drops it and creates
-- its own work(jsonb).  The handler runs as the kind's role, a superuser:
-- the job must fail (42501: the function's owner has not the superuser's
-- privileges) without running it.  And register_kind refuses a function
-- whose owner has not the registering role's privileges, for a new kind
-- and for an existing one.
--
CREATE ROLE sec_dbo LOGIN;
CREATE SCHEMA sec_dbo AUTHORIZATION sec_dbo;
CREATE FUNCTION sec_dbo.work(p jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT '{"by": "the superuser''s handler"}'::jsonb $$;
SELECT jobq.register_kind('sec.swap', 'sec_dbo.work(jsonb)', queue => 'sec_swap',
                          max_attempts => 1);
SELECT jobq.enqueue('sec.swap') IS NOT NULL AS enqueued;
\c - sec_dbo
DROP FUNCTION sec_dbo.work(jsonb);
SELECT public.sec_make_trap('sec_dbo.work(p jsonb)', 'sec_dbo', 'replaced handler');
\c - :sec_su
SELECT jobq.run_pending() AS ran;
SELECT j.state, j.attempt, j.result, e.sqlstate
  FROM jobq.jobs j LEFT JOIN jobq.job_error e ON e.job_id = j.id
 WHERE j.kind = 'sec.swap';
SELECT DISTINCT sec_who(who, attacker) AS ran_as, what FROM hijack_log
 WHERE attacker = 'sec_dbo' ORDER BY 1, 2;
SELECT rolsuper AS dbo_is_superuser FROM pg_roles WHERE rolname = 'sec_dbo';
ALTER ROLE sec_dbo NOSUPERUSER;
-- sec_dbo's function as the handler of a superuser's kind: refused.
SELECT jobq.register_kind('sec.swap.new', 'sec_dbo.work(jsonb)', queue => 'sec_swap');
SELECT jobq.register_kind('sec.swap', 'sec_dbo.work(jsonb)', queue => 'sec_swap',
                          max_attempts => 1);
SELECT name, handler FROM jobq.kinds WHERE name LIKE 'sec.swap%' ORDER BY 1;
UPDATE jobq.queue SET paused = true WHERE name = 'sec_swap';

--
-- (j) Second review, finding 2: the kind's search_path.  The superuser's
-- handler public.sec_sp_handler calls sec_sp_note() unqualified; the one
-- it means is sec_sp_app's.  sec_sp_attacker may create schemas in the
-- database.
--
CREATE ROLE sec_sp_attacker LOGIN;
SELECT current_database() AS sec_db \gset
GRANT CREATE ON DATABASE :"sec_db" TO sec_sp_attacker;
CREATE SCHEMA sec_sp_app;
CREATE FUNCTION sec_sp_app.sec_sp_note(p jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT '{"by": "sec_sp_app"}'::jsonb $$;
CREATE FUNCTION public.sec_sp_handler(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN sec_sp_note(p);
END $$;
-- (j1) "$user" with no schema of the superuser's name: the stored path
-- keeps no "$user", so a schema of that name made later is not searched.
SELECT count(*) AS schemas_named_after_superuser FROM pg_namespace WHERE nspname = current_user;
SET search_path = "$user", sec_sp_app;
SELECT jobq.register_kind('sec.sp.user', 'public.sec_sp_handler(jsonb)', queue => 'sec_sp',
                          max_attempts => 1);
-- (j2) A schema that another role controls: its owner, or a role granted
-- CREATE on it, could put an object in it for the handler to find.
-- Refused (42501), wherever it stands in the path; a kind with no
-- in-database handler never uses its path, and is not.
CREATE SCHEMA sec_sp_owned AUTHORIZATION sec_sp_attacker;
CREATE SCHEMA sec_sp_granted;
GRANT CREATE ON SCHEMA sec_sp_granted TO sec_sp_attacker;
SET search_path = sec_sp_owned, sec_sp_app;
SELECT jobq.register_kind('sec.sp.owned', 'public.sec_sp_handler(jsonb)', queue => 'sec_sp');
SET search_path = sec_sp_app, sec_sp_granted;
SELECT jobq.register_kind('sec.sp.granted', 'public.sec_sp_handler(jsonb)', queue => 'sec_sp');
SET search_path = sec_sp_owned, sec_sp_granted;
SELECT jobq.register_kind('sec.sp.external', queue => 'sec_sp_ext');
-- CREATE granted to PUBLIC is refused the same way: any role could put a
-- sec_sp_note in sec_sp_public for this kind's handler, which runs as the
-- superuser (so could a public schema that still grants CREATE to PUBLIC,
-- as before PostgreSQL 15).
CREATE SCHEMA sec_sp_public;
GRANT CREATE ON SCHEMA sec_sp_public TO PUBLIC;
SET search_path = sec_sp_public, sec_sp_app;
SELECT jobq.register_kind('sec.sp.public', 'public.sec_sp_handler(jsonb)', queue => 'sec_sp');
-- (j3) A schema safe at registration, and granted CREATE afterwards.
CREATE SCHEMA sec_sp_late;
SET search_path = sec_sp_late, sec_sp_app;
SELECT jobq.register_kind('sec.sp.late', 'public.sec_sp_handler(jsonb)', queue => 'sec_sp',
                          max_attempts => 1);
GRANT CREATE ON SCHEMA sec_sp_late TO sec_sp_attacker;
-- (j4) A schema that does not exist yet: left out, with a NOTICE.
SET search_path = sec_sp_later, sec_sp_app;
SELECT jobq.register_kind('sec.sp.missing', 'public.sec_sp_handler(jsonb)', queue => 'sec_sp',
                          max_attempts => 1);
RESET search_path;
SELECT name, search_path FROM jobq.kinds WHERE name LIKE 'sec.sp.%' ORDER BY 1;
-- The attacker plants a sec_sp_note of its own in a schema named after
-- the superuser, in sec_sp_late, and in sec_sp_later.
\c - sec_sp_attacker
CREATE SCHEMA :"sec_su";
SELECT public.sec_make_trap(format('%I.sec_sp_note(p jsonb)', :'sec_su'), 'sec_sp_attacker',
                            'schema named after the superuser');
SELECT public.sec_make_trap('sec_sp_late.sec_sp_note(p jsonb)', 'sec_sp_attacker',
                            'schema granted CREATE later');
CREATE SCHEMA sec_sp_later;
SELECT public.sec_make_trap('sec_sp_later.sec_sp_note(p jsonb)', 'sec_sp_attacker',
                            'schema made later');
\c - :sec_su
SELECT count(jobq.enqueue(k)) AS enqueued
  FROM unnest(ARRAY['sec.sp.user', 'sec.sp.late', 'sec.sp.missing']) k;
SELECT jobq.run_pending() AS ran;
-- sec.sp.user and sec.sp.missing found sec_sp_app's; sec.sp.late was
-- refused (42501) before its handler ran.
SELECT j.kind, j.state, j.attempt, j.result, e.sqlstate
  FROM jobq.jobs j LEFT JOIN jobq.job_error e ON e.job_id = j.id
 WHERE j.kind LIKE 'sec.sp.%' ORDER BY 1;
SELECT DISTINCT sec_who(who, attacker) AS ran_as, what FROM hijack_log
 WHERE attacker = 'sec_sp_attacker' ORDER BY 1, 2;
SELECT rolsuper AS sp_attacker_is_superuser FROM pg_roles WHERE rolname = 'sec_sp_attacker';
ALTER ROLE sec_sp_attacker NOSUPERUSER;
-- The schema named after the superuser is the attacker's now: the
-- superuser's default search_path ("$user", public) is refused.
SELECT jobq.register_kind('sec.sp.default', 'public.sec_sp_handler(jsonb)', queue => 'sec_sp');
DROP SCHEMA :"sec_su" CASCADE;
REVOKE CREATE ON DATABASE :"sec_db" FROM sec_sp_attacker;
-- (j5) A schema of the kind's path dropped after registration: whoever
-- made one of that name would choose what the handler finds, so the job
-- fails with 3F000 before its handler runs, and a schema that does exist
-- again is checked again.
CREATE SCHEMA sec_sp_gone;
SET search_path = sec_sp_gone, sec_sp_app;
SELECT jobq.register_kind('sec.sp.gone', 'public.sec_sp_handler(jsonb)', queue => 'sec_sp',
                          max_attempts => 1);
RESET search_path;
DROP SCHEMA sec_sp_gone;
SELECT jobq.enqueue('sec.sp.gone', '{"try": 1}') IS NOT NULL AS enqueued;
SELECT jobq.run_pending() AS ran;
CREATE SCHEMA sec_sp_gone AUTHORIZATION sec_sp_attacker;
SELECT jobq.enqueue('sec.sp.gone', '{"try": 2}') IS NOT NULL AS enqueued;
SELECT jobq.run_pending() AS ran;
SELECT j.payload->>'try' AS try, j.state, e.sqlstate,
       replace(e.message, current_user, 'SU') AS message
  FROM jobq.jobs j LEFT JOIN jobq.job_error e ON e.job_id = j.id
 WHERE j.kind = 'sec.sp.gone' ORDER BY 1;
DROP SCHEMA sec_sp_gone;
UPDATE jobq.queue SET paused = true WHERE name = 'sec_sp';

--
-- (k) Second review, finding 3: large-object descriptors between
-- handlers.  Bob's handler opens his large object for reading and writing
-- and returns without closing it; Alice's, next, reads and writes
-- descriptor 0.  It must be gone: Alice's job fails with 42704 (invalid
-- large-object descriptor), she read nothing, and Bob's object is
-- unchanged.  (One role per run_pending call: two calls.)
--
CREATE ROLE sec_lo_alice LOGIN;
CREATE ROLE sec_lo_bob LOGIN;
CREATE SCHEMA sec_lo_alice AUTHORIZATION sec_lo_alice;
CREATE SCHEMA sec_lo_bob AUTHORIZATION sec_lo_bob;
GRANT jobq_admin TO sec_lo_alice, sec_lo_bob;
SET ROLE sec_lo_bob;
CREATE TABLE sec_lo_bob.doc (lo oid);
INSERT INTO sec_lo_bob.doc SELECT lo_from_bytea(0, 'bob''s secret');
CREATE FUNCTION sec_lo_bob.open_doc(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM lo_open(lo, x'60000'::int) FROM sec_lo_bob.doc;  -- INV_READ | INV_WRITE
END $$;
SELECT jobq.register_kind('sec.lo.bob', 'sec_lo_bob.open_doc(jsonb)', queue => 'sec_lo');
RESET ROLE;
SET ROLE sec_lo_alice;
CREATE TABLE sec_lo_alice.loot (got bytea);
CREATE FUNCTION sec_lo_alice.use_fd0(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sec_lo_alice.loot VALUES (loread(0, 100));
    PERFORM lo_lseek(0, 0, 0);
    PERFORM lowrite(0, 'alice was here');
END $$;
SELECT jobq.register_kind('sec.lo.alice', 'sec_lo_alice.use_fd0(jsonb)', queue => 'sec_lo',
                          max_attempts => 1);
RESET ROLE;
REVOKE jobq_admin FROM sec_lo_alice, sec_lo_bob;
-- Bob's object is his alone.
SELECT m.lomowner::regrole AS lo_owner, m.lomacl AS lo_acl
  FROM pg_largeobject_metadata m JOIN sec_lo_bob.doc d ON d.lo = m.oid;
SELECT jobq.enqueue('sec.lo.bob', run_at => now() - interval '2 seconds') IS NOT NULL AS enqueued;
SELECT jobq.enqueue('sec.lo.alice', run_at => now() - interval '1 second') IS NOT NULL
    AS enqueued;
SELECT jobq.run_pending() AS ran;
SELECT jobq.run_pending() AS ran;
SELECT j.kind, j.state, j.attempt, e.sqlstate
  FROM jobq.jobs j LEFT JOIN jobq.job_error e ON e.job_id = j.id
 WHERE j.kind LIKE 'sec.lo.%' ORDER BY 1;
SELECT count(*) AS rows_alice_read FROM sec_lo_alice.loot;
SELECT convert_from(lo_get(lo), 'UTF8') AS bobs_object FROM sec_lo_bob.doc;
UPDATE jobq.queue SET paused = true WHERE name = 'sec_lo';

--
-- (l) Second review, finding 4: one SQL-language handler, two kinds of two
-- roles, over a table with row security: each role sees its own rows, but
-- for Alice, who owns the table, the policy does not apply.  A SQL
-- function keeps its plans between calls, with the policies of the role
-- they were made for: made for Alice (no policy), they must not serve
-- Bob.  Alice's job then Bob's: Bob gets only his row.  They never share a
-- transaction (a function called from a PL/pgSQL handler keeps its state
-- per transaction, not per role): the first run_pending call runs Alice's
-- job only, the second Bob's.
--
CREATE ROLE sec_rls_alice LOGIN;
CREATE ROLE sec_rls_bob LOGIN;
CREATE TABLE public.sec_rls_notes (owner name, note text);
INSERT INTO public.sec_rls_notes VALUES ('sec_rls_alice', 'alice 1'), ('sec_rls_alice', 'alice 2'),
    ('sec_rls_bob', 'bob 1');
ALTER TABLE public.sec_rls_notes OWNER TO sec_rls_alice;
ALTER TABLE public.sec_rls_notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON public.sec_rls_notes USING (owner = current_user);
GRANT SELECT ON public.sec_rls_notes TO sec_rls_bob;
CREATE FUNCTION public.sec_rls_read(p jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT coalesce(jsonb_agg(note ORDER BY note), '[]') FROM public.sec_rls_notes
$$;
GRANT jobq_admin TO sec_rls_alice, sec_rls_bob;
SET ROLE sec_rls_alice;
SELECT jobq.register_kind('sec.rls.alice', 'public.sec_rls_read(jsonb)', queue => 'sec_rls');
RESET ROLE;
SET ROLE sec_rls_bob;
SELECT jobq.register_kind('sec.rls.bob', 'public.sec_rls_read(jsonb)', queue => 'sec_rls');
-- What Bob may read himself.
SELECT public.sec_rls_read('{}') AS bob_reads;
RESET ROLE;
REVOKE jobq_admin FROM sec_rls_alice, sec_rls_bob;
SELECT jobq.enqueue('sec.rls.alice', run_at => now() - interval '2 seconds') IS NOT NULL
    AS enqueued;
SELECT jobq.enqueue('sec.rls.bob', run_at => now() - interval '1 second') IS NOT NULL
    AS enqueued;
SELECT jobq.run_pending() AS ran;
SELECT kind, state FROM jobq.jobs WHERE kind LIKE 'sec.rls.%' ORDER BY 1;
SELECT jobq.run_pending() AS ran;
SELECT kind, state, result FROM jobq.jobs WHERE kind LIKE 'sec.rls.%' ORDER BY 1;
UPDATE jobq.queue SET paused = true WHERE name = 'sec_rls';

--
-- (m) Second review, finding 5: a handler that raises query_canceled
-- itself.  In run_pending a 57014 is the caller's only if the session was
-- cancelled; this one is the job's: run_pending goes on, the job's attempt
-- is charged (max_attempts 1: failed) with 57014 recorded, and the jobs
-- before and after it in the batch run.
--
CREATE FUNCTION public.sec_self_cancel(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'not a cancel' USING ERRCODE = 'query_canceled';
END $$;
CREATE FUNCTION public.sec_echo(p jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT p $$;
SELECT jobq.register_kind('sec.self_cancel', 'public.sec_self_cancel(jsonb)',
                          queue => 'sec_self_cancel', max_attempts => 1);
SELECT jobq.register_kind('sec.echo', 'public.sec_echo(jsonb)', queue => 'sec_self_cancel');
SELECT jobq.enqueue('sec.echo', '{"n": 1}', run_at => now() - interval '3 seconds') IS NOT NULL
    AS enqueued;
SELECT jobq.enqueue('sec.self_cancel', '{"n": 2}', run_at => now() - interval '2 seconds')
    IS NOT NULL AS enqueued;
SELECT jobq.enqueue('sec.echo', '{"n": 3}', run_at => now() - interval '1 second') IS NOT NULL
    AS enqueued;
SELECT jobq.run_pending() AS ran;
SELECT j.payload->>'n' AS n, j.kind, j.state, j.attempt, j.result, e.sqlstate
  FROM jobq.jobs j LEFT JOIN jobq.job_error e ON e.job_id = j.id
 WHERE j.queue = 'sec_self_cancel' ORDER BY 1;
UPDATE jobq.queue SET paused = true WHERE name = 'sec_self_cancel';

--
-- (n) Second review, finding 6: a handler that catches the cancel of its
-- kind's timeout (200 ms) and raises deadlock_detected instead.  A 40P01
-- is otherwise handed back, uncharged, for the next transaction, up to 5
-- times; past the timeout it ends the attempt: the first run_pending
-- charges it (max_attempts 1: failed, attempt 1, 40P01 recorded).  The
-- calls are made one per transaction, as a hand-back needs, until the job
-- is no longer pending (6 at most); a sequence, which no rollback undoes,
-- counts the handler's runs.
--
CREATE SEQUENCE public.sec_sly_runs MINVALUE 0 START 0;
SELECT setval('public.sec_sly_runs', 0, true) AS no_run_yet;
CREATE FUNCTION public.sec_sly(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('public.sec_sly_runs');
    BEGIN
        PERFORM pg_sleep(1);
    EXCEPTION WHEN query_canceled THEN
        RAISE EXCEPTION 'a deadlock, not a timeout' USING ERRCODE = 'deadlock_detected';
    END;
END $$;
SELECT jobq.register_kind('sec.sly', 'public.sec_sly(jsonb)', queue => 'sec_sly',
                          max_attempts => 1, timeout => '200 ms');
SELECT jobq.enqueue('sec.sly') IS NOT NULL AS enqueued;
CREATE TABLE public.sec_sly_calls (call int, state text, attempt int, handler_runs bigint);
DO $$
BEGIN
    FOR i IN 1..6 LOOP
        PERFORM jobq.run_pending();
        INSERT INTO public.sec_sly_calls
        SELECT i, j.state, j.attempt, s.last_value
          FROM jobq.jobs j, public.sec_sly_runs s WHERE j.kind = 'sec.sly';
        COMMIT;
        EXIT WHEN (SELECT state FROM jobq.jobs WHERE kind = 'sec.sly') <> 'pending';
    END LOOP;
END $$;
-- Charged by the first call, and run once: a handler cancelled at its
-- timeout is not run again when its batch is rerun job by job, whatever
-- error it raised then.
SELECT call, state, attempt, handler_runs FROM public.sec_sly_calls ORDER BY call;
SELECT e.attempt, e.sqlstate
  FROM jobq.job_error e JOIN jobq.jobs j ON j.id = e.job_id
 WHERE j.kind = 'sec.sly' ORDER BY 1;
UPDATE jobq.queue SET paused = true WHERE name = 'sec_sly';

--
-- (o) run_pending runs handlers in the caller's transaction, so it refuses
-- one that holds what a handler could use with the caller's rights: an
-- open cursor (fetched by name), large objects opened in it (descriptors
-- by number).  A cursor closed again is fine.
--
BEGIN;
DECLARE sec_mine CURSOR FOR SELECT 1;
SELECT jobq.run_pending() AS ran;
ROLLBACK;
BEGIN;
SELECT lo_open(lo_create(0), x'20000'::int) AS fd;
SELECT jobq.run_pending() AS ran;
ROLLBACK;
BEGIN;
DECLARE sec_closed CURSOR FOR SELECT 1;
CLOSE sec_closed;
SELECT jobq.run_pending() AS ran;
ROLLBACK;

--
-- (p) Third review: handlers of two roles never share a transaction, even
-- across several run_pending calls in it.  One role's handler could
-- otherwise use what another's left cached in the transaction (a PL/pgSQL
-- expression's state, built with the other role's EXECUTE right).  Three
-- calls in one statement run one role's job; the next transaction, the
-- other's.
--
CREATE ROLE sec_tx_alice LOGIN;
CREATE ROLE sec_tx_bob LOGIN;
CREATE FUNCTION public.sec_tx_echo(p jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT to_jsonb(current_user::text) $$;
GRANT jobq_admin TO sec_tx_alice, sec_tx_bob;
SET ROLE sec_tx_alice;
SELECT jobq.register_kind('sec.tx.alice', 'public.sec_tx_echo(jsonb)', queue => 'sec_tx');
RESET ROLE;
SET ROLE sec_tx_bob;
SELECT jobq.register_kind('sec.tx.bob', 'public.sec_tx_echo(jsonb)', queue => 'sec_tx');
RESET ROLE;
REVOKE jobq_admin FROM sec_tx_alice, sec_tx_bob;
SELECT jobq.enqueue('sec.tx.alice', run_at => now() - interval '2 seconds') IS NOT NULL AS enqueued;
SELECT jobq.enqueue('sec.tx.bob', run_at => now() - interval '1 second') IS NOT NULL AS enqueued;
SELECT jobq.run_pending() AS ran FROM generate_series(1, 3);
SELECT kind, state, result FROM jobq.jobs WHERE kind LIKE 'sec.tx.%' ORDER BY 1;
SELECT jobq.run_pending() AS ran;
SELECT kind, state, result FROM jobq.jobs WHERE kind LIKE 'sec.tx.%' ORDER BY 1;
UPDATE jobq.queue SET paused = true WHERE name = 'sec_tx';

--
-- (q) Third review: run_pending refuses a session that holds advisory
-- locks: a handler could release them (pg_advisory_unlock_all), and jobq
-- could not tell its own session's from a handler's to release those.
--
SELECT pg_advisory_lock(4242);
SELECT jobq.run_pending() AS ran;
SELECT pg_advisory_unlock(4242);
SELECT jobq.run_pending() AS ran;

--
-- (A5) Authorization review, finding 5: subscribe() makes the checks of
-- CREATE TRIGGER ON schema.table: USAGE on the schema, then TRIGGER on the
-- table.  An admin with TRIGGER on a table in a schema it may not use
-- passed the table by OID (no name lookup, so no USAGE check) and got its
-- rows in the payloads.
--
CREATE ROLE sec_sub_admin LOGIN;
GRANT jobq_admin TO sec_sub_admin;
CREATE SCHEMA sec_hidden;
CREATE TABLE sec_hidden.payroll (who text, salary int);
GRANT TRIGGER ON sec_hidden.payroll TO sec_sub_admin;
SELECT 'sec_hidden.payroll'::regclass::oid AS sec_payroll \gset
SELECT jobq.register_kind('sec.sub.sink', queue => 'sec_sub');
\c - sec_sub_admin
-- PostgreSQL refuses the trigger, and jobq the subscription, whose
-- table comes by OID.
CREATE TRIGGER sec_direct AFTER INSERT ON sec_hidden.payroll
    FOR EACH ROW EXECUTE FUNCTION pg_catalog.suppress_redundant_updates_trigger();
SELECT jobq.subscribe('sec.sub.payroll', :sec_payroll::pg_catalog.oid::pg_catalog.regclass,
                      'sec.sub.sink');
\c - :sec_su
INSERT INTO sec_hidden.payroll VALUES ('ceo', 1000000);
SELECT count(*) AS payroll_jobs FROM jobq.jobs WHERE kind = 'sec.sub.sink';
-- With USAGE on the schema, the subscription is made.
GRANT USAGE ON SCHEMA sec_hidden TO sec_sub_admin;
\c - sec_sub_admin
SELECT jobq.subscribe('sec.sub.payroll', :sec_payroll::pg_catalog.oid::pg_catalog.regclass,
                      'sec.sub.sink');
\c - :sec_su
-- Without USAGE, it cannot be unsubscribed either (nor the trigger
-- dropped), as DROP TRIGGER ... ON sec_hidden.payroll would need it.
REVOKE USAGE ON SCHEMA sec_hidden FROM sec_sub_admin;
\c - sec_sub_admin
SELECT jobq.unsubscribe('sec.sub.payroll');
\c - :sec_su
GRANT USAGE ON SCHEMA sec_hidden TO sec_sub_admin;
REVOKE TRIGGER ON sec_hidden.payroll FROM sec_sub_admin;
\c - sec_sub_admin
-- Without TRIGGER on the table, as before.
SELECT jobq.unsubscribe('sec.sub.payroll');
SELECT jobq.subscribe('sec.sub.payroll2', :sec_payroll::pg_catalog.oid::pg_catalog.regclass,
                      'sec.sub.sink');
\c - :sec_su
SELECT jobq.unsubscribe('sec.sub.payroll');
DROP SCHEMA sec_hidden CASCADE;

--
-- (A2) Authorization review, finding 2: lease tokens are random, and no
-- error, log line or view shows them.  A role with only jobq_worker took
-- over another worker's job: a token was a per-claim counter (1 at a
-- first claim), and heartbeat's error named the current one; heartbeat
-- with it made the thief the holder, and external_key, step_result and
-- complete worked for it.  Here the thief tries every token a counter
-- would have given and keeps each error's text: none is accepted, and no
-- text names a token.
--
CREATE ROLE sec_tok_victim LOGIN;
CREATE ROLE sec_tok_thief LOGIN;
CREATE ROLE sec_tok_op LOGIN;
GRANT jobq_worker TO sec_tok_victim, sec_tok_thief;
GRANT jobq_operator TO sec_tok_op;
CREATE TABLE public.sec_tok_seen (what text);
GRANT INSERT ON public.sec_tok_seen TO sec_tok_thief;
SELECT jobq.register_kind('sec.tok.pay', queue => 'sec_tok');
SELECT jobq.enqueue('sec.tok.pay', '{"amount": 100}') AS sec_tok_job \gset
\c - sec_tok_victim
SELECT lease_token AS sec_tok_token FROM jobq.claim('sec_tok', 'victim', 1, '1 hour') \gset
SELECT jobq.record_step(:sec_tok_job, 'charge', '{"charge": "ch_1"}', :sec_tok_token);
\c - sec_tok_thief
CREATE FUNCTION pg_temp.sec_tok_try(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    m text; d text; h text; s text;
BEGIN
    EXECUTE stmt;
    RETURN 'accepted';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT,
        d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
    INSERT INTO public.sec_tok_seen VALUES (concat_ws(' | ', m, d, h));
    RETURN s;
END $$;
SELECT pg_temp.sec_tok_try(format(f, :sec_tok_job, t)) AS outcome, count(*) AS tries
  FROM generate_series(0, 1000) t,
       unnest(ARRAY['SELECT jobq.heartbeat(%s, %s)', 'SELECT jobq.complete(%s, %s)',
                    'SELECT jobq.snooze(%s, %s, ''0'')', 'SELECT jobq.fail(%s, %s, ''x'')']) f
 GROUP BY 1 ORDER BY 1;
-- Without the token, the job's steps and keys stay closed to the thief;
-- with the tokens it guesses, too (they take a token from any session,
-- since 0.3: the token is the lease).
SELECT pg_temp.sec_tok_try(format('SELECT jobq.step_result(%s, %L)', :sec_tok_job, 'charge')) AS step_result;
SELECT pg_temp.sec_tok_try(format('SELECT jobq.external_key(%s, %L)', :sec_tok_job, 'charge')) AS external_key;
SELECT pg_temp.sec_tok_try(format(f, :sec_tok_job, t)) AS outcome, count(*) AS tries
  FROM generate_series(0, 1000) t,
       unnest(ARRAY['SELECT jobq.step_result(%s, ''charge'', %s)',
                    'SELECT jobq.external_key(%s, ''charge'', %s)',
                    'SELECT jobq.record_step(%s, ''charge'', ''{}'', %s)']) f
 GROUP BY 1 ORDER BY 1;
\c - sec_tok_op
-- An operator sees the job, not its token.
SELECT state, worker, lease_token IS NULL AS token_hidden FROM jobq.jobs WHERE id = :sec_tok_job;
\c - :sec_su
SELECT count(*) AS errors_kept,
       count(*) FILTER (WHERE what LIKE '%' || :'sec_tok_token' || '%') AS naming_the_token,
       count(*) FILTER (WHERE what ~ '\d{10,}') AS naming_any_token
  FROM public.sec_tok_seen;
-- The job is still the victim's, who completes it; a superuser sees the
-- token.
SELECT state, worker, lease_token = :sec_tok_token AS victims_token, holder_pid IS NULL AS unbound
  FROM jobq.jobs WHERE id = :sec_tok_job;
\c - sec_tok_victim
SELECT jobq.complete(:sec_tok_job, :sec_tok_token, '{"charged": true}');
\c - :sec_su
SELECT state, result FROM jobq.jobs WHERE id = :sec_tok_job;
-- Tokens are random 63-bit numbers, a new one at every claim: twenty
-- claims give twenty tokens, none of them small.
SELECT count(jobq.enqueue('sec.tok.pay', jsonb_build_object('n', g))) AS enqueued
  FROM generate_series(1, 20) g;
CREATE TEMP TABLE sec_tok_claims AS SELECT id, lease_token FROM jobq.claim('sec_tok', 'many', 20);
SELECT count(*) AS claimed, count(DISTINCT lease_token) AS distinct_tokens,
       bool_and(lease_token > 4294967296) AS all_beyond_32_bits
  FROM sec_tok_claims;
SELECT jobq.complete_many(array_agg(id), array_agg(lease_token)) AS completed FROM sec_tok_claims;
DROP TABLE sec_tok_claims, public.sec_tok_seen;

--
-- (A1) Authorization review, finding 1: jobq.once() records each id in the
-- namespace of the role that records it.  Any login role could record
-- once('ship:42') first and silently suppress another role's shipment, or
-- ask once() whether an id was recorded (it said false).  Now each role
-- gets its own answers: alice's ids are not bob's, and bob learns nothing
-- of alice's (an id she recorded and one she did not answer alike).
-- (That an uncommitted once() of another role does not make a worker wait
-- is test/t/057_security_reach.pl, (b).)
--
CREATE ROLE sec_once_alice LOGIN;
CREATE ROLE sec_once_bob LOGIN;
\c - sec_once_bob
-- Bob records alice's operation id first.
SELECT jobq.once('sec.ship:42') AS bob_first;
\c - sec_once_alice
-- Alice's own first record of it is hers: true, then false.
SELECT jobq.once('sec.ship:42') AS alice_first, jobq.once('sec.ship:42') AS alice_again;
SELECT jobq.once('sec.secret:1') AS alice_records_a_secret;
\c - sec_once_bob
-- Bob probes: an id alice recorded and one nobody did answer alike.
SELECT jobq.once('sec.secret:1') AS recorded_by_alice, jobq.once('sec.secret:2') AS recorded_by_nobody;
SELECT jobq.once('sec.ship:42') AS bob_again;
\c - :sec_su
SELECT operation_id, recorded_by FROM jobq.operation WHERE operation_id LIKE 'sec.s%'
 ORDER BY 1, 2::text;
-- A handler records in its kind owner's namespace: alice's kind, run by
-- the superuser's run_pending, finds alice's id recorded.
CREATE FUNCTION public.sec_once_ship(p jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT pg_catalog.to_jsonb(jobq.once('sec.ship:42')) $$;
ALTER FUNCTION public.sec_once_ship(jsonb) OWNER TO sec_once_alice;
GRANT jobq_admin TO sec_once_alice;
\c - sec_once_alice
SET search_path = pg_catalog;
SELECT jobq.register_kind('sec.once.ship', 'public.sec_once_ship(jsonb)', queue => 'sec_once');
SELECT jobq.enqueue('sec.once.ship') AS sec_once_job \gset
\c - :sec_su
SELECT jobq.run_pending() AS ran;
SELECT state, result AS first_time FROM jobq.jobs WHERE id = :sec_once_job;
DELETE FROM jobq.operation WHERE operation_id LIKE 'sec.%';
DELETE FROM jobq.job WHERE id = :sec_once_job;
SELECT jobq.unregister_kind('sec.once.ship');
DROP FUNCTION public.sec_once_ship(jsonb);

--
-- (A4) Authorization review, finding 4: schedules have owners, as kinds
-- do.  Any jobq_admin replaced or dropped anyone's schedule (and pointed
-- it at a kind of its own), created_by stayed the original, and nothing
-- was logged.  Now alice's schedule refuses bob (jobq_admin) and an
-- operator (42501) for every change; alice, a member of her role and a
-- superuser may make them; each change is in jobq.operator_log.
--
CREATE ROLE sec_sch_alice LOGIN;
CREATE ROLE sec_sch_bob LOGIN;
CREATE ROLE sec_sch_op LOGIN;
CREATE ROLE sec_sch_mate LOGIN IN ROLE sec_sch_alice;
GRANT jobq_admin TO sec_sch_alice, sec_sch_bob;
GRANT jobq_operator TO sec_sch_op, sec_sch_mate;
SELECT jobq.register_kind('sec.sch.report', queue => 'sec_sch');
SELECT jobq.register_kind('sec.sch.steal', queue => 'sec_sch');
\c - sec_sch_alice
SELECT jobq.schedule('sec.sch.nightly', '0 3 * * *', 'sec.sch.report') IS NOT NULL AS scheduled;
\c - sec_sch_bob
SELECT jobq.schedule('sec.sch.nightly', '* * * * *', 'sec.sch.steal');
SELECT jobq.pause_schedule('sec.sch.nightly');
SELECT jobq.resume_schedule('sec.sch.nightly');
SELECT jobq.run_schedule_now('sec.sch.nightly');
SELECT jobq.unschedule('sec.sch.nightly');
\c - sec_sch_op
SELECT jobq.pause_schedule('sec.sch.nightly');
SELECT jobq.resume_schedule('sec.sch.nightly');
SELECT jobq.run_schedule_now('sec.sch.nightly');
\c - :sec_su
SELECT name, cron, kind, paused, owner, created_by FROM jobq.schedules WHERE name LIKE 'sec.sch.%';
SELECT count(*) AS jobs FROM jobq.jobs WHERE kind LIKE 'sec.sch.%';
-- A member of alice's role, with jobq_operator.
\c - sec_sch_mate
SELECT jobq.pause_schedule('sec.sch.nightly');
SELECT jobq.resume_schedule('sec.sch.nightly');
SELECT jobq.run_schedule_now('sec.sch.nightly') IS NOT NULL AS ran_now;
\c - sec_sch_alice
SELECT jobq.schedule('sec.sch.nightly', '0 4 * * *', 'sec.sch.report') IS NOT NULL AS replaced;
\c - :sec_su
SELECT name, cron, kind, paused, owner, created_by FROM jobq.schedules WHERE name LIKE 'sec.sch.%';
SELECT jobq.unschedule('sec.sch.nightly');
SELECT CASE WHEN role = current_user THEN 'the superuser' ELSE role::text END AS role,
       action, cardinality(job_ids) AS jobs, schedule
  FROM jobq.operator_log WHERE schedule LIKE 'sec.sch.%' ORDER BY id;
DELETE FROM jobq.operator_action WHERE schedule LIKE 'sec.sch.%';

--
-- (A9) tick_schedules(now) with a "now" of the caller's choosing fired
-- every schedule, so any jobq_admin could fire another role's slots early
-- (and use up a misfire policy's slots); and a schedule kept enqueuing
-- into its kind's queue after its owner lost the right to produce there.
-- Now bob's tick leaves alice's schedule alone (alice's own fires it), and
-- once alice is no longer an admin the firing fails with 42501, recorded
-- as the slot's event, and enqueues nothing.
--
SELECT jobq.register_kind('sec.sch.tick', queue => 'sec_sch');
\c - sec_sch_alice
SELECT jobq.schedule('sec.sch.tick', '0 * * * *', 'sec.sch.tick', overlap => 'allow',
                     start_at => '2000-01-01 00:00+00') IS NOT NULL AS scheduled;
\c - sec_sch_bob
SELECT jobq.tick_schedules('2000-01-01 00:00:30+00') AS bob_fired;
\c - sec_sch_alice
SELECT jobq.tick_schedules('2000-01-01 00:00:30+00') AS alice_fired;
\c - :sec_su
REVOKE jobq_admin FROM sec_sch_alice;
SELECT jobq.tick_schedules('2000-01-01 01:00:30+00') AS fired_without_privilege;
SELECT slot, event, job_id IS NOT NULL AS has_job, detail
  FROM jobq.schedule_events WHERE schedule = 'sec.sch.tick' ORDER BY id;
SELECT count(*) AS jobs FROM jobq.jobs WHERE kind = 'sec.sch.tick';
SELECT jobq.unschedule('sec.sch.tick');
DELETE FROM jobq.job WHERE kind = 'sec.sch.tick';
DELETE FROM jobq.job_key WHERE kind = 'sec.sch.tick';
SELECT jobq.unregister_kind('sec.sch.tick');
DELETE FROM jobq.operator_action WHERE schedule LIKE 'sec.sch.%';

--
-- (A6) Authorization review, finding 6: a subscription's trigger is the
-- trigger on its table that calls jobq.dispatch() with the subscription's
-- name, whatever it is called.  A subscription trigger renamed by its
-- table's owner became an orphan: it kept enqueuing, unsubscribe could not
-- find it, the next DROP of anything forgot the subscription, and DROP
-- EXTENSION jobq failed on it.  In a database of its own, where the
-- extension is dropped at the end.
--
SELECT current_database() AS sec_first_db \gset
CREATE DATABASE jobq_sec_subs;
\c jobq_sec_subs
SET client_min_messages = warning;
CREATE EXTENSION jobq;
CREATE TABLE orders (id int);
CREATE TABLE parted (id int) PARTITION BY RANGE (id);
CREATE TABLE parted_low PARTITION OF parted FOR VALUES FROM (0) TO (10);
SELECT jobq.register_kind('sub.ship');
SELECT jobq.subscribe('sub.orders', 'orders', 'sub.ship');
SELECT jobq.subscribe('sub.audit', 'orders', 'sub.ship');
SELECT jobq.subscribe('sub.parted', 'parted', 'sub.ship');
ALTER TRIGGER "jobq_sub.orders" ON orders RENAME TO renamed_by_owner;
ALTER TRIGGER "jobq_sub.parted" ON parted RENAME TO parted_renamed;
-- Still the subscriptions', under their new names, also after a DROP.
CREATE TABLE scratch (); DROP TABLE scratch;
SELECT name, source, trigger_name FROM jobq.subscriptions ORDER BY name;
INSERT INTO orders VALUES (1);
SELECT payload->>'subscription' AS subscription, count(*) AS jobs FROM jobq.jobs
 GROUP BY 1 ORDER BY 1;
-- unsubscribe finds the renamed trigger.
SELECT jobq.unsubscribe('sub.orders');
SELECT tgrelid::regclass AS source, tgname FROM pg_trigger
 WHERE tgfoid = 'jobq.dispatch()'::regprocedure AND tgparentid = 0 ORDER BY 1::text, 2;
-- A trigger 0.2 left behind: renamed, then its subscription gone.
ALTER TRIGGER "jobq_sub.audit" ON orders RENAME TO orphan;
DELETE FROM jobq.subscription WHERE name = 'sub.audit';
-- DROP EXTENSION succeeds, and takes every trigger that calls
-- jobq.dispatch() with it: the renamed one, the orphan, the clone on the
-- partition.
DROP EXTENSION jobq;
SELECT count(*) AS triggers_left FROM pg_trigger
 WHERE tgrelid IN ('orders'::regclass, 'parted'::regclass, 'parted_low'::regclass);
RESET client_min_messages;
\c :sec_first_db
DROP DATABASE jobq_sec_subs WITH (FORCE);

--
-- (A8) Authorization review, finding 8: idempotency keys are shared by
-- every producer of a kind (SECURITY.md says what that means).  Their
-- 23505 named the job holding a key to any producer, and a job due in 50
-- years holds its key that long.  Now the detail names the job only to a
-- role that may operate its queue (and so read it in jobq.jobs; jobq.jobs
-- itself any role may read); an operator frees a squatted key with cancel
-- and discard.
--
CREATE ROLE sec_key_mallory LOGIN;
CREATE ROLE sec_key_bob LOGIN;
CREATE ROLE sec_key_admin LOGIN;
CREATE ROLE sec_key_op LOGIN;
GRANT jobq_producer TO sec_key_mallory, sec_key_bob;
GRANT jobq_admin TO sec_key_admin;
GRANT jobq_operator TO sec_key_op;
SELECT jobq.register_kind('sec.key.invoice', queue => 'sec_key');
\c - sec_key_mallory
-- Mallory squats bob's next key with a job due in 50 years.
SELECT jobq.enqueue('sec.key.invoice', '{"amount": 1}', 'invoice-7',
                    run_at => now() + interval '50 years') AS sec_squat \gset
\c - sec_key_bob
SELECT sqlstate, message, detail, detail ~ '[0-9]' AS names_a_number
  FROM error_of($$SELECT jobq.enqueue('sec.key.invoice', '{"amount": 700}', 'invoice-7')$$);
\c - sec_key_admin
-- A role that may operate the job's queue is told which job.
SELECT sqlstate, detail = format('Job %s was enqueued with that key.', :sec_squat) AS names_the_job
  FROM error_of($$SELECT jobq.enqueue('sec.key.invoice', '{"amount": 700}', 'invoice-7')$$);
\c - sec_key_op
SELECT jobq.cancel(:sec_squat, 'squatted key invoice-7');
SELECT jobq.discard(:sec_squat, 'squatted key invoice-7');
\c - sec_key_bob
SELECT jobq.enqueue('sec.key.invoice', '{"amount": 700}', 'invoice-7') <> :sec_squat AS own_job;
\c - :sec_su

--
-- (r) A schedule's firing and a subscription's trigger enqueue through
-- jobq's C code, not through a SELECT jobq.enqueue(...) of their own, and
-- must still make every check that call made: the enqueue runs as jobq's
-- owner and checks that role's produce privilege on the job's queue (a
-- schedule checks its owner's first: A9).  In a database of its own, jobq
-- is installed by a superuser who is then made an ordinary role.  A write
-- to a subscribed table, a tick and a run_schedule_now of a schedule whose
-- owner (the superuser running this file) may produce everywhere then fail
-- with 42501 naming the installer, and enqueue nothing, until the
-- installer may produce (here through jobq_producer: jobq.grant() itself
-- reads pg_authid, which a demoted owner may not).
--
SELECT current_database() AS sec_enq_first_db \gset
CREATE ROLE sec_enq_installer LOGIN SUPERUSER;
CREATE DATABASE jobq_sec_enqueue OWNER sec_enq_installer;
\c jobq_sec_enqueue sec_enq_installer
SET client_min_messages = warning;
CREATE EXTENSION jobq;
RESET client_min_messages;
SELECT jobq.register_kind('sec.enq.ship', queue => 'sec_enq');
CREATE TABLE public.sec_enq_orders (id int);
GRANT INSERT ON public.sec_enq_orders TO PUBLIC;
SELECT jobq.subscribe('sec.enq.orders', 'public.sec_enq_orders', 'sec.enq.ship');
\c - :sec_su
SELECT jobq.schedule('sec.enq.hourly', '0 * * * *', 'sec.enq.ship', overlap => 'allow',
                     start_at => '2000-01-01 00:00+00') IS NOT NULL AS scheduled;
ALTER ROLE sec_enq_installer NOSUPERUSER;
SELECT owner::text = current_user AS owned_by_this_superuser
  FROM jobq.schedules WHERE name = 'sec.enq.hourly';
\set VERBOSITY default
INSERT INTO public.sec_enq_orders VALUES (1);
SELECT jobq.run_schedule_now('sec.enq.hourly');
SELECT jobq.tick_schedules('2000-01-01 00:00:30+00') AS fired_without_privilege;
\set VERBOSITY sqlstate
SELECT event, job_id IS NOT NULL AS has_job, detail
  FROM jobq.schedule_events WHERE schedule = 'sec.enq.hourly' ORDER BY id;
SELECT count(*) AS jobs FROM jobq.jobs;
GRANT jobq_producer TO sec_enq_installer;
INSERT INTO public.sec_enq_orders VALUES (2);
SELECT jobq.run_schedule_now('sec.enq.hourly') IS NOT NULL AS ran_now;
SELECT jobq.tick_schedules('2000-01-01 01:00:30+00') AS fired_with_privilege;
SELECT payload->>'subscription' AS subscription, count(*) AS jobs FROM jobq.jobs
 GROUP BY 1 ORDER BY 1;
\c :sec_enq_first_db
DROP DATABASE jobq_sec_enqueue WITH (FORCE);
DROP ROLE sec_enq_installer;

-- (s) Batch handlers.  A batch handler runs as its kind's role, like any
-- handler, and reports results by job id: sec_bt_mallory's handler
-- reports a result for a job of another kind (the superuser's, in a queue
-- she may not touch), and that job must stay as it was; only her own job
-- is charged.  A look-alike jobq.batch_job type in her own schema does not
-- make a function a batch handler, and a batch handler owned by a role
-- without the registering role's privileges is refused, as any handler.
--
\set VERBOSITY sqlstate
CREATE ROLE sec_bt_mallory LOGIN;
CREATE SCHEMA sec_bt AUTHORIZATION sec_bt_mallory;
CREATE TABLE public.sec_bt_ran (who name, ids bigint[]);
GRANT INSERT ON public.sec_bt_ran TO sec_bt_mallory;
SELECT jobq.register_kind('sec.bt.victim', queue => 'sec_bt_victim');
SELECT jobq.enqueue('sec.bt.victim', '{"pay": 100}') AS sec_bt_victim \gset
GRANT jobq_admin TO sec_bt_mallory;
SET ROLE sec_bt_mallory;
CREATE FUNCTION sec_bt.forge(jobs jobq.batch_job[]) RETURNS jobq.batch_result[]
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.sec_bt_ran SELECT current_user, array_agg(j.id) FROM unnest(jobs) j;
    IF jobs[1].payload ? 'victim' THEN
        RETURN ARRAY[ROW((jobs[1].payload->>'victim')::bigint, '{"forged": true}', NULL)]::jobq.batch_result[];
    END IF;
    RETURN ARRAY(SELECT ROW(j.id, NULL, NULL)::jobq.batch_result FROM unnest(jobs) j);
END $$;
SELECT jobq.register_kind('sec.bt.forge', 'sec_bt.forge(jobq.batch_job[])', queue => 'sec_bt',
                          max_attempts => 1);
-- Her own batch_job type: not jobq's, so not a batch handler.
CREATE TYPE sec_bt.batch_job AS (id bigint, kind text, payload jsonb, attempt int, idempotency_key text);
CREATE FUNCTION sec_bt.lookalike(jobs sec_bt.batch_job[]) RETURNS jobq.batch_result[]
LANGUAGE sql AS $$ SELECT NULL::jobq.batch_result[] $$;
SELECT jobq.register_kind('sec.bt.lookalike', 'sec_bt.lookalike(sec_bt.batch_job[])', queue => 'sec_bt');
RESET ROLE;
REVOKE jobq_admin FROM sec_bt_mallory;
-- Her function as the batch handler of a superuser's kind: refused.
SELECT jobq.register_kind('sec.bt.su', 'sec_bt.forge(jobq.batch_job[])', queue => 'sec_bt');
-- An honest call runs as her: the superuser's run_pending does not lend
-- its rights.
SELECT jobq.enqueue('sec.bt.forge', '{"honest": true}') IS NOT NULL AS enqueued;
SELECT jobq.run_pending() AS ran;
SELECT sec_who(who, 'sec_bt_mallory') AS ran_as, cardinality(ids) AS jobs FROM public.sec_bt_ran;
-- The forged report: the call's error, charged to her job alone.
SELECT jobq.enqueue('sec.bt.forge', jsonb_build_object('victim', :sec_bt_victim)) IS NOT NULL AS enqueued;
SELECT jobq.run_pending() AS ran;
SELECT j.kind, j.payload ? 'victim' AS forging, j.state, j.attempt, j.result, e.sqlstate
  FROM jobq.jobs j LEFT JOIN jobq.job_error e ON e.job_id = j.id
 WHERE j.kind IN ('sec.bt.victim', 'sec.bt.forge') ORDER BY 1, 2;
SELECT name FROM jobq.kinds WHERE name LIKE 'sec.bt.%' ORDER BY 1;
DELETE FROM jobq.job_error WHERE job_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'sec.bt.%');
DELETE FROM jobq.job WHERE kind LIKE 'sec.bt.%';
SELECT jobq.unregister_kind('sec.bt.victim');
SELECT jobq.unregister_kind('sec.bt.forge');
SET client_min_messages = warning;
DROP SCHEMA sec_bt CASCADE;
RESET client_min_messages;
DROP TABLE public.sec_bt_ran;
DROP ROLE sec_bt_mallory;

--
-- (s) Transaction-scoped claims: a job is reported on by id alone, so the
-- id must be worth nothing outside the transaction that claimed the job,
-- and nothing to another role inside it.  Alice may work queue sec_txc and
-- may SET ROLE to bob, who may work it too; eve may work another queue.
--
CREATE ROLE sec_txc_alice LOGIN;
CREATE ROLE sec_txc_bob LOGIN;
CREATE ROLE sec_txc_eve LOGIN;
GRANT sec_txc_bob TO sec_txc_alice;
SELECT jobq.register_kind('sec.txc.pay', queue => 'sec_txc');
SELECT jobq.register_kind('sec.txc.other', queue => 'sec_txc_eve');
SELECT jobq.grant('sec_txc', 'sec_txc_alice', '{work}');
SELECT jobq.grant('sec_txc', 'sec_txc_bob', '{work}');
SELECT jobq.grant('sec_txc_eve', 'sec_txc_eve', '{work}');
SELECT count(jobq.enqueue('sec.txc.pay', jsonb_build_object('n', n))) FROM generate_series(1, 2) n;
SELECT jobq.enqueue('sec.txc.other') AS sec_txc_other \gset
\c - sec_txc_eve
-- No work privilege on the queue: no claim.
SELECT count(*) FROM jobq.claim_in_transaction('sec_txc');
-- Its own queue's job, claimed in an earlier transaction: gone with it.
SELECT count(*) AS claimed FROM jobq.claim_in_transaction('sec_txc_eve');
SELECT jobq.complete(:sec_txc_other, NULL);
SELECT jobq.fail(:sec_txc_other, NULL, 'no');
SELECT jobq.complete_many(ARRAY[:sec_txc_other]::bigint[], NULL);
\c - sec_txc_alice
BEGIN;
SELECT id AS sec_txc_job FROM jobq.claim_in_transaction('sec_txc') \gset
-- Ids this transaction did not claim: another queue's, and the next job.
SAVEPOINT s;
SELECT jobq.complete(:sec_txc_other, NULL);
ROLLBACK TO s;
SELECT jobq.fail(:sec_txc_job + 1, NULL, 'not mine');
ROLLBACK TO s;
-- Its own claim, after SET ROLE: refused to bob, though bob may work the queue.
SET ROLE sec_txc_bob;
SELECT jobq.complete(:sec_txc_job, NULL);
ROLLBACK TO s;
-- (ROLLBACK TO undid the SET ROLE too.)
SET ROLE sec_txc_bob;
SELECT jobq.complete_many(ARRAY[:sec_txc_job]::bigint[], NULL);
ROLLBACK TO s;
SET ROLE sec_txc_bob;
SELECT jobq.snooze(:sec_txc_job, NULL, '0');
ROLLBACK TO s;
SELECT jobq.complete(:sec_txc_job, NULL);
COMMIT;
\c - sec_txc_bob
-- The id of a job alice completed, and of one she did not claim: refused.
SELECT jobq.complete(:sec_txc_job, NULL);
SELECT jobq.complete(:sec_txc_job + 1, NULL);
SELECT jobq.snooze(:sec_txc_job + 1, NULL, '0');
\c - :sec_su
SELECT payload->>'n' AS n, state, attempt FROM jobq.job
 WHERE kind LIKE 'sec.txc.%' ORDER BY kind, 1;
DROP OWNED BY sec_txc_alice, sec_txc_bob, sec_txc_eve;
DROP ROLE sec_txc_alice, sec_txc_bob, sec_txc_eve;

--
-- (t) Counters (jobq.stats).  Eve operates queue sec_st_eve; alice's queue
-- sec_st has failures that monitoring must keep seeing.  Eve may not read
-- them (not even through the function behind the view), may not reset
-- them to hide the failures, and her temporary look-alikes of the view's
-- function and tables change nothing the view shows.
--
CREATE ROLE sec_st_eve LOGIN;
SELECT jobq.register_kind('sec.st.pay', queue => 'sec_st', max_attempts => 1);
SELECT jobq.register_kind('sec.st.eve', queue => 'sec_st_eve');
SELECT jobq.grant('sec_st_eve', 'sec_st_eve', '{operate}');
SELECT jobq.enqueue('sec.st.pay') > 0 AS enqueued;
SELECT count(*) FROM (SELECT jobq.fail(c.id, c.lease_token, 'card declined')
                        FROM jobq.claim('sec_st') c) f;
SELECT jobq.enqueue('sec.st.eve') > 0 AS enqueued;
\c - sec_st_eve
CREATE FUNCTION pg_temp.stats_counters(OUT queue_id integer, OUT kind text)
RETURNS SETOF record LANGUAGE sql AS $$ SELECT 0, 'planted' $$;
CREATE TEMP TABLE queue (id integer, name text);
SET search_path = pg_temp, public;
SELECT queue, kind, enqueued, failed FROM jobq.stats ORDER BY queue, kind;
SELECT count(*) AS alice_rows FROM jobq.stats_counters() s WHERE s.kind = 'sec.st.pay';
SELECT jobq.stats_reset() AS removed;
\c - :sec_su
SELECT queue, kind, enqueued, failed, exhausted FROM jobq.stats
 WHERE queue LIKE 'sec_st%' ORDER BY queue, kind;
DELETE FROM jobq.job_error WHERE job_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'sec.st.%');
DELETE FROM jobq.job WHERE kind LIKE 'sec.st.%';
SELECT jobq.unregister_kind('sec.st.pay'), jobq.unregister_kind('sec.st.eve');
SELECT jobq.revoke('sec_st_eve', 'sec_st_eve');
DROP ROLE sec_st_eve;

--
-- (u) Waiting (jobq.wait).  Mallory may produce into queue sec_wt_mallory;
-- alice's queue sec_wt holds a completed job with a secret result and one
-- due tomorrow.  A wait is a read: mallory gets neither the result nor the
-- fact that alice's jobs exist (the error is the one for an id nobody
-- has, word for word), nor a timing oracle (her wait on alice's pending
-- job returns at once, as for a missing one, and does not sleep its hour
-- out), and her temporary look-alike of jobq.job changes nothing a wait
-- reads.
--
CREATE ROLE sec_wt_mallory LOGIN;
SELECT jobq.register_kind('sec.wt.pay', queue => 'sec_wt');
SELECT jobq.register_kind('sec.wt.mallory', queue => 'sec_wt_mallory');
SELECT jobq.grant('sec_wt_mallory', 'sec_wt_mallory', '{produce}');
SELECT jobq.enqueue('sec.wt.pay', '{"card": "4242"}') AS sec_wt_done \gset
SELECT count(jobq.complete(c.id, c.lease_token, '{"secret": "s3cr3t"}'))
  FROM jobq.claim('sec_wt') c;
SELECT jobq.enqueue('sec.wt.pay', '{"card": "5555"}', run_at => now() + interval '1 day')
    AS sec_wt_pending \gset
SELECT max(id) + 1000 AS sec_wt_none FROM jobq.job \gset
\c - sec_wt_mallory
SELECT jobq.enqueue('sec.wt.mallory') AS sec_wt_own \gset
CREATE TEMP TABLE job (id bigint, state text, result jsonb, queue_id integer);
INSERT INTO pg_temp.job VALUES (:sec_wt_done, 'completed', '{"planted": true}', 1);
SET search_path = pg_temp, public;
SELECT clock_timestamp() AS sec_wt_t0 \gset
SELECT 'done' AS job, e.* FROM error_of(format('SELECT jobq.wait(%s)', :sec_wt_done),
                                        :sec_wt_done) e
UNION ALL
SELECT 'pending', e.* FROM error_of(format($$SELECT jobq.wait(%s, '1 hour')$$, :sec_wt_pending),
                                    :sec_wt_pending) e
UNION ALL
SELECT 'none', e.* FROM error_of(format('SELECT jobq.wait(%s)', :sec_wt_none), :sec_wt_none) e;
SELECT clock_timestamp() - :'sec_wt_t0' < interval '1 minute' AS no_sleep;
-- Her own job she may read.
SELECT state, result FROM jobq.wait(:sec_wt_own, '0');
\c - :sec_su
DELETE FROM jobq.lease WHERE job_ids && ARRAY(SELECT id FROM jobq.job WHERE kind LIKE 'sec.wt.%');
DELETE FROM jobq.job WHERE kind LIKE 'sec.wt.%';
SELECT jobq.unregister_kind('sec.wt.pay'), jobq.unregister_kind('sec.wt.mallory');
SELECT jobq.revoke('sec_wt_mallory', 'sec_wt_mallory');
DROP ROLE sec_wt_mallory;

--
-- Clean up.  The attackers' sessions must have ended (their temporary
-- objects go with them) before their roles can be dropped.
--
DO $$
BEGIN
    FOR i IN 1..3000 LOOP
        PERFORM pg_stat_clear_snapshot();
        EXIT WHEN NOT EXISTS (SELECT FROM pg_stat_activity WHERE usename LIKE 'sec\_%');
        PERFORM pg_sleep(0.01);
    END LOOP;
END $$;
DO $$
BEGIN
    PERFORM jobq.unsubscribe(name) FROM jobq.subscription WHERE name LIKE 'sec.%';
    PERFORM jobq.unschedule(name) FROM jobq.schedule WHERE name LIKE 'sec.%';
END $$;
DELETE FROM jobq.operator_action WHERE schedule LIKE 'sec.%';
DELETE FROM jobq.schedule_event WHERE schedule LIKE 'sec.%';
DELETE FROM jobq.lease WHERE job_ids && ARRAY(SELECT id FROM jobq.job WHERE kind LIKE 'sec.%');
DELETE FROM jobq.concurrency_lock WHERE job_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'sec.%');
DELETE FROM jobq.job_error WHERE job_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'sec.%');
DELETE FROM jobq.job_step WHERE job_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'sec.%');
DELETE FROM jobq.job_key WHERE kind LIKE 'sec.%';
DELETE FROM jobq.operator_action
 WHERE job_ids && ARRAY(SELECT id FROM jobq.job WHERE kind LIKE 'sec.%') OR queue LIKE 'sec\_%';
DELETE FROM jobq.operation WHERE operation_id LIKE 'sec.%';
DELETE FROM jobq.job WHERE kind LIKE 'sec.%';
DO $$
BEGIN
    PERFORM jobq.unregister_kind(name) FROM jobq.kind WHERE name LIKE 'sec.%';
END $$;
DELETE FROM jobq.queue WHERE name LIKE 'sec\_%';
UPDATE jobq.queue SET paused = false WHERE name IN (SELECT name FROM sec_paused_queues);
DROP TABLE sec_paused_queues;
DROP SCHEMA sec_billing, sec_team, sec_alice, sec_bob CASCADE;
SELECT lo_unlink(lo) AS unlinked FROM sec_lo_bob.doc;
DROP SCHEMA sec_dbo, sec_sp_app, sec_sp_owned, sec_sp_granted, sec_sp_public, sec_sp_late,
    sec_sp_later, sec_lo_alice, sec_lo_bob CASCADE;
DROP TABLE public.sec_rls_notes, public.sec_sly_calls;
DROP TABLE public.hijack_log, public.sec_fixture, public.sec_claims, public.sec_calls,
    public.sec_outcome, sec_shadow, public.sec_gen_producer_feed, public.sec_gen_producer_src,
    public.sec_gen_worker_feed, public.sec_gen_worker_src, public.sec_gen_operator_feed,
    public.sec_gen_operator_src, public.sec_gen_admin_feed, public.sec_gen_admin_src;
DROP SEQUENCE public.hijack_foreign_uses, public.sec_sly_runs;
DROP FUNCTION public.sec_plant_probe(), sec_who(name, name), public.sec_plant_shadows(),
    public.sec_dead_shadows(), public.sec_victim(jsonb), public.sec_own_handler(jsonb),
    public.sec_id(text), public.sec_claim_id(bigint), public.sec_claim_token(bigint),
    sec_gen_fixture(text), public.sec_id_of(name, text), public.sec_try(text),
    public.sec_plant_invoices(), public.sec_take_lock(jsonb), public.sec_deadlocked(jsonb),
    public.sec_make_trap(text, name, text), public.sec_sp_handler(jsonb),
    public.sec_rls_read(jsonb), public.sec_self_cancel(jsonb), public.sec_echo(jsonb),
    public.sec_sly(jsonb);
DROP PROCEDURE public.sec_attack();
DROP ROLE sec_anyone, sec_history_op, sec_gen_producer, sec_gen_worker, sec_gen_operator,
    sec_gen_admin, sec_op, sec_team, sec_alice, sec_bob, sec_dbo, sec_sp_attacker,
    sec_lo_alice, sec_lo_bob, sec_rls_alice, sec_rls_bob;
DROP ROLE sec_sub_admin, sec_tok_victim, sec_tok_thief, sec_tok_op, sec_once_alice,
    sec_once_bob, sec_sch_alice, sec_sch_bob, sec_sch_op, sec_sch_mate, sec_key_mallory,
    sec_key_bob, sec_key_admin, sec_key_op;
