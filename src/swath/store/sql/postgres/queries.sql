-- Named queries of the PostgreSQL job store: the same names and :named parameters as the SQLite
-- dialect (swath.store.machine runs them; swath.store.postgres turns :name into $n).
--
-- Transactions are READ COMMITTED and run concurrently (SQLite serializes its writers), so the
-- queries that read rows a transaction later changes lock them:
-- * claim and expired_leases take rows with FOR UPDATE SKIP LOCKED: two runners never get the
--   same task, and a lease is re-queued by one transaction only, never after a fresh claim;
-- * held_tasks locks the leases of the tasks a completion reports, and only those (in id order,
--   like heartbeat), so a lease cannot be re-queued between "is it still mine" and the
--   completion that relies on it, while the runner's other leases stay free for its heartbeat;
-- * job_state takes FOR SHARE: a cancel or a job failure waits for completions in flight, then
--   sees (and cancels or skips) the subtasks they committed.
-- Parameters whose type PostgreSQL cannot infer are cast explicitly.

-- name: schema_version_table
CREATE TABLE IF NOT EXISTS swath_schema (version integer NOT NULL);

-- name: schema_version
SELECT version FROM swath_schema;

-- name: schema_version_insert
INSERT INTO swath_schema (version) VALUES (:version);

-- name: schema_version_set
UPDATE swath_schema SET version = :version;

-- name: cluster_insert
INSERT INTO clusters (slug, name, created_at) VALUES (:slug, :name, :now)
ON CONFLICT (slug) DO NOTHING;

-- name: cluster_get
SELECT slug, name, created_at FROM clusters WHERE slug = :slug;

-- name: cluster_list
SELECT slug, name, created_at FROM clusters ORDER BY created_at, slug;

-- name: cluster_delete
DELETE FROM clusters WHERE slug = :slug;

-- name: cluster_rename
UPDATE clusters SET name = :name WHERE slug = :slug;

-- name: job_insert
INSERT INTO jobs (id, name, cluster, state, root_task_id, created_at, trigger_json)
VALUES (:id, :name, :cluster, 'QUEUED', :root_task_id, :now, :trigger_json);

-- name: job_get
SELECT id, name, cluster, state, created_at, started_at, finished_at, root_task_id, trigger_json
FROM jobs WHERE id = :id;

-- name: job_query
SELECT id, name, cluster, state, created_at, started_at, finished_at, root_task_id, trigger_json
FROM jobs
WHERE (CAST(:states AS text) IS NULL
       OR state IN (SELECT jsonb_array_elements_text(CAST(:states AS text)::jsonb)))
  AND (CAST(:name AS text) IS NULL OR name = CAST(:name AS text))
  AND (CAST(:since AS double precision) IS NULL OR created_at >= CAST(:since AS double precision))
  AND (CAST(:until AS double precision) IS NULL OR created_at < CAST(:until AS double precision))
  -- keyset paging: the jobs after (:before_at, :before_id) in this order (equal times by id)
  -- (the first condition lets the scan of jobs_created start there)
  AND (CAST(:before_at AS double precision) IS NULL
       OR created_at <= CAST(:before_at AS double precision))
  AND (CAST(:before_at AS double precision) IS NULL
       OR (created_at, id) < (CAST(:before_at AS double precision), CAST(:before_id AS text)))
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: job_progress
SELECT label, total, done FROM progress WHERE job_id = :id ORDER BY label;

-- name: job_execution_stats
-- Per task state: how many, first start, last stop and compute time. A task that submitted
-- subtasks stopped computing when they were inserted (with its completion), not when its
-- subtree completed.
SELECT t.state, COUNT(*) AS tasks, MIN(t.started_at) AS first_start,
       MAX(COALESCE(c.first_child, t.finished_at)) AS last_stop,
       SUM(COALESCE(c.first_child, t.finished_at) - t.started_at) AS compute
FROM tasks t
LEFT JOIN (
    SELECT parent_id, MIN(created_at) AS first_child FROM tasks
    WHERE job_id = :id AND parent_id IS NOT NULL GROUP BY parent_id
) c ON c.parent_id = t.id
WHERE t.job_id = :id
GROUP BY t.state;

-- name: job_state
SELECT state FROM jobs WHERE id = :id FOR SHARE;

-- name: job_state_for_update
-- job_state for a transaction that may fail the job: the row is locked for update at once
-- (upgrading a shared lock later deadlocks against another completion doing the same).
SELECT state FROM jobs WHERE id = :id FOR UPDATE;

-- name: job_complete
UPDATE jobs SET state = 'COMPLETED', finished_at = :now
WHERE id = :id AND state IN ('QUEUED', 'RUNNING');

-- name: job_fail
UPDATE jobs SET state = 'FAILED', finished_at = :now
WHERE id = :id AND state IN ('QUEUED', 'RUNNING');

-- name: job_cancel
UPDATE jobs SET state = 'CANCELED', finished_at = :now
WHERE id = :id AND state IN ('QUEUED', 'RUNNING');

-- name: job_requeue
UPDATE jobs SET state = 'QUEUED', finished_at = NULL
WHERE id = :id AND state IN ('FAILED', 'CANCELED');

-- name: task_insert
INSERT INTO tasks (id, job_id, parent_id, cluster, name, version, version_major, version_minor,
                   input, display, state, max_retries, optional, pending_deps, has_dependents,
                   timeout, traceparent, run_after, created_at)
VALUES (:id, :job_id, :parent_id, :cluster, :name, :version, :version_major, :version_minor,
        :input, :display, 'QUEUED', :max_retries, :optional, :pending_deps, :has_dependents,
        :timeout, :traceparent, :now, :now);

-- name: task_insert__bulk
-- task_insert for a whole batch in one statement (each parameter is an array, one element per
-- row): one round trip and one trigger call instead of one per subtask.
INSERT INTO tasks (id, job_id, parent_id, cluster, name, version, version_major, version_minor,
                   input, display, state, max_retries, optional, pending_deps, has_dependents,
                   timeout, traceparent, run_after, created_at)
SELECT id, job_id, parent_id, cluster, name, version, version_major, version_minor,
       input, display, 'QUEUED', max_retries, optional, pending_deps, has_dependents,
       timeout, traceparent, now, now
FROM unnest(CAST(:id AS text[]), CAST(:job_id AS text[]), CAST(:parent_id AS text[]),
            CAST(:cluster AS text[]), CAST(:name AS text[]), CAST(:version AS text[]),
            CAST(:version_major AS integer[]), CAST(:version_minor AS integer[]),
            CAST(:input AS bytea[]), CAST(:display AS text[]), CAST(:max_retries AS integer[]),
            CAST(:optional AS integer[]), CAST(:pending_deps AS integer[]),
            CAST(:has_dependents AS integer[]), CAST(:timeout AS double precision[]),
            CAST(:traceparent AS text[]), CAST(:now AS double precision[]))
     AS t(id, job_id, parent_id, cluster, name, version, version_major, version_minor, input,
          display, max_retries, optional, pending_deps, has_dependents, timeout, traceparent,
          now);

-- name: task_group_of_roots
-- A job submitted with several root tasks gets one more task as their parent: never executed,
-- COMPUTED from the start with the roots as its pending children, so it completes (and with it
-- the job) when the last root has, as any parent does.
UPDATE tasks SET state = 'COMPUTED', pending_children = :n WHERE id = :id;

-- name: dep_insert
INSERT INTO task_deps (task_id, depends_on) VALUES (:task_id, :depends_on);

-- name: dep_insert__bulk
INSERT INTO task_deps (task_id, depends_on)
SELECT * FROM unnest(CAST(:task_id AS text[]), CAST(:depends_on AS text[]));

-- name: expired_leases
SELECT id, job_id, parent_id, cluster, lost_count, optional, has_dependents
FROM tasks WHERE state = 'RUNNING' AND lease_expires < :now
ORDER BY id
FOR UPDATE SKIP LOCKED;

-- name: task_requeue_lost
UPDATE tasks
SET state = CASE (SELECT state FROM jobs WHERE jobs.id = tasks.job_id)
                 WHEN 'QUEUED' THEN 'QUEUED' WHEN 'RUNNING' THEN 'QUEUED'
                 WHEN 'CANCELED' THEN 'CANCELED' ELSE 'SKIPPED' END,
    lease_owner = NULL, lease_expires = NULL, lost_count = lost_count + :lost
WHERE id = :id AND state = 'RUNNING';

-- name: claim
-- :known is NULL (any task) or a JSON array of {"n": name, "ma": major, "mi": newest minor}:
-- the identifiers the claiming runner registered; other tasks stay queued for other runners.
-- The list is parsed once per claim (a materialized CTE), not once per candidate row.
-- Also starts the claimed tasks' jobs (QUEUED -> RUNNING), so PostgresJobStore._start_jobs has
-- nothing left to do, and returns each task's job_name (as SQLite's claim does).
WITH known AS MATERIALIZED (
    SELECT * FROM jsonb_to_recordset(CAST(:known AS jsonb)) AS k(n text, ma int, mi int)
), claimed AS (
    UPDATE tasks
    SET state = 'RUNNING', lease_owner = :runner, lease_expires = :expires, started_at = :now
    WHERE id IN (
        SELECT id FROM tasks
        WHERE cluster = :cluster AND state = 'QUEUED' AND pending_deps = 0 AND run_after <= :now
          AND (CAST(:known AS text) IS NULL OR EXISTS (
              SELECT 1 FROM known
              WHERE known.n = tasks.name AND known.ma = tasks.version_major
                AND known.mi >= tasks.version_minor))
        ORDER BY run_after, id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id, job_id, parent_id, cluster, name, version, input, display, retry_count,
              max_retries, optional, timeout, traceparent
), started AS (
    UPDATE jobs SET state = 'RUNNING', started_at = COALESCE(started_at, :now)
    WHERE id IN (SELECT job_id FROM claimed) AND state = 'QUEUED'
)
SELECT c.id, c.job_id, j.name AS job_name, c.parent_id, c.cluster, c.name, c.version, c.input,
       c.display, c.retry_count, c.max_retries, c.optional, c.timeout, c.traceparent,
       j.trigger_json AS trigger
FROM claimed c JOIN jobs j ON j.id = c.job_id;

-- name: heartbeat
-- SKIP LOCKED: a row locked by another transaction is one this runner's own completion is
-- committing (held_tasks locks them), or an expired lease another claim is taking back. Waiting
-- for it would hold up every other lease of the runner behind a completion that waits, in
-- turn, for a lock a frozen process holds: and then all of them would lapse.
UPDATE tasks SET lease_expires = :expires
WHERE id IN (
    SELECT id FROM tasks
    WHERE lease_owner = :runner AND state = 'RUNNING' AND lease_expires >= :now
    ORDER BY id
    FOR UPDATE SKIP LOCKED
);

-- name: task_renew
-- Extend one lease if it is still this runner's and alive (see JobStore.renew).
UPDATE tasks SET lease_expires = :expires
WHERE id = :id AND lease_owner = :runner AND state = 'RUNNING' AND lease_expires >= :now;

-- name: held_tasks
-- The reported tasks this runner still holds, locked. Only these: a completion may wait (for a
-- parent's or a job's row that a frozen process holds), and every row it locks meanwhile is one
-- the heartbeat skips, so locking all the runner's leases would let all of them lapse. :ids is a
-- JSON array (as in the SQLite dialect), made an array once (ARRAY(...) is an init plan) so the
-- rows are found through the primary key (as `IN (SELECT ...)` the planner may join instead).
SELECT id, job_id, parent_id, cluster, retry_count, max_retries, optional, has_dependents
FROM tasks
WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text(CAST(:ids AS text)::jsonb)))
  AND lease_owner = :runner AND state = 'RUNNING'
ORDER BY id
FOR UPDATE;

-- name: task_finish
UPDATE tasks
SET state = CAST(:state AS text), pending_children = :pending_children, display = :display,
    finished_at = CASE WHEN CAST(:state AS text) = 'COMPLETED' THEN CAST(:now AS double precision)
                       ELSE NULL END,
    lease_owner = NULL, lease_expires = NULL,
    error_type = NULL, error_message = NULL, error_traceback = NULL
WHERE id = :id;

-- name: task_finish__bulk
-- task_finish for a whole batch (the rows are already locked by held_tasks).
UPDATE tasks
SET state = v.state, pending_children = v.pending_children, display = v.display,
    finished_at = CASE WHEN v.state = 'COMPLETED' THEN v.now ELSE NULL END,
    lease_owner = NULL, lease_expires = NULL,
    error_type = NULL, error_message = NULL, error_traceback = NULL
FROM unnest(CAST(:id AS text[]), CAST(:state AS text[]), CAST(:pending_children AS integer[]),
            CAST(:display AS text[]), CAST(:now AS double precision[]))
     AS v(id, state, pending_children, display, now)
WHERE tasks.id = v.id;

-- name: task_retry_later
UPDATE tasks
SET state = 'QUEUED', retry_count = retry_count + 1, run_after = :run_after, display = :display,
    lease_owner = NULL, lease_expires = NULL,
    error_type = :error_type, error_message = :error_message, error_traceback = :error_traceback
WHERE id = :id;

-- name: task_fail
UPDATE tasks
SET state = :state, display = :display, finished_at = :now, lease_owner = NULL, lease_expires = NULL,
    error_type = :error_type, error_message = :error_message, error_traceback = :error_traceback
WHERE id = :id;

-- name: progress_add
INSERT INTO progress (job_id, label, total, done) VALUES (:job_id, :label, :total, :done)
ON CONFLICT (job_id, label) DO UPDATE
SET total = progress.total + excluded.total, done = progress.done + excluded.done;

-- name: dependents_release
UPDATE tasks SET pending_deps = pending_deps - 1
WHERE id IN (SELECT task_id FROM task_deps WHERE depends_on = :id);

-- name: parent_decrement_complete
-- Counts finished subtasks off their parent and completes it if they were its last, in one
-- statement (PostgresJobStore._count_off; SQLite runs parent_decrement, then parent_complete):
-- the parent's row, which every runner of a big fan-out updates, stays locked only until COMMIT,
-- one round trip later. Returns the parent if this decrement completed it (a parent is never
-- decremented once complete). In SET, columns are the old values.
WITH changed AS (
    UPDATE tasks
    SET pending_children = pending_children - :n,
        state = CASE WHEN state = 'COMPUTED' AND pending_children = :n
                     THEN 'COMPLETED' ELSE state END,
        finished_at = CASE WHEN state = 'COMPUTED' AND pending_children = :n
                           THEN CAST(:now AS double precision) ELSE finished_at END
    WHERE id = :id
    RETURNING id, job_id, parent_id, has_dependents, state, pending_children
)
SELECT id, job_id, parent_id, has_dependents FROM changed
WHERE state = 'COMPLETED' AND pending_children = 0;

-- name: job_skip_queued
UPDATE tasks SET state = 'SKIPPED' WHERE job_id = :id AND state = 'QUEUED';

-- name: job_cancel_queued
UPDATE tasks SET state = 'CANCELED' WHERE job_id = :id AND state = 'QUEUED';

-- name: job_retry_failed
UPDATE tasks SET state = 'QUEUED', retry_count = 0, lost_count = 0, run_after = :now,
                 finished_at = NULL
WHERE job_id = :id AND state = 'FAILED';

-- name: job_requeue_stopped
UPDATE tasks SET state = 'QUEUED', run_after = :now
WHERE job_id = :id AND state IN ('SKIPPED', 'CANCELED');

-- name: task_release
UPDATE tasks
SET state = CASE (SELECT state FROM jobs WHERE jobs.id = tasks.job_id)
                 WHEN 'QUEUED' THEN 'QUEUED' WHEN 'RUNNING' THEN 'QUEUED'
                 WHEN 'CANCELED' THEN 'CANCELED' ELSE 'SKIPPED' END,
    lease_owner = NULL, lease_expires = NULL, started_at = NULL
WHERE id = :id AND lease_owner = :runner AND state = 'RUNNING'
RETURNING job_id;

-- name: next_ready
SELECT MIN(t) AS ready_at FROM (
    SELECT MIN(run_after) AS t FROM tasks
    WHERE cluster = :cluster AND state = 'QUEUED' AND pending_deps = 0
      AND (CAST(:known AS text) IS NULL OR EXISTS (
          SELECT 1 FROM jsonb_to_recordset(CAST(:known AS jsonb)) AS k(n text, ma int, mi int)
          WHERE k.n = tasks.name AND k.ma = tasks.version_major AND k.mi >= tasks.version_minor))
    UNION ALL
    SELECT MIN(lease_expires) AS t FROM tasks
    WHERE cluster = :cluster AND state = 'RUNNING'
) AS candidates;

-- name: job_tasks
SELECT id, job_id, parent_id, cluster, name, version, display, state, retry_count, max_retries,
       optional, lost_count, created_at, started_at, finished_at,
       error_type, error_message, error_traceback
FROM tasks WHERE job_id = :id ORDER BY created_at, id;

-- name: job_deps
SELECT d.task_id, d.depends_on FROM task_deps d JOIN tasks t ON t.id = d.task_id
WHERE t.job_id = :id;

-- name: stop_requested
-- The tasks a runner holds whose job stopped (canceled or failed): the runner cancels them.
SELECT t.id FROM tasks t JOIN jobs j ON j.id = t.job_id
WHERE t.lease_owner = :runner AND t.state = 'RUNNING' AND j.state NOT IN ('QUEUED', 'RUNNING');

-- name: optional_ancestor
-- The nearest optional ancestor of a task (not the task itself), if any.
WITH RECURSIVE up (id, parent_id, optional, depth) AS (
    SELECT id, parent_id, optional, 0 FROM tasks WHERE id = :id
    UNION ALL
    SELECT t.id, t.parent_id, t.optional, up.depth + 1 FROM tasks t JOIN up ON t.id = up.parent_id
)
SELECT id FROM up WHERE depth > 0 AND optional = 1 ORDER BY depth LIMIT 1;

-- name: dependents_of
SELECT task_id FROM task_deps WHERE depends_on = :id;

-- name: task_skip
UPDATE tasks SET state = 'SKIPPED', finished_at = :now WHERE id = :id AND state = 'QUEUED';

-- PostgreSQL only (swath.store.postgres) ------------------------------------------------------

-- name: migration_lock
SELECT pg_advisory_xact_lock(:key);

-- name: jobs_changed
-- Tell whoever follows jobs (the dashboard) that tasks of these jobs changed: one NOTIFY per
-- job on the channel of '!changed' (see PostgresJobStore._announce_forever).
SELECT count(pg_notify(swath_channel('!changed'), job_id)) AS told
FROM unnest(CAST(:ids AS text[])) AS job_id;

-- name: claim_orphans_release
-- A claim whose commit reply was lost (the connection dropped): give back what it may have
-- leased, so the runner's heartbeat does not keep tasks it never received.
UPDATE tasks
SET state = CASE (SELECT state FROM jobs WHERE jobs.id = tasks.job_id)
                 WHEN 'QUEUED' THEN 'QUEUED' WHEN 'RUNNING' THEN 'QUEUED'
                 WHEN 'CANCELED' THEN 'CANCELED' ELSE 'SKIPPED' END,
    lease_owner = NULL, lease_expires = NULL, started_at = NULL
WHERE lease_owner = :runner AND state = 'RUNNING' AND started_at >= :since;

-- name: log_insert
-- Log records of tasks (context.logger), inserted with the outcomes of their tasks.
INSERT INTO task_logs (job_id, task_id, runner, created_at, level, message, fields)
VALUES (:job_id, :task_id, :runner, :created_at, :level, :message, :fields);

-- name: log_insert__bulk
INSERT INTO task_logs (job_id, task_id, runner, created_at, level, message, fields)
SELECT * FROM unnest(CAST(:job_id AS text[]), CAST(:task_id AS text[]), CAST(:runner AS text[]),
                     CAST(:created_at AS double precision[]), CAST(:level AS integer[]),
                     CAST(:message AS text[]), CAST(:fields AS text[]));

-- name: log_trim_task
-- Keep the newest :keep records of a task (the oldest go first); the caller counts the rest off.
DELETE FROM task_logs
WHERE task_id = :task_id AND id <= (
    SELECT id FROM task_logs WHERE task_id = :task_id ORDER BY id DESC LIMIT 1 OFFSET :keep
);

-- name: log_trim_job
-- Keep the newest :keep records of a job; returns the task of each record dropped.
DELETE FROM task_logs
WHERE job_id = :job_id AND id <= (
    SELECT id FROM task_logs WHERE job_id = :job_id ORDER BY id DESC LIMIT 1 OFFSET :keep
)
RETURNING task_id;

-- name: log_drops_add
INSERT INTO task_log_drops (task_id, job_id, dropped) VALUES (:task_id, :job_id, :dropped)
ON CONFLICT (task_id) DO UPDATE SET dropped = task_log_drops.dropped + excluded.dropped;

-- name: log_query
-- A job's log records (of one task when :task_id is set) from :level up, after record :after,
-- in the order they were committed; with each task's identifier.
SELECT l.id, l.job_id, l.task_id, t.name, t.version, l.runner, l.created_at, l.level,
       l.message, l.fields
FROM task_logs l JOIN tasks t ON t.id = l.task_id
WHERE l.job_id = :job_id AND (CAST(:task_id AS text) IS NULL OR l.task_id = :task_id)
  AND l.level >= :level AND l.id > :after
ORDER BY l.id
LIMIT :limit;

-- name: log_drops
-- How many records of each task of a job were dropped (the marker records).
SELECT d.task_id, d.dropped, t.name, t.version
FROM task_log_drops d JOIN tasks t ON t.id = d.task_id
WHERE d.job_id = :job_id AND (CAST(:task_id AS text) IS NULL OR d.task_id = :task_id);

-- name: queue_depth
-- Queued tasks per cluster (the swath.queue.depth metric).
SELECT cluster, COUNT(*) AS queued FROM tasks WHERE state = 'QUEUED' GROUP BY cluster;

-- name: runner_upsert
-- A runner reports itself (at start and with each heartbeat): last_heartbeat is the store's now.
INSERT INTO runners (id, cluster, host, pid, concurrency, lease, started_at, last_heartbeat, tasks)
VALUES (:id, :cluster, :host, :pid, :concurrency, :lease, :started_at, :now, :tasks)
ON CONFLICT (id) DO UPDATE
SET last_heartbeat = excluded.last_heartbeat, tasks = excluded.tasks,
    concurrency = excluded.concurrency, lease = excluded.lease;

-- name: runners_expire
-- Rows of runners silent since :before (gone without stopping, long ago) are removed.
DELETE FROM runners WHERE last_heartbeat < :before;

-- name: runner_delete
DELETE FROM runners WHERE id = :id;

-- name: runner_list
SELECT id, cluster, host, pid, concurrency, lease, started_at, last_heartbeat, tasks
FROM runners ORDER BY cluster, started_at, id;

-- name: lease_list
-- The tasks runners hold (RUNNING under a lease), by runner, oldest first.
SELECT t.id AS task_id, t.job_id, COALESCE(j.name, '') AS job_name, t.cluster, t.name,
       t.version, t.display, t.lease_owner AS runner_id, t.started_at, t.lease_expires
FROM tasks t LEFT JOIN jobs j ON j.id = t.job_id
WHERE t.state = 'RUNNING'
ORDER BY t.lease_owner, t.started_at, t.id
LIMIT :limit;

-- Automations (swath.automations): what they are, and one row per tick or object they fired.

-- name: automation_insert
INSERT INTO automations (id, name, kind, cluster, task_name, task_version, input, max_retries,
                         timeout, schedule, timezone, catch_up, url, glob, paused, cursor,
                         created_at)
VALUES (:id, :name, :kind, :cluster, :task_name, :task_version, :input, :max_retries, :timeout,
        :schedule, :timezone, :catch_up, :url, :glob, :paused, :cursor, :created_at)
ON CONFLICT (name) DO NOTHING;

-- name: automation_get
-- By id, or else by name.
SELECT id, name, kind, cluster, task_name, task_version, input, max_retries, timeout, schedule,
       timezone, catch_up, url, glob, paused, cursor, created_at
FROM automations WHERE id = CAST(:key AS text) OR name = CAST(:key AS text)
ORDER BY id = CAST(:key AS text) DESC
LIMIT 1;

-- name: automation_list
SELECT id, name, kind, cluster, task_name, task_version, input, max_retries, timeout, schedule,
       timezone, catch_up, url, glob, paused, cursor, created_at
FROM automations ORDER BY name;

-- name: automation_lock
-- The automation a firing belongs to, its row locked for the firing's transaction: evaluators
-- of one automation decide its ticks one after the other, each seeing the cursor the previous
-- one left (the firing rows' primary key alone already keeps a tick from firing twice).
SELECT kind, paused, cursor FROM automations WHERE id = :id FOR UPDATE;

-- name: automation_set_paused
UPDATE automations SET paused = :paused WHERE id = :id;

-- name: automation_advance
-- The cursor only moves forward.
UPDATE automations SET cursor = :cursor WHERE id = :id AND cursor < :cursor;

-- name: automation_delete
DELETE FROM automations WHERE id = :id;

-- name: automation_firings_delete
DELETE FROM automation_firings WHERE automation_id = :id;

-- name: automation_firing_insert
-- One row per tick or object: a second insert of a key waits for the first one's transaction,
-- then changes nothing (and the caller then submits no job).
INSERT INTO automation_firings (automation_id, key, job_id, fired_at)
VALUES (:automation_id, :key, :job_id, :now)
ON CONFLICT (automation_id, key) DO NOTHING;

-- name: automation_fired
-- Which of :keys (a JSON array) the automation fired already.
SELECT key FROM automation_firings
WHERE automation_id = :id AND key IN (SELECT jsonb_array_elements_text(CAST(:keys AS text)::jsonb));
