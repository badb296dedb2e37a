-- swath job store, schema version 1 (PostgreSQL dialect; the same tables as the SQLite one).
-- Times are Unix seconds (double precision); booleans are 0/1 integers, as the state machine
-- passes them; ids are UUID-formatted text in the "C" collation (byte order, cheap to compare).

CREATE TABLE clusters (
    slug        text PRIMARY KEY,
    name        text NOT NULL,
    created_at  double precision NOT NULL
);

CREATE TABLE jobs (
    id            text COLLATE "C" PRIMARY KEY,
    name          text NOT NULL,
    cluster       text NOT NULL,
    state         text NOT NULL,
    root_task_id  text COLLATE "C" NOT NULL,
    created_at    double precision NOT NULL,
    started_at    double precision,
    finished_at   double precision
);
CREATE INDEX jobs_created ON jobs (created_at);
CREATE INDEX jobs_name ON jobs (name, created_at);

CREATE TABLE tasks (
    id                text COLLATE "C" PRIMARY KEY,
    job_id            text COLLATE "C" NOT NULL,
    parent_id         text COLLATE "C",
    cluster           text NOT NULL,
    name              text NOT NULL,
    version           text NOT NULL,
    input             bytea NOT NULL,
    display           text NOT NULL DEFAULT '',
    state             text NOT NULL,
    retry_count       integer NOT NULL DEFAULT 0,
    max_retries       integer NOT NULL DEFAULT 0,
    optional          integer NOT NULL DEFAULT 0,
    lost_count        integer NOT NULL DEFAULT 0,
    pending_children  integer NOT NULL DEFAULT 0,  -- subtasks not yet done (COMPUTED -> COMPLETED at 0)
    pending_deps      integer NOT NULL DEFAULT 0,  -- dependencies whose subtree is not yet done
    has_dependents    integer NOT NULL DEFAULT 0,
    run_after         double precision NOT NULL,
    lease_owner       text,
    lease_expires     double precision,
    created_at        double precision NOT NULL,
    started_at        double precision,
    finished_at       double precision,
    error_type        text,
    error_message     text,
    error_traceback   text
);
-- Few indexes: each is written on every claim or completion. The claim scans only ready tasks
-- of one cluster, oldest first (FOR UPDATE SKIP LOCKED); lease expiry and next_ready scan the
-- running ones; a runner finds its own leases by owner.
CREATE INDEX tasks_ready ON tasks (cluster, run_after, id) WHERE state = 'QUEUED' AND pending_deps = 0;
CREATE INDEX tasks_running ON tasks (lease_expires) WHERE state = 'RUNNING';
CREATE INDEX tasks_leased ON tasks (lease_owner) WHERE state = 'RUNNING';
CREATE INDEX tasks_job ON tasks (job_id);

CREATE TABLE task_deps (
    task_id     text COLLATE "C" NOT NULL,
    depends_on  text COLLATE "C" NOT NULL,
    PRIMARY KEY (task_id, depends_on)
);
CREATE INDEX task_deps_on ON task_deps (depends_on);

CREATE TABLE progress (
    job_id  text COLLATE "C" NOT NULL,
    label   text NOT NULL,
    total   bigint NOT NULL DEFAULT 0,
    done    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, label)
);

-- Wake-ups: the LISTEN/NOTIFY channel of a cluster (the store's Python computes the same name).
-- Channel names are identifiers, at most 63 bytes: long cluster names are hashed.
CREATE FUNCTION swath_channel(cluster text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN octet_length('swath:' || cluster) <= 63 THEN 'swath:' || cluster
                ELSE 'swath:' || left(encode(sha256(convert_to(cluster, 'UTF8')), 'hex'), 40) END
$$;

-- Whenever tasks become ready (QUEUED with no pending dependency: a submission, committed
-- subtasks, released dependents, a retry, a re-queued lease, a graceful release), notify their
-- clusters. NOTIFY is delivered at commit, once per channel and transaction. Inserts notify once
-- per statement (subtasks are inserted in one statement); updates use a row trigger whose WHEN
-- clause is checked without calling any function, so claims and completions pay nothing.
CREATE FUNCTION swath_notify_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    c text;
BEGIN
    FOR c IN SELECT DISTINCT cluster FROM new_rows WHERE state = 'QUEUED' AND pending_deps = 0
    LOOP
        PERFORM pg_notify(swath_channel(c), '');
    END LOOP;
    RETURN NULL;
END
$$;

CREATE FUNCTION swath_notify_ready() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(swath_channel(NEW.cluster), '');
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_notify_insert AFTER INSERT ON tasks
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION swath_notify_inserted();

CREATE TRIGGER tasks_notify_ready AFTER UPDATE OF state, pending_deps ON tasks
FOR EACH ROW
WHEN (NEW.state = 'QUEUED' AND NEW.pending_deps = 0
      AND (OLD.state <> 'QUEUED' OR OLD.pending_deps <> 0))
EXECUTE FUNCTION swath_notify_ready();
