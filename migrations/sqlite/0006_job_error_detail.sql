-- The full (redacted) text of a job's last error, for admins; `error` holds what the job's
-- owner is told.
alter table parley_jobs add column error_detail text;
