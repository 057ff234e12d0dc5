-- The request that created a job (its X-Request-Id), so that the worker's logs of the job carry
-- it: one chat can be followed from its POST to its last event.
alter table parley_jobs add column request_id text;
