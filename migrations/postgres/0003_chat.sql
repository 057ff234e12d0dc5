-- LLM configs (API keys encrypted), chat sessions and messages.
create table llm_configs (
    id text primary key,
    name text not null,
    provider text not null,
    model text not null,
    base_url text,
    api_key_enc text,
    temperature double precision,
    max_tokens bigint,
    context_window bigint not null,
    system_prompt text not null default '',
    is_default boolean not null default false,
    enabled boolean not null default true,
    created_at bigint not null,
    updated_at bigint not null
);
create unique index llm_configs_name_key on llm_configs (name);

create table chat_sessions (
    id text primary key,
    user_id text not null references users (id) on delete cascade,
    config_id text references llm_configs (id) on delete set null,
    title text not null,
    title_is_auto boolean not null default true,
    tags text not null default '[]',
    created_at bigint not null,
    updated_at bigint not null
);
create index chat_sessions_user_idx on chat_sessions (user_id, id);

create table chat_messages (
    id text primary key,
    session_id text not null references chat_sessions (id) on delete cascade,
    user_id text not null references users (id) on delete cascade,
    role text not null,
    content text not null,
    status text not null,
    model text,
    prompt_tokens bigint,
    completion_tokens bigint,
    finish_reason text,
    error text,
    job_id text,
    created_at bigint not null,
    updated_at bigint not null
);
create index chat_messages_session_idx on chat_messages (session_id, id);
