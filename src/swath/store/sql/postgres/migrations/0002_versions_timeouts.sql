-- swath job store, schema version 2 (PostgreSQL dialect; the same columns as the SQLite one).
-- The version of a task as numbers, so a claim takes only tasks whose identifier the runner
-- registered (same name and major, minor at most the runner's); and a per-task time limit.

ALTER TABLE tasks ADD COLUMN version_major integer NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN version_minor integer NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN timeout double precision;
UPDATE tasks
SET version_major = CAST(split_part(substr(version, 2), '.', 1) AS integer),
    version_minor = CAST(split_part(version, '.', 2) AS integer);

-- When a job stops (canceled, or failed), the runners holding its tasks are told at once: they
-- LISTEN on the channel of the STOPPED_SIGNAL pseudo-cluster '!stopped' (see swath_channel).
CREATE FUNCTION swath_notify_stopped() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(swath_channel('!stopped'), '');
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify_stopped AFTER UPDATE OF state ON jobs
FOR EACH ROW
WHEN (NEW.state IN ('CANCELED', 'FAILED') AND OLD.state IN ('QUEUED', 'RUNNING'))
EXECUTE FUNCTION swath_notify_stopped();
