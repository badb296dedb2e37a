-- swath job store, schema version 2 (SQLite dialect).
-- The version of a task as numbers, so a claim takes only tasks whose identifier the runner
-- registered (same name and major, minor at most the runner's); and a per-task time limit.

ALTER TABLE tasks ADD COLUMN version_major INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN version_minor INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN timeout REAL;
UPDATE tasks
SET version_major = CAST(substr(version, 2, instr(version, '.') - 2) AS INTEGER),
    version_minor = CAST(substr(version, instr(version, '.') + 1) AS INTEGER);

-- SQLite turns an integer sum past 64 bits into a float; refuse it instead, as PostgreSQL's
-- bigint does, so a progress count is never silently rounded.
CREATE TRIGGER progress_in_range BEFORE UPDATE ON progress
WHEN typeof(NEW.total) <> 'integer' OR typeof(NEW.done) <> 'integer'
BEGIN
    SELECT RAISE(ABORT, 'progress count out of range');
END;
