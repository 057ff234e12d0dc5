-- Accounts: users, sessions, refresh tokens, and the server's generated secret.
create table users (
    id text primary key,
    email text not null,
    email_lower text not null,
    username text,
    username_lower text,
    display_name text not null default '',
    bio text not null default '',
    avatar_key text,
    password_hash text not null,
    email_verified integer not null default 0,
    is_admin integer not null default 0,
    is_active integer not null default 1,
    date_joined bigint not null,
    last_login bigint,
    created_at bigint not null,
    updated_at bigint not null
);
create unique index users_email_lower_key on users (email_lower);
create unique index users_username_lower_key on users (username_lower);

create table sessions (
    id text primary key,
    user_id text not null references users (id) on delete cascade,
    user_agent text not null default '',
    ip text not null default '',
    expires_at bigint not null,
    last_used_at bigint not null,
    revoked_at bigint,
    revoke_reason text,
    created_at bigint not null,
    updated_at bigint not null
);
create index sessions_user_id_idx on sessions (user_id);

create table refresh_tokens (
    token_hash text primary key,
    session_id text not null references sessions (id) on delete cascade,
    rotated_at bigint,
    created_at bigint not null,
    updated_at bigint not null
);
create index refresh_tokens_session_id_idx on refresh_tokens (session_id);

create table server_secrets (
    name text primary key,
    value text not null,
    created_at bigint not null,
    updated_at bigint not null
);
