-- swath job store, schema version 1 (SQLite dialect).
-- Times are Unix seconds (REAL); booleans are 0/1; ids are UUID-formatted text.

CREATE TABLE clusters (
    slug        TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  REAL NOT NULL
);

CREATE TABLE jobs (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    cluster       TEXT NOT NULL,
    state         TEXT NOT NULL,
    root_task_id  TEXT NOT NULL,
    created_at    REAL NOT NULL,
    started_at    REAL,
    finished_at   REAL
);
CREATE INDEX jobs_created ON jobs (created_at);

CREATE TABLE tasks (
    id                TEXT PRIMARY KEY,
    job_id            TEXT NOT NULL,
    parent_id         TEXT,
    cluster           TEXT NOT NULL,
    name              TEXT NOT NULL,
    version           TEXT NOT NULL,
    input             BLOB NOT NULL,
    display           TEXT NOT NULL DEFAULT '',
    state             TEXT NOT NULL,
    retry_count       INTEGER NOT NULL DEFAULT 0,
    max_retries       INTEGER NOT NULL DEFAULT 0,
    optional          INTEGER NOT NULL DEFAULT 0,
    lost_count        INTEGER NOT NULL DEFAULT 0,
    pending_children  INTEGER NOT NULL DEFAULT 0,  -- subtasks not yet done (COMPUTED -> COMPLETED at 0)
    pending_deps      INTEGER NOT NULL DEFAULT 0,  -- dependencies whose subtree is not yet done
    has_dependents    INTEGER NOT NULL DEFAULT 0,
    run_after         REAL NOT NULL,
    lease_owner       TEXT,
    lease_expires     REAL,
    created_at        REAL NOT NULL,
    started_at        REAL,
    finished_at       REAL,
    error_type        TEXT,
    error_message     TEXT,
    error_traceback   TEXT
);
-- The claim scans only ready tasks, oldest first.
CREATE INDEX tasks_ready ON tasks (cluster, run_after, id) WHERE state = 'QUEUED' AND pending_deps = 0;
-- Leased tasks (at most the runners' concurrency): expiry, heartbeats, a runner's own tasks.
CREATE INDEX tasks_running ON tasks (lease_expires) WHERE state = 'RUNNING';
-- Job-wide operations (tree, cancel, retry, skip); no state column, so state changes are cheap.
CREATE INDEX tasks_job ON tasks (job_id);

CREATE TABLE task_deps (
    task_id     TEXT NOT NULL,
    depends_on  TEXT NOT NULL,
    PRIMARY KEY (task_id, depends_on)
);
CREATE INDEX task_deps_on ON task_deps (depends_on);

CREATE TABLE progress (
    job_id  TEXT NOT NULL,
    label   TEXT NOT NULL,
    total   INTEGER NOT NULL DEFAULT 0,
    done    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, label)
);
