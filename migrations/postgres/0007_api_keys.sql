-- Personal API keys (only a hash of each is stored) and the calls of the OpenAI-compatible
-- chat completions endpoint (the request a job runs; its answer is the job's result).
create table api_keys (
    id text primary key,
    user_id text not null references users (id) on delete cascade,
    name text not null,
    prefix text not null,
    key_hash text not null,
    scopes text not null,
    expires_at bigint,
    last_used_at bigint,
    revoked_at bigint,
    created_at bigint not null,
    updated_at bigint not null
);
create unique index api_keys_key_hash_key on api_keys (key_hash);
create index api_keys_user_idx on api_keys (user_id, id);

create table api_completions (
    id text primary key,
    user_id text not null references users (id) on delete cascade,
    api_key_id text references api_keys (id) on delete set null,
    config_id text references llm_configs (id) on delete set null,
    request text not null,
    message_id text,
    prompt_tokens bigint,
    completion_tokens bigint,
    created_at bigint not null,
    updated_at bigint not null
);
create index api_completions_user_idx on api_completions (user_id, id);
