-- swath job store, schema version 6 (PostgreSQL only).
-- Task and progress changes are no longer announced by row triggers: a NOTIFY in a transaction
-- makes its commit take PostgreSQL's global notification lock, so with a trigger on every task
-- completion the commits of all runners queued there one after another (the 4-process dispatch
-- benchmark lost about a tenth of its speed). The store that commits such changes announces
-- them itself, after the commit and outside the transaction, at most once per job every
-- quarter of a second (PostgresJobStore._announce). Job submissions and job state changes are
-- rare and keep their trigger (jobs_notify_changed, version 4).

DROP TRIGGER tasks_notify_changed ON tasks;
DROP TRIGGER progress_notify_changed ON progress;
