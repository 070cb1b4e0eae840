-- invariants: what must hold of every job the suites before this one left
-- behind, in every state they reached.  The claim and rescue indexes
-- select rows by "lane", never by "state", so the two must agree:
--   pending                        -> 'r' (due) or 's' (not yet due)
--   failed, held                   -> 'a' (an operator's turn)
--   running, completed, cancelled,
--   waiting, blocked               -> no lane
-- and a job in the ready lane is due.  A row that breaks this is one a
-- claim would hand out twice, or never.  Every update of a job in the
-- suites before this one was checked as it happened (the trigger that
-- sql/setup.sql installs); here, the rows they left, and that the check
-- was still in place.
SELECT tgname FROM pg_trigger WHERE tgrelid = 'jobq.job'::regclass AND NOT tgisinternal;
SELECT id, kind, state, lane, run_at > now() AS not_yet_due
  FROM jobq.job
 WHERE NOT ((state = 'pending' AND lane IN ('r', 's'))
         OR (state IN ('failed', 'held') AND lane = 'a')
         OR (state IN ('running', 'completed', 'cancelled', 'waiting', 'blocked')
            AND lane IS NULL))
    OR (lane = 'r' AND run_at > now())
 ORDER BY id;
-- No job waits for fewer jobs than block it, nor for fewer than none.
SELECT id, kind, state, waiting_for, blocked_by FROM jobq.job
 WHERE blocked_by < 0 OR blocked_by > waiting_for OR waiting_for < 0
 ORDER BY id;
-- A waiting or blocked job's counts are those of its dependency rows: the
-- open ones, and of them those marked as blocking it.
SELECT j.id, j.kind, j.state, j.waiting_for, j.blocked_by, d.open, d.blocking
  FROM jobq.job j
  LEFT JOIN (SELECT job_id, count(*) FILTER (WHERE completed_at IS NULL) AS open,
                    count(*) FILTER (WHERE completed_at IS NULL AND blocking) AS blocking
               FROM jobq.job_dependency GROUP BY job_id) d ON d.job_id = j.id
 WHERE j.state IN ('waiting', 'blocked')
   AND (j.waiting_for IS DISTINCT FROM d.open OR j.blocked_by IS DISTINCT FROM d.blocking)
 ORDER BY j.id;
-- Each open dependency row of a waiting or blocked job names a job that
-- exists and has not completed (its completion closes the row), and says
-- whether that job blocks as its state does now (every change of state
-- has reached the jobs after it); blocked is the state of a job some of
-- whose dependencies block it.
SELECT d.job_id, d.after_id, x.state AS after_state, d.blocking
  FROM jobq.job_dependency d
  JOIN jobq.job j ON j.id = d.job_id
  LEFT JOIN jobq.job x ON x.id = d.after_id
 WHERE d.completed_at IS NULL AND j.state IN ('waiting', 'blocked')
   AND (x.id IS NULL OR x.state = 'completed'
        OR d.blocking <> (x.state IN ('failed', 'held', 'cancelled')))
 ORDER BY d.job_id, d.after_id;
SELECT id, kind, state, waiting_for, blocked_by FROM jobq.job
 WHERE state IN ('waiting', 'blocked')
   AND ((state = 'blocked') <> (blocked_by > 0) OR NOT waiting_for > 0)
 ORDER BY id;
-- A job that may run, or ran, waits for nothing.
SELECT j.id, j.kind, j.state, d.after_id
  FROM jobq.job j JOIN jobq.job_dependency d ON d.job_id = j.id
 WHERE d.completed_at IS NULL AND j.state NOT IN ('waiting', 'blocked', 'cancelled')
 ORDER BY j.id, d.after_id;
-- Every running job is leased, and every lease names jobs that exist.
SELECT j.id, j.kind FROM jobq.job j
 WHERE j.state = 'running'
   AND NOT EXISTS (SELECT FROM jobq.lease l WHERE j.id = ANY (l.job_ids))
 ORDER BY j.id;
