//! Email: handlebars templates compiled into the binary (from `email_templates/`), and the
//! mailer that sends what they render as multipart/alternative (text + HTML) messages
//! through SMTP (production), `.eml` files (development, the embedded default) or memory
//! (tests).

mod memory;
mod transports;
mod templates;

pub use memory::{MemoryMailer, SentEmail};
pub use templates::{RenderedEmail, TemplateName, Templates};
pub use transports::{FileMailer, SmtpMailer};

use crate::config::Config;
use anyhow::Context;
use lettre::Message;
use lettre::message::{Mailbox, MultiPart};

/// Where email goes. Cheap to clone (the SMTP pool and the memory store are shared).
#[derive(Clone, Debug)]
pub enum Mailer {
    /// An SMTP relay (`PARLEY_SMTP_*`).
    Smtp(SmtpMailer),
    /// One `<uuid>.eml` file per message in `PARLEY_EMAIL_DIR`.
    File(FileMailer),
    /// Kept in memory for tests to read.
    Memory(MemoryMailer),
}

impl Mailer {
    /// SMTP when `config.smtp` is set, else `.eml` files in `config.email_dir` (created if
    /// missing). Senders use `config.email_from`.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let from = parse_from(&config.email_from)?;
        match &config.smtp {
            Some(smtp) => Ok(Mailer::Smtp(SmtpMailer::new(smtp, from)?)),
            None => Ok(Mailer::File(FileMailer::new(&config.email_dir, from)?)),
        }
    }

    /// A memory mailer sending from `Parley <no-reply@parley.local>`.
    pub fn memory() -> Self {
        Mailer::Memory(MemoryMailer::new(Mailbox::new(
            Some("Parley".into()),
            "no-reply@parley.local".parse().expect("a valid address"),
        )))
    }

    /// What a memory mailer has sent, oldest first (always empty for other transports).
    pub fn sent(&self) -> Vec<SentEmail> {
        match self {
            Mailer::Memory(memory) => memory.sent(),
            Mailer::Smtp(_) | Mailer::File(_) => Vec::new(),
        }
    }

    /// `smtp`, `file` or `memory`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Mailer::Smtp(_) => "smtp",
            Mailer::File(_) => "file",
            Mailer::Memory(_) => "memory",
        }
    }

    fn from(&self) -> &Mailbox {
        match self {
            Mailer::Smtp(m) => &m.from,
            Mailer::File(m) => &m.from,
            Mailer::Memory(m) => &m.from,
        }
    }

    /// Sends `email` to `to` as multipart/alternative (text, then HTML) and returns the
    /// Message-ID it was sent with (`<uuid@sender-domain>`), for the caller to record.
    ///
    /// Errors never contain the full recipient address. A refusal by the SMTP server is
    /// a [`DeliveryError`] (downcast it to tell permanent refusals from transient ones).
    pub async fn send(&self, to: &str, email: &RenderedEmail) -> anyhow::Result<String> {
        let recipient: Mailbox =
            to.parse().map_err(|_| anyhow::anyhow!("recipient {} is not a valid address", mask_address(to)))?;
        let message_id = format!("<{}@{}>", uuid::Uuid::new_v4(), self.from().email.domain());
        let message = Message::builder()
            .from(self.from().clone())
            .to(recipient)
            .subject(email.subject.as_str())
            .message_id(Some(message_id.clone()))
            .multipart(MultiPart::alternative_plain_html(email.text.clone(), email.html.clone()))
            .context("building the email")?;
        match self {
            Mailer::Smtp(smtp) => smtp.send(message).await?,
            Mailer::File(file) => file.send(message).await?,
            Mailer::Memory(memory) => memory.record(to, email, &message_id),
        }
        tracing::info!(
            email.to = %mask_address(to),
            email.message_id = %message_id,
            email.transport = self.kind(),
            "email sent"
        );
        Ok(message_id)
    }
}

/// A message the transport did not accept.
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub struct DeliveryError {
    /// The server refused for good (5xx): retrying will not help.
    pub permanent: bool,
    /// What went wrong, with any email address masked.
    pub detail: String,
}

fn parse_from(raw: &str) -> anyhow::Result<Mailbox> {
    raw.parse().map_err(|e| anyhow::anyhow!("PARLEY_EMAIL_FROM is not a valid mailbox ({e})"))
}

/// A form of an address safe for logs: `j***@example.com` (`***` without an `@`).
pub fn mask_address(address: &str) -> String {
    let address = address.trim().trim_start_matches('<').trim_end_matches('>');
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            // "Ann <ann@x.test>" masks the display name along with the local part.
            let local = local.rsplit(['<', ' ']).next().unwrap_or(local);
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

/// `text` with every address-like word masked, for error messages that may quote one
/// (SMTP replies such as `550 <ann@x.test>: no such user`).
pub(crate) fn mask_addresses_in(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            if !word.contains('@') {
                return word.to_owned();
            }
            let start = word.find(|c: char| c.is_alphanumeric()).unwrap_or(0);
            let end = word.char_indices().rev().find(|(_, c)| c.is_alphanumeric()).map_or(0, |(i, c)| i + c.len_utf8());
            if start >= end {
                return word.to_owned();
            }
            format!("{}{}{}", &word[..start], mask_address(&word[start..end]), &word[end..])
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests;
