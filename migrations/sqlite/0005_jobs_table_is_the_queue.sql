-- The jobs table is the queue itself: a worker claims due rows directly, so the outbox's
-- dispatch mark goes.
drop index jobs_outbox_idx;
alter table parley_jobs drop column dispatched_at;
-- What a worker's claim looks for: due waiting rows of its queue, and expired leases.
create index parley_jobs_due_idx on parley_jobs (queue, run_after) where status in ('queued', 'retrying');
create index parley_jobs_lease_idx on parley_jobs (queue, lease_until) where status = 'running';
