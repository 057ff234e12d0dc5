-- Jobs as clients see them (apalis only transports their ids; the table is parley_jobs
-- because apalis-sqlite owns a "Jobs" table in the same file), their event streams,
create table parley_jobs (
    id text primary key,
    kind text not null,
    queue text not null,
    owner_id text references users (id) on delete cascade,
    payload text not null,
    status text not null,
    attempts bigint not null default 0,
    max_attempts bigint not null,
    progress text,
    result text,
    error text,
    run_after bigint not null,
    dispatched_at bigint,
    lease_until bigint,
    cancel_requested boolean not null default false,
    created_at bigint not null,
    started_at bigint,
    finished_at bigint,
    updated_at bigint not null
);
create index jobs_owner_idx on parley_jobs (owner_id, id);
create index jobs_status_idx on parley_jobs (status);
create index jobs_outbox_idx on parley_jobs (run_after) where dispatched_at is null;

create table job_events (
    job_id text not null references parley_jobs (id) on delete cascade,
    seq bigint not null,
    event text not null,
    data text not null,
    created_at bigint not null,
    primary key (job_id, seq)
);

create table email_tokens (
    token_hash text primary key,
    user_id text not null references users (id) on delete cascade,
    purpose text not null,
    expires_at bigint not null,
    used_at bigint,
    created_at bigint not null,
    updated_at bigint not null
);
create index email_tokens_user_idx on email_tokens (user_id, purpose);

create table email_deliveries (
    job_id text primary key,
    template text not null,
    message_id text not null,
    created_at bigint not null,
    updated_at bigint not null
);

create table idempotency_keys (
    scope text not null,
    key text not null,
    status bigint not null,
    body text not null,
    created_at bigint not null,
    updated_at bigint not null,
    primary key (scope, key)
);
