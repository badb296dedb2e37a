-- swath job store, schema version 4 (SQLite dialect).
-- Runners as they report themselves: a runner upserts its row at start and with each heartbeat
-- (every lease / 3 seconds, busy or idle) and deletes it when it stops; rows silent for longer
-- than RUNNER_EXPIRY are removed by the next runner that reports. Which tasks a runner holds is
-- read from the tasks themselves (lease_owner), not from here.

CREATE TABLE runners (
    id             TEXT PRIMARY KEY,
    cluster        TEXT NOT NULL,
    host           TEXT NOT NULL,
    pid            INTEGER NOT NULL,
    concurrency    INTEGER NOT NULL,
    lease          REAL NOT NULL,
    started_at     REAL NOT NULL,
    last_heartbeat REAL NOT NULL,
    tasks          INTEGER NOT NULL
);
CREATE INDEX runners_heartbeat ON runners (last_heartbeat);
