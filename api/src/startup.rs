//! Building and running the application.

use crate::ratelimit::{ApiKeyLimiter, LoginLimiter};
use crate::routes;
use crate::state::AppState;
use anyhow::Context;
use axum::ServiceExt;
use axum::extract::Request;
use axum::http::HeaderName;
use axum::serve::ListenerExt;
use parley_shared::auth::{JwtKeys, Keys, PasswordHasher};
use parley_shared::domain::{Email, Password};
use parley_shared::events::EventBus;
use parley_shared::queue::Queue;
use parley_shared::store::users;
use parley_shared::{Config, Db};
use secrecy::ExposeSecret;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tower::Layer;
use tower_http::LatencyUnit;
use tower_http::normalize_path::NormalizePathLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

/// A built application: database migrated, listener bound.
pub struct Application {
    listener: TcpListener,
    /// `PARLEY_METRICS_BIND`'s listener, when set.
    metrics_listener: Option<TcpListener>,
    state: AppState,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        parley_shared::metrics::install();
        let state = build_state(config).await?;
        bootstrap_admin(&state).await?;
        parley_shared::usecases::llm_config::bootstrap(&state.db, &state.keys, &state.config).await?;
        let listener = TcpListener::bind(state.config.bind)
            .await
            .with_context(|| format!("binding {} (PARLEY_BIND)", state.config.bind))?;
        let metrics_listener = match state.config.metrics_bind {
            None => None,
            Some(bind) => {
                Some(TcpListener::bind(bind).await.with_context(|| format!("binding {bind} (PARLEY_METRICS_BIND)"))?)
            }
        };
        Ok(Self { listener, metrics_listener, state })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    /// The port of `PARLEY_METRICS_BIND`'s listener, when set.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.port())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until SIGINT or SIGTERM, then drains in-flight requests and stops the
    /// in-process workers (if any) after their grace period.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut workers = Vec::new();
        for _ in 0..self.state.config.workers {
            let mut stop = stop_rx.clone();
            let ctx = self.state.worker_context();
            workers.push(tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(e) = parley_worker::run(ctx, stopped).await {
                    tracing::error!(error = format!("{e:#}"), "in-process workers stopped");
                }
            }));
        }
        if let Some(listener) = self.metrics_listener {
            let router = crate::metrics::private_router(self.state.clone());
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::error!(error = %e, "the metrics listener stopped");
                }
            });
        }
        let limiter = self.state.login_limiter.clone();
        let key_limiter = self.state.api_key_limiter.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                limiter.sweep();
                key_limiter.sweep();
            }
        });
        let request_id = HeaderName::from_static("x-request-id");
        let router = routes::router(self.state.clone())
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(|req: &Request| {
                        let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                        tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request.id = id, user.id = tracing::field::Empty)
                    })
                    // One line per request at the default level: status and latency.
                    .on_response(DefaultOnResponse::new().level(Level::INFO).latency_unit(LatencyUnit::Millis)),
            )
            .layer(PropagateRequestIdLayer::new(request_id.clone()))
            .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid));
        let app = NormalizePathLayer::trim_trailing_slash().layer(router);
        tracing::info!(address = %self.listener.local_addr()?, "listening");
        // Without TCP_NODELAY a small SSE frame after the headers waits for the client's
        // delayed ACK (~40 ms).
        let listener = self.listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        // On SIGTERM the in-process workers stop fetching at once (running jobs get their
        // grace period) while the server drains; connections still open after the grace
        // period (long SSE streams) are closed.
        let (signalled_tx, mut signalled) = tokio::sync::watch::channel(false);
        let server =
            axum::serve(listener, ServiceExt::<Request>::into_make_service_with_connect_info::<SocketAddr>(app))
                .with_graceful_shutdown(async move {
                    shutdown_signal().await;
                    let _ = stop_tx.send(true);
                    let _ = signalled_tx.send(true);
                });
        let grace = Duration::from_secs(self.state.config.shutdown_grace_secs);
        tokio::select! {
            served = server.into_future() => served?,
            _ = async {
                let _ = signalled.wait_for(|s| *s).await;
                tokio::time::sleep(grace).await;
            } => tracing::warn!("connections still open after the shutdown grace period; closing them"),
        }
        for worker in workers {
            let _ = worker.await;
        }
        Ok(())
    }
}

/// Connects, migrates, and derives keys: everything the API and the CLI commands share.
pub async fn build_state(config: Config) -> anyhow::Result<AppState> {
    let db = Db::connect(config.database_url.expose(), config.database_max_connections).await?;
    db.migrate().await?;
    let keys = Keys::load(&config, &db).await?;
    let hasher = PasswordHasher::new(config.argon2, config.password_hash_concurrency)?;
    let jwt = JwtKeys::new(&keys.jwt, &config.jwt_issuer, &config.jwt_audience, config.access_token_ttl_secs);
    let login_limiter = Arc::new(LoginLimiter::new(config.login_ip_per_minute, config.login_account_per_minute));
    let queue = Queue::connect(&config).await?;
    let bus = EventBus::connect(&config).await?;
    let mailer = parley_shared::mail::Mailer::from_config(&config)?;
    let templates = Arc::new(parley_shared::mail::Templates::new()?);
    Ok(AppState {
        db,
        hasher,
        jwt,
        keys: Arc::new(keys),
        login_limiter,
        api_key_limiter: Arc::new(ApiKeyLimiter::new(config.api_key_rpm)),
        queue,
        bus,
        mailer,
        templates,
        media: Arc::new(parley_shared::media::LocalMediaStore::new(&config.media_dir)),
        llm: parley_shared::llm::LlmClient::new(
            Duration::from_secs(config.llm_stall_secs),
            parley_shared::llm::HostPolicy { allow_private: config.llm_allow_private_hosts },
        ),
        worker_health: Arc::default(),
        config: Arc::new(config),
    })
}

/// Creates the admin named by `PARLEY_ADMIN_EMAIL`/`PARLEY_ADMIN_PASSWORD` when no admin exists.
async fn bootstrap_admin(state: &AppState) -> anyhow::Result<()> {
    let (Some(email), Some(password)) = (&state.config.admin_email, &state.config.admin_password) else {
        return Ok(());
    };
    if users::any_admin(&state.db.pool).await? {
        return Ok(());
    }
    let email_parsed = Email::parse(email).map_err(|e| anyhow::anyhow!("PARLEY_ADMIN_EMAIL {e}"))?;
    if let Some(user) = users::by_email(&state.db.pool, &email_parsed).await? {
        // Whoever registered this address first must not become admin by it: only an
        // account whose password is the configured one is promoted.
        if !state.hasher.verify(password.expose_secret(), &user.password_hash).await?.valid {
            tracing::error!(user.id = %user.id, "PARLEY_ADMIN_EMAIL names an existing account with another password; not promoting it");
            return Ok(());
        }
    }
    match create_admin(state, email, password.expose_secret()).await {
        // Another node created it at the same moment.
        Err(e)
            if matches!(
                e.downcast_ref::<parley_shared::StoreError>(),
                Some(parley_shared::StoreError::Conflict { .. })
            ) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Creates an admin account, or grants admin rights to an existing account with that email.
pub async fn create_admin(state: &AppState, email: &str, password: &str) -> anyhow::Result<()> {
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("admin email {e}"))?;
    if let Some(user) = users::by_email(&state.db.pool, &email).await? {
        users::set_admin(&state.db.writer, user.id, true).await?;
        tracing::info!(user.id = %user.id, "existing account granted admin rights");
        return Ok(());
    }
    let password = Password::parse(password).map_err(|e| anyhow::anyhow!("admin password {e}"))?;
    let hash = state.hasher.hash(password.expose()).await?;
    let user = users::create(
        &state.db.pool,
        users::NewUser { email: &email, username: None, display_name: None, password_hash: &hash, is_admin: true },
    )
    .await?;
    tracing::info!(user.id = %user.id, email = %email.masked(), "admin account created");
    Ok(())
}

pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
    tracing::info!("shutting down");
}
