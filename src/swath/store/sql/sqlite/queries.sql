-- Named queries of the SQLite job store. Parameters are :named. The PostgreSQL dialect keeps
-- the same names and parameters (see swath.store.machine, which runs them).

-- name: schema_version_table
CREATE TABLE IF NOT EXISTS swath_schema (version INTEGER NOT NULL);

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
WHERE (:states IS NULL OR state IN (SELECT value FROM json_each(:states)))
  AND (:name IS NULL OR name = :name)
  AND (:since IS NULL OR created_at >= :since)
  AND (:until IS NULL OR created_at < :until)
  -- keyset paging: the jobs after (:before_at, :before_id) in this order (equal times by id)
  -- (the first condition lets the scan of jobs_created start there)
  AND (:before_at IS NULL OR created_at <= :before_at)
  AND (:before_at IS NULL OR created_at < :before_at
       OR (created_at = :before_at AND id < :before_id))
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
SELECT state FROM jobs WHERE id = :id;

-- name: job_state_for_update
-- job_state for a transaction that may fail the job: the row is locked for update at once
-- (upgrading a shared lock later deadlocks against another completion doing the same).
SELECT state FROM jobs WHERE id = :id;

-- name: job_start
-- The jobs of claimed tasks start (SQLJobStore._start_jobs; PostgreSQL's claim does it itself).
UPDATE jobs SET state = 'RUNNING', started_at = COALESCE(started_at, :now)
WHERE id = :id AND state = 'QUEUED';

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

-- name: task_group_of_roots
-- A job submitted with several root tasks gets one more task as their parent: never executed,
-- COMPUTED from the start with the roots as its pending children, so it completes (and with it
-- the job) when the last root has, as any parent does.
UPDATE tasks SET state = 'COMPUTED', pending_children = :n WHERE id = :id;

-- name: dep_insert
INSERT INTO task_deps (task_id, depends_on) VALUES (:task_id, :depends_on);

-- name: expired_leases
SELECT id, job_id, parent_id, cluster, lost_count, optional, has_dependents
FROM tasks WHERE state = 'RUNNING' AND lease_expires < :now;

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
-- The list is parsed once per claim (a materialized table), not once per candidate row.
WITH known (n, ma, mi) AS MATERIALIZED (
    SELECT value ->> 'n', value ->> 'ma', value ->> 'mi' FROM json_each(:known)
)
UPDATE tasks
SET state = 'RUNNING', lease_owner = :runner, lease_expires = :expires, started_at = :now
WHERE id IN (
    SELECT id FROM tasks
    WHERE cluster = :cluster AND state = 'QUEUED' AND pending_deps = 0 AND run_after <= :now
      AND (:known IS NULL OR EXISTS (
          SELECT 1 FROM known
          WHERE n = tasks.name AND ma = tasks.version_major AND mi >= tasks.version_minor))
    ORDER BY run_after, id
    LIMIT :limit
)
RETURNING id, job_id, COALESCE((SELECT name FROM jobs WHERE jobs.id = tasks.job_id), '') AS job_name,
          parent_id, cluster, name, version, input, display, retry_count, max_retries, optional,
          timeout, traceparent,
          (SELECT trigger_json FROM jobs WHERE jobs.id = tasks.job_id) AS trigger;

-- name: heartbeat
UPDATE tasks SET lease_expires = :expires
WHERE lease_owner = :runner AND state = 'RUNNING' AND lease_expires >= :now;

-- name: task_renew
-- Extend one lease if it is still this runner's and alive (see JobStore.renew).
UPDATE tasks SET lease_expires = :expires
WHERE id = :id AND lease_owner = :runner AND state = 'RUNNING' AND lease_expires >= :now;

-- name: held_tasks
-- The reported tasks (a JSON array of ids) this runner still holds.
SELECT id, job_id, parent_id, cluster, retry_count, max_retries, optional, has_dependents
FROM tasks
WHERE id IN (SELECT value FROM json_each(:ids)) AND lease_owner = :runner AND state = 'RUNNING';

-- name: task_finish
UPDATE tasks
SET state = :state, pending_children = :pending_children, display = :display,
    finished_at = CASE WHEN :state = 'COMPLETED' THEN :now ELSE NULL END,
    lease_owner = NULL, lease_expires = NULL,
    error_type = NULL, error_message = NULL, error_traceback = NULL
WHERE id = :id;

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

-- name: parent_decrement
UPDATE tasks SET pending_children = pending_children - :n WHERE id = :id;

-- name: parent_complete
UPDATE tasks SET state = 'COMPLETED', finished_at = :now
WHERE id = :id AND state = 'COMPUTED' AND pending_children = 0
RETURNING id, job_id, parent_id, has_dependents;

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
      AND (:known IS NULL OR EXISTS (
          SELECT 1 FROM json_each(:known) AS k
          WHERE k.value ->> 'n' = tasks.name AND k.value ->> 'ma' = tasks.version_major
            AND k.value ->> 'mi' >= tasks.version_minor))
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

-- name: log_insert
-- Log records of tasks (context.logger), inserted with the outcomes of their tasks.
INSERT INTO task_logs (job_id, task_id, runner, created_at, level, message, fields)
VALUES (:job_id, :task_id, :runner, :created_at, :level, :message, :fields);

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
WHERE l.job_id = :job_id AND (:task_id IS NULL OR l.task_id = :task_id)
  AND l.level >= :level AND l.id > :after
ORDER BY l.id
LIMIT :limit;

-- name: log_drops
-- How many records of each task of a job were dropped (the marker records).
SELECT d.task_id, d.dropped, t.name, t.version
FROM task_log_drops d JOIN tasks t ON t.id = d.task_id
WHERE d.job_id = :job_id AND (:task_id IS NULL OR d.task_id = :task_id);

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
FROM automations WHERE id = :key OR name = :key
ORDER BY id = :key DESC
LIMIT 1;

-- name: automation_list
SELECT id, name, kind, cluster, task_name, task_version, input, max_retries, timeout, schedule,
       timezone, catch_up, url, glob, paused, cursor, created_at
FROM automations ORDER BY name;

-- name: automation_lock
-- The automation a firing belongs to, read at the start of the firing's transaction (which on
-- SQLite already excludes every other writer).
SELECT kind, paused, cursor FROM automations WHERE id = :id;

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
-- One row per tick or object: the second insert of a key changes nothing (and the caller then
-- submits no job).
INSERT INTO automation_firings (automation_id, key, job_id, fired_at)
VALUES (:automation_id, :key, :job_id, :now)
ON CONFLICT (automation_id, key) DO NOTHING;

-- name: automation_fired
-- Which of :keys (a JSON array) the automation fired already.
SELECT key FROM automation_firings
WHERE automation_id = :id AND key IN (SELECT value FROM json_each(:keys));
