//! Typed configuration, loaded once at start-up from `PARLEY_*` environment variables over an
//! optional `KEY=value` file named by `PARLEY_CONFIG_FILE`. Secrets never show in `Debug`.

use secrecy::SecretString;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// A configuration value that could not be used; names the variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid {var}: {reason}")]
pub struct ConfigError {
    pub var: String,
    pub reason: String,
}

/// A URL that may carry a password; `Debug` and `Display` hide the credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The URL with any `user:password@` part replaced.
    pub fn redacted(&self) -> String {
        // The credentials end at the last `@` (a raw `?` or `/` may stand in a password).
        let (mut out, rest) = match (self.0.find("://"), self.0.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => (format!("{}://***@", &self.0[..scheme]), &self.0[at + 1..]),
            _ => (String::new(), self.0.as_str()),
        };
        let (base, query) = rest.split_once('?').map_or((rest, None), |(b, q)| (b, Some(q)));
        out.push_str(base);
        if let Some(query) = query {
            // A password can also come as a parameter (`?password=`, `sslpassword=`, ...).
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if ["pass", "secret", "token", "key"].iter().any(|s| k.to_lowercase().contains(s)) => {
                        format!("{k}=***")
                    }
                    _ => p.to_owned(),
                })
                .collect();
            out.push('?');
            out.push_str(&params.join("&"));
        }
        out
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// The window over which failed second-factor attempts are counted.
pub const MFA_FAILURE_WINDOW_SECS: i64 = 15 * 60;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// How `POST /api/auth/register/` answers (`PARLEY_REGISTRATION_MODE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistrationMode {
    /// 201 with a signed-in session; 409 for a taken email or username.
    Open,
    /// 202 "check your email" for every valid request, taken address or not, in the same
    /// time: a new account gets its verification email, the owner of a taken address a
    /// notice instead, and nobody gets tokens.
    EnumerationSafe,
}

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Argon2Params {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for Argon2Params {
    /// OWASP's recommendation: 19 MiB, two passes, one lane.
    fn default() -> Self {
        Self { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 }
    }
}

/// Everything Parley reads from its environment.
#[derive(Clone, Debug)]
pub struct Config {
    pub bind: SocketAddr,
    pub public_url: String,
    pub database_url: SecretUrl,
    pub database_max_connections: u32,
    /// Master secret for token signing and encryption. When unset, one is generated and kept
    /// in the database (fine for one embedded node; set it explicitly in production).
    pub secret_key: Option<SecretString>,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub access_token_ttl_secs: i64,
    pub refresh_reuse_grace_secs: i64,
    pub session_max_age_secs: i64,
    pub session_idle_timeout_secs: i64,
    pub argon2: Argon2Params,
    pub password_hash_concurrency: usize,
    pub login_ip_per_minute: u32,
    pub login_account_per_minute: u32,
    /// Whether registration tells a taken address apart (`open`) or answers every sign-up
    /// the same way (`enumeration_safe`).
    pub registration_mode: RegistrationMode,
    /// Requests a minute each personal API key may make (`PARLEY_API_KEY_RPM`).
    pub api_key_rpm: u32,
    pub trusted_proxies: Vec<IpAddr>,
    pub admin_email: Option<String>,
    pub admin_password: Option<SecretString>,
    pub log_format: LogFormat,
    pub max_json_body_bytes: usize,
    /// Where the file mail transport writes `.eml` files (used when no SMTP host is set).
    pub email_dir: std::path::PathBuf,
    pub email_from: String,
    pub smtp: Option<SmtpConfig>,
    /// Where avatars and other media files are kept.
    pub media_dir: std::path::PathBuf,
    /// Where export files are kept (`PARLEY_EXPORT_DIR`).
    pub export_dir: std::path::PathBuf,
    /// Export files are deleted this long after they are written (`PARLEY_EXPORT_TTL_HOURS`).
    pub export_ttl_hours: u64,
    /// Intervals of schedules other than their default (`PARLEY_SCHEDULES`:
    /// `name=seconds,...`).
    pub schedules: Vec<(crate::schedules::Schedule, std::time::Duration)>,
    /// Ended sign-in sessions are deleted this many days after they ended
    /// (`PARLEY_SESSION_RETENTION_DAYS`).
    pub session_retention_days: u64,
    pub max_avatar_bytes: usize,
    pub max_avatar_pixels: u64,
    /// `redis://...` in the distributed profile: wake-ups, job events and cancel requests
    /// across processes. Otherwise (the app's database URL) everything stays in-process.
    pub queue_url: SecretUrl,
    /// Prefix of every Redis key and channel, so several deployments (or tests) can share
    /// one server.
    pub redis_prefix: String,
    /// Worker sets run inside `parley-api` (0: none, jobs run in `parley-worker` processes).
    pub workers: usize,
    /// Jobs run at once per queue per worker set.
    pub worker_concurrency: usize,
    /// A running job whose worker stops renewing its lease for this long is run again.
    pub job_lease_secs: u64,
    /// How often idle workers look for due jobs when no wake-up arrives.
    pub queue_poll_ms: u64,
    /// On SIGTERM, running jobs get this long to finish.
    pub shutdown_grace_secs: u64,
    /// A finished job's event stream is kept (for resuming) this long.
    pub job_events_retention_secs: u64,
    /// Activity-log entries older than this many days are deleted.
    pub audit_retention_days: u64,
    /// The issuer name authenticator apps show for Parley's TOTP factors.
    pub mfa_issuer: String,
    /// Failed second-factor attempts an account may make per [`MFA_FAILURE_WINDOW_SECS`].
    pub mfa_max_failures: i64,
    /// Sign-in through identity providers (`PARLEY_OAUTH_*`, `PARLEY_OIDC_*`).
    pub oauth: OAuthConfig,
    /// A quick-start LLM config created at start-up (`PARLEY_LLM_*`).
    pub llm_bootstrap: Option<LlmBootstrap>,
    /// A provider stream that sends nothing for this long is abandoned (and retried).
    pub llm_stall_secs: u64,
    /// Whether provider base URLs may point at loopback and private addresses (a local
    /// Ollama). Link-local and cloud-metadata addresses are always refused.
    pub llm_allow_private_hosts: bool,
    pub llm_max_concurrent_per_user: i64,
    /// Tokens a user may use per UTC day / month unless an admin set their own budget
    /// (`PARLEY_TOKEN_BUDGET_DAILY`, `PARLEY_TOKEN_BUDGET_MONTHLY`); unset: no limit.
    pub token_budgets: crate::usecases::quota::DefaultBudgets,
    pub llm_max_message_chars: usize,
    /// The config (by name) that writes session titles; the session's own when unset.
    pub llm_title_config: Option<String>,
    /// A listener of its own for `/metrics` (and, on `parley-worker`, `/healthz`). On
    /// `parley-api`, setting it takes `/metrics` off the public listener.
    pub metrics_bind: Option<SocketAddr>,
    /// When set, `/metrics` answers only `Authorization: Bearer <token>`.
    pub metrics_token: Option<SecretString>,
}

/// The `PARLEY_LLM_*` quick-start settings.
#[derive(Clone, Debug)]
pub struct LlmBootstrap {
    pub provider: String,
    pub base_url: Option<String>,
    pub api_key: Option<SecretString>,
    pub model: String,
}

/// How SMTP connections are secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain text (a local relay or a test catcher).
    None,
    /// Upgrade with STARTTLS (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// An SMTP relay.
#[derive(Clone, Debug)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<SecretString>,
}

impl Config {
    /// Reads the process environment (and `PARLEY_CONFIG_FILE`, if set).
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut vars: HashMap<String, String> = HashMap::new();
        if let Ok(path) = std::env::var("PARLEY_CONFIG_FILE") {
            let iter = dotenvy::from_path_iter(&path).map_err(|e| ConfigError {
                var: "PARLEY_CONFIG_FILE".into(),
                reason: format!("cannot read {path}: {e}"),
            })?;
            for item in iter {
                let (k, v) = item.map_err(|e| ConfigError {
                    var: "PARLEY_CONFIG_FILE".into(),
                    reason: format!("cannot parse {path}: {e}"),
                })?;
                vars.insert(k, v);
            }
        }
        vars.extend(std::env::vars().filter(|(k, _)| k.starts_with("PARLEY_")));
        Self::from_vars(vars)
    }

    /// Builds a configuration from explicit variables (tests use this).
    pub fn from_vars(vars: HashMap<String, String>) -> Result<Self, ConfigError> {
        let v = Vars(vars);
        let database = v.string("PARLEY_DATABASE_URL").unwrap_or_default();
        let queue = v.string("PARLEY_QUEUE_URL").unwrap_or_default();
        if database.starts_with("postgres") && !queue.starts_with("redis") {
            return Err(v.error("PARLEY_QUEUE_URL", "must be a redis:// URL when the database is PostgreSQL"));
        }
        if !queue.is_empty() && !queue.starts_with("redis") && !queue.starts_with("sqlite") {
            return Err(v.error("PARLEY_QUEUE_URL", "expected redis://... or sqlite://..."));
        }
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            bind: v.parse("PARLEY_BIND", "127.0.0.1:8080".parse().expect("valid default"))?,
            public_url: v
                .string("PARLEY_PUBLIC_URL")
                .unwrap_or_else(|| "http://127.0.0.1:8080".into())
                .trim_end_matches('/')
                .to_owned(),
            database_url: SecretUrl::new(
                v.string("PARLEY_DATABASE_URL").unwrap_or_else(|| "sqlite://./data/parley.db".into()),
            ),
            database_max_connections: v.parse("PARLEY_DATABASE_MAX_CONNECTIONS", 16)?,
            secret_key: v.secret("PARLEY_SECRET_KEY", 32)?,
            jwt_issuer: v.string("PARLEY_JWT_ISSUER").unwrap_or_else(|| "parley".into()),
            jwt_audience: v.string("PARLEY_JWT_AUDIENCE").unwrap_or_else(|| "parley-api".into()),
            access_token_ttl_secs: v.positive("PARLEY_ACCESS_TOKEN_TTL_SECS", 15 * 60)?,
            refresh_reuse_grace_secs: v.parse("PARLEY_REFRESH_REUSE_GRACE_SECS", 10)?,
            session_max_age_secs: v.positive("PARLEY_SESSION_MAX_AGE_SECS", 30 * 24 * 3600)?,
            session_idle_timeout_secs: v.positive("PARLEY_SESSION_IDLE_TIMEOUT_SECS", 7 * 24 * 3600)?,
            argon2: {
                let params = Argon2Params {
                    memory_kib: v.positive("PARLEY_ARGON2_MEMORY_KIB", 19 * 1024)?,
                    iterations: v.positive("PARLEY_ARGON2_ITERATIONS", 2)?,
                    parallelism: v.positive("PARLEY_ARGON2_PARALLELISM", 1)?,
                };
                // argon2's own floor: 8 KiB of memory per lane.
                if u64::from(params.memory_kib) < 8 * u64::from(params.parallelism) {
                    return Err(v.error("PARLEY_ARGON2_MEMORY_KIB", "must be at least 8 × PARLEY_ARGON2_PARALLELISM"));
                }
                params
            },
            password_hash_concurrency: v.positive("PARLEY_PASSWORD_HASH_CONCURRENCY", cpus)?,
            login_ip_per_minute: v.positive("PARLEY_LOGIN_IP_PER_MINUTE", 30)?,
            login_account_per_minute: v.positive("PARLEY_LOGIN_ACCOUNT_PER_MINUTE", 10)?,
            registration_mode: match v.string("PARLEY_REGISTRATION_MODE").as_deref() {
                None | Some("open") => RegistrationMode::Open,
                Some("enumeration_safe") => RegistrationMode::EnumerationSafe,
                Some(_) => return Err(v.error("PARLEY_REGISTRATION_MODE", "expected open or enumeration_safe")),
            },
            api_key_rpm: v.positive("PARLEY_API_KEY_RPM", 60)?,
            trusted_proxies: v.list("PARLEY_TRUSTED_PROXIES")?,
            admin_email: v.string("PARLEY_ADMIN_EMAIL"),
            admin_password: v.secret("PARLEY_ADMIN_PASSWORD", 0)?,
            log_format: match v.string("PARLEY_LOG_FORMAT").as_deref() {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(_) => return Err(v.error("PARLEY_LOG_FORMAT", "expected text or json")),
            },
            max_json_body_bytes: v.positive("PARLEY_MAX_JSON_BODY_BYTES", 64 * 1024)?,
            email_dir: v.string("PARLEY_EMAIL_DIR").unwrap_or_else(|| "./data/mail".into()).into(),
            email_from: v.string("PARLEY_EMAIL_FROM").unwrap_or_else(|| "Parley <no-reply@parley.local>".into()),
            smtp: match v.string("PARLEY_SMTP_HOST") {
                None => None,
                Some(host) => {
                    let tls = match v.string("PARLEY_SMTP_TLS").as_deref() {
                        None | Some("starttls") => SmtpTls::StartTls,
                        Some("tls") => SmtpTls::Tls,
                        Some("none") => SmtpTls::None,
                        Some(_) => return Err(v.error("PARLEY_SMTP_TLS", "expected none, starttls or tls")),
                    };
                    let default_port = match tls {
                        SmtpTls::None => 25,
                        SmtpTls::StartTls => 587,
                        SmtpTls::Tls => 465,
                    };
                    Some(SmtpConfig {
                        host,
                        port: v.parse("PARLEY_SMTP_PORT", default_port)?,
                        tls,
                        username: v.string("PARLEY_SMTP_USERNAME"),
                        password: v.secret("PARLEY_SMTP_PASSWORD", 0)?,
                    })
                }
            },
            media_dir: v.string("PARLEY_MEDIA_DIR").unwrap_or_else(|| "./data/media".into()).into(),
            export_dir: v.string("PARLEY_EXPORT_DIR").unwrap_or_else(|| "./data/exports".into()).into(),
            export_ttl_hours: v.positive("PARLEY_EXPORT_TTL_HOURS", 24)?,
            schedules: schedules(&v)?,
            session_retention_days: v.positive("PARLEY_SESSION_RETENTION_DAYS", 30)?,
            max_avatar_bytes: v.positive("PARLEY_MAX_AVATAR_BYTES", 5 * 1024 * 1024)?,
            max_avatar_pixels: v.positive("PARLEY_MAX_AVATAR_PIXELS", 40_000_000)?,
            queue_url: SecretUrl::new(match v.string("PARLEY_QUEUE_URL") {
                Some(url) => url,
                None => v.string("PARLEY_DATABASE_URL").unwrap_or_else(|| "sqlite://./data/parley.db".into()),
            }),
            redis_prefix: v.string("PARLEY_REDIS_PREFIX").unwrap_or_else(|| "parley".into()),
            workers: v.parse("PARLEY_WORKERS", 1)?,
            worker_concurrency: v.positive("PARLEY_WORKER_CONCURRENCY", 16)?,
            job_lease_secs: v.positive("PARLEY_JOB_LEASE_SECS", 30)?,
            queue_poll_ms: v.positive("PARLEY_QUEUE_POLL_MS", 200)?,
            shutdown_grace_secs: v.parse("PARLEY_SHUTDOWN_GRACE_SECS", 20)?,
            job_events_retention_secs: match v.parse("PARLEY_JOB_EVENTS_RETENTION_SECS", 86_400)? {
                secs if secs < 600 => {
                    return Err(v.error(
                        "PARLEY_JOB_EVENTS_RETENTION_SECS",
                        "must be at least 600 (streams resume for 10 minutes)",
                    ));
                }
                secs => secs,
            },
            audit_retention_days: v.positive("PARLEY_AUDIT_RETENTION_DAYS", 365)?,
            mfa_issuer: v.string("PARLEY_MFA_ISSUER").unwrap_or_else(|| "Parley".into()),
            mfa_max_failures: v.positive("PARLEY_MFA_MAX_FAILURES", 5)?,
            oauth: oauth_config(&v)?,
            llm_bootstrap: match (v.string("PARLEY_LLM_PROVIDER"), v.string("PARLEY_LLM_MODEL")) {
                (None, None) => None,
                (Some(provider), Some(model)) => {
                    if !["openai", "openai_compatible", "anthropic"].contains(&provider.as_str()) {
                        return Err(v.error("PARLEY_LLM_PROVIDER", "expected openai, openai_compatible or anthropic"));
                    }
                    Some(LlmBootstrap {
                        provider,
                        base_url: v.string("PARLEY_LLM_BASE_URL"),
                        api_key: v.secret("PARLEY_LLM_API_KEY", 0)?,
                        model,
                    })
                }
                (Some(_), None) => return Err(v.error("PARLEY_LLM_MODEL", "is required with PARLEY_LLM_PROVIDER")),
                (None, Some(_)) => return Err(v.error("PARLEY_LLM_PROVIDER", "is required with PARLEY_LLM_MODEL")),
            },
            llm_stall_secs: v.positive("PARLEY_LLM_STALL_SECS", 30)?,
            llm_allow_private_hosts: match v.string("PARLEY_LLM_ALLOW_PRIVATE_HOSTS").as_deref() {
                None | Some("true") => true,
                Some("false") => false,
                Some(_) => return Err(v.error("PARLEY_LLM_ALLOW_PRIVATE_HOSTS", "expected true or false")),
            },
            llm_max_concurrent_per_user: v.positive("PARLEY_LLM_MAX_CONCURRENT_PER_USER", 2)?,
            token_budgets: crate::usecases::quota::DefaultBudgets {
                daily: v.optional_count("PARLEY_TOKEN_BUDGET_DAILY")?,
                monthly: v.optional_count("PARLEY_TOKEN_BUDGET_MONTHLY")?,
            },
            llm_max_message_chars: v.positive("PARLEY_LLM_MAX_MESSAGE_CHARS", 32_000)?,
            llm_title_config: v.string("PARLEY_LLM_TITLE_CONFIG"),
            metrics_bind: match v.string("PARLEY_METRICS_BIND") {
                None => None,
                Some(raw) => Some(raw.parse().map_err(|e| v.error("PARLEY_METRICS_BIND", format!("{raw:?}: {e}")))?),
            },
            metrics_token: v.secret("PARLEY_METRICS_TOKEN", 16)?,
        })
    }

    pub fn is_sqlite(&self) -> bool {
        self.database_url.expose().starts_with("sqlite:")
    }
}

/// The identity providers users may sign in with, and where a sign-in may return to.
#[derive(Clone, Debug, Default)]
pub struct OAuthConfig {
    /// Exact URIs a sign-in may return to with its one-time code (`PARLEY_OAUTH_REDIRECT_URIS`).
    pub redirect_uris: Vec<String>,
    pub github: Option<GithubProvider>,
    /// Google (`PARLEY_OAUTH_GOOGLE_*`, named `google`) and `PARLEY_OIDC_<NAME>_*`, by name.
    pub oidc: Vec<OidcProvider>,
}

/// GitHub, or GitHub Enterprise with its own URLs.
#[derive(Clone, Debug)]
pub struct GithubProvider {
    pub client_id: String,
    pub client_secret: SecretString,
    pub authorize_url: String,
    pub token_url: String,
    /// The REST API's base (`/user`, `/user/emails`).
    pub api_url: String,
}

/// An OpenID Connect provider, found by discovery from its issuer.
#[derive(Clone, Debug)]
pub struct OidcProvider {
    /// Lowercase; the `{provider}` of the sign-in paths.
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: SecretString,
}

/// `PARLEY_SCHEDULES`: `name=seconds` pairs, comma-separated.
fn schedules(v: &Vars) -> Result<Vec<(crate::schedules::Schedule, std::time::Duration)>, ConfigError> {
    let key = "PARLEY_SCHEDULES";
    let raw: Vec<String> = v.list(key)?;
    raw.iter()
        .map(|pair| {
            let (name, secs) =
                pair.split_once('=').ok_or_else(|| v.error(key, format!("{pair:?}: expected name=seconds")))?;
            let schedule = crate::schedules::Schedule::parse(name.trim())
                .ok_or_else(|| v.error(key, format!("{name:?} is not a schedule")))?;
            let secs: u64 = secs
                .trim()
                .parse()
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| v.error(key, format!("{pair:?}: seconds must be a whole number above zero")))?;
            Ok((schedule, std::time::Duration::from_secs(secs)))
        })
        .collect()
}

fn oauth_config(v: &Vars) -> Result<OAuthConfig, ConfigError> {
    let secret = |key: &str| -> Result<SecretString, ConfigError> {
        v.secret(key, 1)?.ok_or_else(|| v.error(key, "is required with the matching _CLIENT_ID"))
    };
    let github = match v.string("PARLEY_OAUTH_GITHUB_CLIENT_ID") {
        None => None,
        Some(client_id) => Some(GithubProvider {
            client_id,
            client_secret: secret("PARLEY_OAUTH_GITHUB_CLIENT_SECRET")?,
            authorize_url: v
                .string("PARLEY_OAUTH_GITHUB_AUTHORIZE_URL")
                .unwrap_or_else(|| "https://github.com/login/oauth/authorize".into()),
            token_url: v
                .string("PARLEY_OAUTH_GITHUB_TOKEN_URL")
                .unwrap_or_else(|| "https://github.com/login/oauth/access_token".into()),
            api_url: v
                .string("PARLEY_OAUTH_GITHUB_API_URL")
                .unwrap_or_else(|| "https://api.github.com".into())
                .trim_end_matches('/')
                .to_owned(),
        }),
    };
    let mut oidc = Vec::new();
    if let Some(client_id) = v.string("PARLEY_OAUTH_GOOGLE_CLIENT_ID") {
        oidc.push(OidcProvider {
            name: "google".into(),
            issuer: "https://accounts.google.com".into(),
            client_id,
            client_secret: secret("PARLEY_OAUTH_GOOGLE_CLIENT_SECRET")?,
        });
    }
    let mut names: Vec<String> =
        v.0.keys().filter_map(|k| k.strip_prefix("PARLEY_OIDC_")?.strip_suffix("_ISSUER")).map(str::to_owned).collect();
    names.sort();
    for name in names {
        let lower = name.to_lowercase();
        if lower.is_empty() || !lower.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || lower == "github" {
            return Err(v.error(
                &format!("PARLEY_OIDC_{name}_ISSUER"),
                "the name must be letters, digits or _, and not GITHUB",
            ));
        }
        if oidc.iter().any(|p: &OidcProvider| p.name == lower) {
            return Err(v.error(&format!("PARLEY_OIDC_{name}_ISSUER"), "names a provider twice"));
        }
        let issuer_key = format!("PARLEY_OIDC_{name}_ISSUER");
        let id_key = format!("PARLEY_OIDC_{name}_CLIENT_ID");
        oidc.push(OidcProvider {
            name: lower,
            issuer: v.string(&issuer_key).ok_or_else(|| v.error(&issuer_key, "is empty"))?,
            client_id: v.string(&id_key).ok_or_else(|| v.error(&id_key, "is required with _ISSUER"))?,
            client_secret: secret(&format!("PARLEY_OIDC_{name}_CLIENT_SECRET"))?,
        });
    }
    let redirect_uris: Vec<String> = v.list("PARLEY_OAUTH_REDIRECT_URIS")?;
    for uri in &redirect_uris {
        if url::Url::parse(uri).is_err() {
            return Err(v.error("PARLEY_OAUTH_REDIRECT_URIS", format!("{uri:?} is not an absolute URL")));
        }
    }
    Ok(OAuthConfig { redirect_uris, github, oidc })
}

struct Vars(HashMap<String, String>);

impl Vars {
    fn string(&self, key: &str) -> Option<String> {
        self.0.get(key).map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
    }

    fn error(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError { var: key.to_owned(), reason: reason.into() }
    }

    fn parse<T: FromStr>(&self, key: &str, default: T) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        match self.string(key) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|e: T::Err| self.error(key, format!("{raw:?}: {e}"))),
        }
    }

    fn positive<T: FromStr + Default + PartialOrd>(&self, key: &str, default: T) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        let value = self.parse(key, default)?;
        if value <= T::default() {
            return Err(self.error(key, "must be greater than zero"));
        }
        Ok(value)
    }

    /// A count of zero or more, or `None` when unset.
    fn optional_count(&self, key: &str) -> Result<Option<i64>, ConfigError> {
        match self.string(key) {
            None => Ok(None),
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if n >= 0 => Ok(Some(n)),
                _ => Err(self.error(key, format!("{raw:?}: expected a whole number of zero or more"))),
            },
        }
    }

    fn secret(&self, key: &str, min_len: usize) -> Result<Option<SecretString>, ConfigError> {
        match self.0.get(key).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) if s.len() < min_len => Err(self.error(key, format!("must be at least {min_len} characters"))),
            Some(s) => Ok(Some(SecretString::from(s.clone()))),
        }
    }

    fn list<T: FromStr>(&self, key: &str) -> Result<Vec<T>, ConfigError>
    where
        T::Err: fmt::Display,
    {
        self.string(key)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().map_err(|e: T::Err| self.error(key, format!("{s:?}: {e}"))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_give_the_embedded_profile() {
        let config = Config::from_vars(HashMap::new()).unwrap();
        assert_eq!(config.bind.to_string(), "127.0.0.1:8080");
        assert!(config.is_sqlite());
        assert_eq!(config.argon2, Argon2Params::default());
    }

    #[test]
    fn an_invalid_value_names_its_variable() {
        let err = Config::from_vars(vars(&[("PARLEY_BIND", "nowhere")])).unwrap_err();
        assert_eq!(err.var, "PARLEY_BIND");
        assert!(err.to_string().contains("PARLEY_BIND"));
        let err = Config::from_vars(vars(&[("PARLEY_DATABASE_URL", "postgres://db/parley")])).unwrap_err();
        assert_eq!(err.var, "PARLEY_QUEUE_URL");
        let err = Config::from_vars(vars(&[("PARLEY_ACCESS_TOKEN_TTL_SECS", "0")])).unwrap_err();
        assert_eq!(err.var, "PARLEY_ACCESS_TOKEN_TTL_SECS");
        // Values each fine alone, refused together by argon2.
        let err = Config::from_vars(vars(&[("PARLEY_ARGON2_MEMORY_KIB", "8"), ("PARLEY_ARGON2_PARALLELISM", "2")]))
            .unwrap_err();
        assert_eq!(err.var, "PARLEY_ARGON2_MEMORY_KIB");
    }

    #[test]
    fn identity_providers_come_from_their_variables() {
        let config = Config::from_vars(vars(&[
            ("PARLEY_OAUTH_REDIRECT_URIS", "https://app.example.com/cb, http://localhost:3000/cb"),
            ("PARLEY_OAUTH_GITHUB_CLIENT_ID", "gh-id"),
            ("PARLEY_OAUTH_GITHUB_CLIENT_SECRET", "gh-s3cret-value"),
            ("PARLEY_OAUTH_GITHUB_API_URL", "https://ghe.example.com/api/v3/"),
            ("PARLEY_OAUTH_GOOGLE_CLIENT_ID", "g-id"),
            ("PARLEY_OAUTH_GOOGLE_CLIENT_SECRET", "g-s3cret-value"),
            ("PARLEY_OIDC_OKTA_ISSUER", "https://okta.example.com"),
            ("PARLEY_OIDC_OKTA_CLIENT_ID", "okta-id"),
            ("PARLEY_OIDC_OKTA_CLIENT_SECRET", "okta-s3cret-value"),
        ]))
        .unwrap();
        let oauth = &config.oauth;
        assert_eq!(oauth.redirect_uris, ["https://app.example.com/cb", "http://localhost:3000/cb"]);
        let github = oauth.github.as_ref().unwrap();
        assert_eq!(github.api_url, "https://ghe.example.com/api/v3");
        assert_eq!(github.token_url, "https://github.com/login/oauth/access_token");
        let names: Vec<&str> = oauth.oidc.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["google", "okta"]);
        assert_eq!(oauth.oidc[0].issuer, "https://accounts.google.com");
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret"), "{debug}");

        let err = Config::from_vars(vars(&[("PARLEY_OIDC_OKTA_ISSUER", "https://okta.example.com")])).unwrap_err();
        assert_eq!(err.var, "PARLEY_OIDC_OKTA_CLIENT_ID");
        let err = Config::from_vars(vars(&[("PARLEY_OAUTH_GITHUB_CLIENT_ID", "x")])).unwrap_err();
        assert_eq!(err.var, "PARLEY_OAUTH_GITHUB_CLIENT_SECRET");
        let err = Config::from_vars(vars(&[("PARLEY_OAUTH_REDIRECT_URIS", "/relative")])).unwrap_err();
        assert_eq!(err.var, "PARLEY_OAUTH_REDIRECT_URIS");
    }

    #[test]
    fn url_passwords_in_query_parameters_are_redacted() {
        let url = SecretUrl::new("postgres://db/parley?sslmode=require&password=hunter2&sslpassword=x");
        assert_eq!(url.redacted(), "postgres://db/parley?sslmode=require&password=***&sslpassword=***");
        assert_eq!(SecretUrl::new("redis://u:p@cache:6379/0").redacted(), "redis://***@cache:6379/0");
        assert_eq!(SecretUrl::new("postgres://u:pa?ss@h/db").redacted(), "postgres://***@h/db");
    }

    #[test]
    fn debug_output_hides_secrets_and_url_passwords() {
        let config = Config::from_vars(vars(&[
            ("PARLEY_DATABASE_URL", "postgres://app:hunter2hunter2@db/parley"),
            ("PARLEY_QUEUE_URL", "redis://:r3dis-secret@cache:6379"),
            ("PARLEY_SECRET_KEY", "k3y-k3y-k3y-k3y-k3y-k3y-k3y-k3y-k3y"),
            ("PARLEY_ADMIN_PASSWORD", "adm1n-pa55w0rd"),
        ]))
        .unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2hunter2"));
        assert!(!debug.contains("k3y-k3y"));
        assert!(!debug.contains("adm1n-pa55w0rd"));
        assert!(debug.contains("postgres://***@db/parley"));
        assert!(!debug.contains("r3dis-secret"));
    }
}
