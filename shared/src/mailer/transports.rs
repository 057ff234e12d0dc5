//! The two real transports: an SMTP relay through lettre's pooled async client, and
//! lettre's file transport writing `<uuid>.eml` files.

use super::{DeliveryError, mask_addresses_in};
use crate::config::{SmtpConfig, SmtpTls};
use anyhow::Context;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one SMTP command may take before the send fails (and the job retries).
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends through an SMTP relay. `Debug` shows where, never the credentials.
#[derive(Clone)]
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    pub(super) from: Mailbox,
    host: String,
    port: u16,
    tls: SmtpTls,
    authenticated: bool,
}

impl SmtpMailer {
    /// A pooled client for `config`; connects lazily, at the first send.
    pub fn new(config: &SmtpConfig, from: Mailbox) -> anyhow::Result<Self> {
        let builder = match config.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host),
            SmtpTls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host)
                .with_context(|| format!("PARLEY_SMTP_HOST {}: cannot set up STARTTLS", config.host))?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host)
                .with_context(|| format!("PARLEY_SMTP_HOST {}: cannot set up TLS", config.host))?,
        };
        let mut builder = builder.port(config.port).timeout(Some(SMTP_TIMEOUT));
        let authenticated = match (&config.username, &config.password) {
            (Some(user), Some(password)) => {
                builder = builder.credentials(Credentials::new(user.clone(), password.expose_secret().to_owned()));
                true
            }
            (None, None) => false,
            (Some(_), None) => anyhow::bail!("PARLEY_SMTP_USERNAME is set but PARLEY_SMTP_PASSWORD is not"),
            (None, Some(_)) => anyhow::bail!("PARLEY_SMTP_PASSWORD is set but PARLEY_SMTP_USERNAME is not"),
        };
        Ok(Self {
            transport: builder.build(),
            from,
            host: config.host.clone(),
            port: config.port,
            tls: config.tls,
            authenticated,
        })
    }

    pub(super) async fn send(&self, message: Message) -> anyhow::Result<()> {
        self.transport.send(message).await.map(drop).map_err(|e| {
            DeliveryError {
                permanent: e.is_permanent(),
                detail: format!(
                    "SMTP {}:{} did not take the email: {}",
                    self.host,
                    self.port,
                    mask_addresses_in(&error_chain(&e))
                ),
            }
            .into()
        })
    }
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("authenticated", &self.authenticated)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

/// Writes each message to `<dir>/<uuid>.eml`, openable in any mail client.
#[derive(Clone)]
pub struct FileMailer {
    transport: AsyncFileTransport<Tokio1Executor>,
    pub(super) from: Mailbox,
    dir: PathBuf,
}

impl FileMailer {
    /// Writes into `dir`, creating it if missing.
    pub fn new(dir: &Path, from: Mailbox) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating PARLEY_EMAIL_DIR {}", dir.display()))?;
        Ok(Self { transport: AsyncFileTransport::new(dir), from, dir: dir.to_owned() })
    }

    /// The directory the `.eml` files go to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) async fn send(&self, message: Message) -> anyhow::Result<()> {
        let id = self.transport.send(message).await.map_err(|e| DeliveryError {
            permanent: false,
            detail: format!("cannot write the email into {}: {}", self.dir.display(), error_chain(&e)),
        })?;
        tracing::debug!(email.file = %self.dir.join(format!("{id}.eml")).display(), "email written");
        Ok(())
    }
}

impl std::fmt::Debug for FileMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileMailer")
            .field("dir", &self.dir)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

/// `error: cause: cause`, since lettre's `Display` leaves out the underlying I/O error.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}
