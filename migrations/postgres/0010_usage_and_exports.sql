-- Token usage (one row per finished attempt of a reply, title or /v1 call, until the
-- rollup_usage schedule sums old days into one row per user, config, model and kind) and per-user
-- quotas (budgets and the configs a user may use; no row: the defaults).
create table token_usage (
    id text primary key,
    user_id text not null references users (id) on delete cascade,
    job_id text not null,
    attempt bigint not null,
    kind text not null,
    config_id text references llm_configs (id) on delete set null,
    model text not null,
    day text not null,
    prompt_tokens bigint not null,
    completion_tokens bigint not null,
    counted_by text not null,
    outcome text not null,
    requests bigint not null default 1,
    created_at bigint not null,
    updated_at bigint not null
);
create unique index token_usage_job_attempt_key on token_usage (job_id, attempt);
create index token_usage_user_day_idx on token_usage (user_id, day);
create index token_usage_day_idx on token_usage (day);

create table user_quotas (
    user_id text primary key references users (id) on delete cascade,
    token_budget_daily bigint,
    token_budget_monthly bigint,
    allowed_config_ids text,
    created_at bigint not null,
    updated_at bigint not null
);

-- Exports: a file an export job writes (under a server-made storage key) for its owner,
-- kept until expires_at.
create table exports (
    id text primary key,
    user_id text not null references users (id) on delete cascade,
    kind text not null,
    format text not null,
    filters text not null,
    job_id text,
    storage_key text,
    file_name text,
    content_type text,
    size_bytes bigint,
    expires_at bigint,
    created_at bigint not null,
    updated_at bigint not null
);
create index exports_user_idx on exports (user_id, id);
create index exports_expires_idx on exports (expires_at);

-- Read-only public links to a snapshot of a chat session (up to `last_message_id`). The
-- public token is random (256 bits); `id` orders the owner's list.
create table shared_sessions (
    id text primary key,
    token text not null,
    user_id text not null references users (id) on delete cascade,
    session_id text not null references chat_sessions (id) on delete cascade,
    title text not null,
    last_message_id text not null,
    expires_at bigint,
    created_at bigint not null,
    updated_at bigint not null
);
create unique index shared_sessions_token_key on shared_sessions (token);
create index shared_sessions_user_idx on shared_sessions (user_id, id);

-- Runs of the periodic jobs: one row per schedule and tick, so that however many worker
-- processes look, one of them enqueues the tick's job.
create table schedule_runs (
    schedule text not null,
    tick bigint not null,
    job_id text not null,
    created_at bigint not null,
    updated_at bigint not null,
    primary key (schedule, tick)
);

-- Admin stats read days by these (and parley_jobs_finished_idx, from 0004).
create index users_date_joined_idx on users (date_joined);
create index chat_sessions_created_idx on chat_sessions (created_at);
create index chat_messages_created_idx on chat_messages (created_at);
