-- Finished jobs are found by age to prune their event streams.
create index parley_jobs_finished_idx on parley_jobs (finished_at);
