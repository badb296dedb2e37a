-- swath job store, schema version 5 (SQLite dialect).
-- Automations (swath.automations): cron schedules and storage-event triggers that submit jobs.
-- A firing is one row per cron tick or stored object, inserted with the job it submits in one
-- transaction under the primary key (automation, key): however many processes evaluate an
-- automation, each tick or object submits one job. The cursor is the last cron tick decided
-- (fired or skipped), or a storage trigger's high-water mark: every object modified before it
-- was seen. A job an automation submitted records what fired it (jobs.trigger_json).

ALTER TABLE jobs ADD COLUMN trigger_json TEXT;

CREATE TABLE automations (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    kind          TEXT NOT NULL,               -- 'cron' or 'storage'
    cluster       TEXT NOT NULL,
    task_name     TEXT NOT NULL,
    task_version  TEXT NOT NULL,
    input         BLOB NOT NULL,
    max_retries   INTEGER NOT NULL DEFAULT 0,
    timeout       REAL,
    schedule      TEXT,                        -- cron: the expression
    timezone      TEXT,                        -- cron: an IANA time zone name
    catch_up      TEXT NOT NULL,               -- cron: 'latest', 'all' or 'none'
    url           TEXT,                        -- storage: the folder, s3:// or gs:// prefix
    glob          TEXT,                        -- storage: which keys fire
    paused        INTEGER NOT NULL DEFAULT 0,
    cursor        REAL NOT NULL,
    created_at    REAL NOT NULL
);

CREATE TABLE automation_firings (
    automation_id TEXT NOT NULL,
    key           TEXT NOT NULL,               -- the tick (Unix seconds) or object key + version
    job_id        TEXT NOT NULL,
    fired_at      REAL NOT NULL,
    PRIMARY KEY (automation_id, key)
);
