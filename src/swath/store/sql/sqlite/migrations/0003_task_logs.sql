-- swath job store, schema version 3 (SQLite dialect).
-- Per-task log records (context.logger), committed with the task's outcome and bounded per task
-- and per job (the oldest go first; task_log_drops counts them, shown as a marker record); and
-- the W3C trace context (traceparent) a task was submitted under, so the spans of one job form
-- one trace however many runners execute it.

ALTER TABLE tasks ADD COLUMN traceparent TEXT;

CREATE TABLE task_logs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     TEXT NOT NULL,
    task_id    TEXT NOT NULL,
    runner     TEXT NOT NULL,
    created_at REAL NOT NULL,
    level      INTEGER NOT NULL,
    message    TEXT NOT NULL,
    fields     TEXT NOT NULL
);
CREATE INDEX task_logs_job ON task_logs (job_id, id);
CREATE INDEX task_logs_task ON task_logs (task_id, id);

CREATE TABLE task_log_drops (
    task_id TEXT PRIMARY KEY,
    job_id  TEXT NOT NULL,
    dropped INTEGER NOT NULL
);
CREATE INDEX task_log_drops_job ON task_log_drops (job_id);
