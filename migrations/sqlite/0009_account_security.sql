-- Account security: how each session signed in, the activity log, and TOTP second factors.

-- Space-separated methods (RFC 8176 names): 'pwd', 'pwd otp'.
alter table sessions add column amr text not null default 'pwd';

-- Security events. No foreign keys: the record of what happened outlives the accounts.
create table audit_events (
    id text primary key,
    actor_id text,
    target_id text,
    action text not null,
    result text not null,
    ip text not null default '',
    user_agent text not null default '',
    details text,
    created_at bigint not null,
    updated_at bigint not null
);
create index audit_events_actor_id_idx on audit_events (actor_id, id);
create index audit_events_target_id_idx on audit_events (target_id, id);
create index audit_events_action_idx on audit_events (action, id);
create index audit_events_created_at_idx on audit_events (created_at);

-- One TOTP factor per user; the secret is sealed with the server's encryption key.
create table mfa_totp (
    user_id text primary key references users (id) on delete cascade,
    secret text not null,
    confirmed_at bigint,
    last_used_step bigint,
    created_at bigint not null,
    updated_at bigint not null
);

-- Single-use recovery codes, stored as keyed hashes.
create table mfa_recovery_codes (
    id text primary key,
    user_id text not null references users (id) on delete cascade,
    code_hash text not null,
    used_at bigint,
    created_at bigint not null,
    updated_at bigint not null
);
create index mfa_recovery_codes_user_id_idx on mfa_recovery_codes (user_id, code_hash);

-- A password sign-in waiting for its second factor (the mfa_token, stored hashed).
create table mfa_challenges (
    token_hash text primary key,
    user_id text not null references users (id) on delete cascade,
    -- How the first step signed in: 'pwd' or 'oauth'.
    amr text not null default 'pwd',
    expires_at bigint not null,
    used_at bigint,
    created_at bigint not null,
    updated_at bigint not null
);
create index mfa_challenges_user_id_idx on mfa_challenges (user_id);

-- Accounts at identity providers that sign in to a Parley account.
create table user_identities (
    id text primary key,
    user_id text not null references users (id) on delete cascade,
    provider text not null,
    subject text not null,
    email text not null default '',
    created_at bigint not null,
    updated_at bigint not null
);
create unique index user_identities_provider_subject_key on user_identities (provider, subject);
create index user_identities_user_id_idx on user_identities (user_id);

-- The one-time code a provider sign-in returns to the client with (stored hashed).
create table oauth_exchange_codes (
    code_hash text primary key,
    user_id text not null references users (id) on delete cascade,
    provider text not null,
    expires_at bigint not null,
    used_at bigint,
    created_at bigint not null,
    updated_at bigint not null
);
