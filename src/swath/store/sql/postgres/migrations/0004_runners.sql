-- swath job store, schema version 4 (PostgreSQL dialect; the same columns as the SQLite one).
-- Runners as they report themselves: a runner upserts its row at start and with each heartbeat
-- (every lease / 3 seconds, busy or idle) and deletes it when it stops; rows silent for longer
-- than RUNNER_EXPIRY are removed by the next runner that reports. Which tasks a runner holds is
-- read from the tasks themselves (lease_owner), not from here.

CREATE TABLE runners (
    id             text PRIMARY KEY,
    cluster        text NOT NULL,
    host           text NOT NULL,
    pid            bigint NOT NULL,
    concurrency    bigint NOT NULL,
    lease          double precision NOT NULL,
    started_at     double precision NOT NULL,
    last_heartbeat double precision NOT NULL,
    tasks          bigint NOT NULL
);
CREATE INDEX runners_heartbeat ON runners (last_heartbeat);

-- Job changes, for whoever follows jobs (the dashboard): the channel of the signal '!changed'
-- (swath.store.base.CHANGED_SIGNAL) is notified with the job's id as payload (so at most one
-- notification per job and transaction) when a job is submitted or changes state, when its
-- progress moves, and when one of its tasks changes state other than to RUNNING. Claims notify
-- nothing (their job's start does, once), so a runner's hot path gains no notification; nor do
-- heartbeats.
CREATE FUNCTION swath_notify_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'jobs' THEN
        PERFORM pg_notify(swath_channel('!changed'), NEW.id);
    ELSE
        PERFORM pg_notify(swath_channel('!changed'), NEW.job_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify_changed AFTER INSERT OR UPDATE OF state ON jobs
FOR EACH ROW EXECUTE FUNCTION swath_notify_changed();

CREATE TRIGGER progress_notify_changed AFTER INSERT OR UPDATE ON progress
FOR EACH ROW EXECUTE FUNCTION swath_notify_changed();

CREATE TRIGGER tasks_notify_changed AFTER UPDATE OF state ON tasks
FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state AND NEW.state <> 'RUNNING')
EXECUTE FUNCTION swath_notify_changed();
