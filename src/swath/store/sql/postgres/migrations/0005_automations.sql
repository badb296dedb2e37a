-- swath job store, schema version 5 (PostgreSQL dialect; the same columns as the SQLite one).
-- Automations (swath.automations): cron schedules and storage-event triggers that submit jobs.
-- A firing is one row per cron tick or stored object, inserted with the job it submits in one
-- transaction under the primary key (automation, key): however many processes evaluate an
-- automation, each tick or object submits one job (a second insert of the key waits for the
-- first transaction and then does nothing). The cursor is the last cron tick decided (fired or
-- skipped), or a storage trigger's high-water mark: every object modified before it was seen.
-- A job an automation submitted records what fired it (jobs.trigger_json).

ALTER TABLE jobs ADD COLUMN trigger_json text;

CREATE TABLE automations (
    id            text COLLATE "C" PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    kind          text NOT NULL,
    cluster       text NOT NULL,
    task_name     text NOT NULL,
    task_version  text NOT NULL,
    input         bytea NOT NULL,
    max_retries   integer NOT NULL DEFAULT 0,
    timeout       double precision,
    schedule      text,
    timezone      text,
    catch_up      text NOT NULL,
    url           text,
    glob          text,
    paused        integer NOT NULL DEFAULT 0,
    cursor        double precision NOT NULL,
    created_at    double precision NOT NULL
);

CREATE TABLE automation_firings (
    automation_id text COLLATE "C" NOT NULL,
    key           text COLLATE "C" NOT NULL,
    job_id        text COLLATE "C" NOT NULL,
    fired_at      double precision NOT NULL,
    PRIMARY KEY (automation_id, key)
);
