-- swath job store, schema version 3 (PostgreSQL dialect; the same columns as the SQLite one).
-- Per-task log records (context.logger), committed with the task's outcome and bounded per task
-- and per job (the oldest go first; task_log_drops counts them, shown as a marker record); and
-- the W3C trace context (traceparent) a task was submitted under, so the spans of one job form
-- one trace however many runners execute it.

ALTER TABLE tasks ADD COLUMN traceparent text;

CREATE TABLE task_logs (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id     text NOT NULL,
    task_id    text NOT NULL,
    runner     text NOT NULL,
    created_at double precision NOT NULL,
    level      integer NOT NULL,
    message    text NOT NULL,
    fields     text NOT NULL
);
CREATE INDEX task_logs_job ON task_logs (job_id, id);
CREATE INDEX task_logs_task ON task_logs (task_id, id);

CREATE TABLE task_log_drops (
    task_id text PRIMARY KEY,
    job_id  text NOT NULL,
    dropped bigint NOT NULL
);
CREATE INDEX task_log_drops_job ON task_log_drops (job_id);
