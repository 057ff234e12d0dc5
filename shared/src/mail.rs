//! Email: handlebars templates compiled into the binary (from `email_templates/`), and the
//! transports: SMTP (production), `.eml` files (the embedded default) and memory (tests).

use crate::config::{Config, SmtpTls};
use anyhow::Context;
use handlebars::Handlebars;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The emails Parley sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateName {
    VerifyEmail,
    PasswordReset,
    PasswordChanged,
    RegistrationAttempt,
    MfaEnabled,
    MfaDisabled,
    MfaRemovedByAdmin,
    RecoveryCodesRegenerated,
    RecoveryCodeUsed,
}

impl TemplateName {
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateName::VerifyEmail => "verify_email",
            TemplateName::PasswordReset => "password_reset",
            TemplateName::PasswordChanged => "password_changed",
            TemplateName::RegistrationAttempt => "registration_attempt",
            TemplateName::MfaEnabled => "mfa_enabled",
            TemplateName::MfaDisabled => "mfa_disabled",
            TemplateName::MfaRemovedByAdmin => "mfa_removed_by_admin",
            TemplateName::RecoveryCodesRegenerated => "recovery_codes_regenerated",
            TemplateName::RecoveryCodeUsed => "recovery_code_used",
        }
    }
}

macro_rules! template_files {
    ($($name:literal),*) => {
        [$(
            (concat!($name, "/subject.txt"), include_str!(concat!("../../email_templates/", $name, "/subject.txt.hbs"))),
            (concat!($name, "/body.txt"), include_str!(concat!("../../email_templates/", $name, "/body.txt.hbs"))),
            (concat!($name, "/body.html"), include_str!(concat!("../../email_templates/", $name, "/body.html.hbs"))),
        )*]
    };
}

/// A rendered email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The compiled templates: HTML parts escape what they interpolate, text parts do not.
#[derive(Debug)]
pub struct Templates {
    html: Handlebars<'static>,
    text: Handlebars<'static>,
}

impl Templates {
    pub fn new() -> anyhow::Result<Self> {
        let mut html = Handlebars::new();
        let mut text = Handlebars::new();
        text.register_escape_fn(handlebars::no_escape);
        for hb in [&mut html, &mut text] {
            hb.set_strict_mode(true);
            hb.register_partial("layouts/base.html", include_str!("../../email_templates/layouts/base.html.hbs"))?;
            hb.register_partial("layouts/base.txt", include_str!("../../email_templates/layouts/base.txt.hbs"))?;
        }
        for (name, source) in template_files!(
            "verify_email",
            "password_reset",
            "password_changed",
            "registration_attempt",
            "mfa_enabled",
            "mfa_disabled",
            "mfa_removed_by_admin",
            "recovery_codes_regenerated",
            "recovery_code_used"
        ) {
            let target = if name.ends_with(".html") { &mut html } else { &mut text };
            target.register_template_string(name, source).with_context(|| format!("template {name}"))?;
        }
        Ok(Self { html, text })
    }

    /// Renders `name` with `ctx` (`display_name`, `link`, `expires_in`; `app_name` is added).
    pub fn render(&self, name: TemplateName, ctx: &Value) -> anyhow::Result<RenderedEmail> {
        let mut ctx = ctx.clone();
        if let Some(map) = ctx.as_object_mut() {
            map.entry("app_name").or_insert_with(|| Value::from("Parley"));
            map.entry("display_name").or_insert(Value::from(""));
            map.entry("expires_in").or_insert(Value::from(""));
        }
        let n = name.as_str();
        Ok(RenderedEmail {
            subject: self.text.render(&format!("{n}/subject.txt"), &ctx)?.trim().to_owned(),
            text: self.text.render(&format!("{n}/body.txt"), &ctx)?,
            html: self.html.render(&format!("{n}/body.html"), &ctx)?,
        })
    }
}

/// A delivery that cannot succeed on a retry (the recipient is refused or malformed).
#[derive(Debug, thiserror::Error)]
#[error("permanent delivery failure: {0}")]
pub struct PermanentMailError(pub String);

/// A message the memory transport kept.
#[derive(Debug, Clone)]
pub struct SentEmail {
    pub to: String,
    pub email: RenderedEmail,
    pub message_id: String,
}

/// Where email goes.
#[derive(Clone)]
pub enum Mailer {
    Smtp { transport: AsyncSmtpTransport<Tokio1Executor>, from: Mailbox },
    File { transport: AsyncFileTransport<Tokio1Executor>, from: Mailbox },
    Memory { sent: Arc<Mutex<Vec<SentEmail>>>, from: Mailbox },
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mailer::Smtp { .. } => "Mailer::Smtp",
            Mailer::File { .. } => "Mailer::File",
            Mailer::Memory { .. } => "Mailer::Memory",
        })
    }
}

impl Mailer {
    /// SMTP when `PARLEY_SMTP_HOST` is set, else `.eml` files in `PARLEY_EMAIL_DIR`.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let from: Mailbox = config.email_from.parse().context("PARLEY_EMAIL_FROM is not a valid address")?;
        match &config.smtp {
            Some(smtp) => {
                let builder = match smtp.tls {
                    SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host),
                    SmtpTls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)?,
                    SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host)?,
                };
                let mut builder = builder.port(smtp.port).timeout(Some(Duration::from_secs(20)));
                if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
                    builder = builder.credentials(Credentials::new(user.clone(), password.expose_secret().to_owned()));
                }
                Ok(Mailer::Smtp { transport: builder.build(), from })
            }
            None => {
                std::fs::create_dir_all(&config.email_dir)
                    .with_context(|| format!("creating PARLEY_EMAIL_DIR {}", config.email_dir.display()))?;
                Ok(Mailer::File { transport: AsyncFileTransport::new(&config.email_dir), from })
            }
        }
    }

    /// A mailer that keeps messages in memory.
    pub fn memory() -> Self {
        Mailer::Memory { sent: Arc::default(), from: "Parley <no-reply@parley.local>".parse().expect("valid") }
    }

    /// What the memory mailer kept (empty for other transports).
    pub fn sent(&self) -> Vec<SentEmail> {
        match self {
            Mailer::Memory { sent, .. } => sent.lock().expect("mail lock").clone(),
            _ => Vec::new(),
        }
    }

    /// Sends a multipart (text + HTML) message; returns its Message-ID.
    pub async fn send(&self, to: &str, email: &RenderedEmail) -> anyhow::Result<String> {
        let from = match self {
            Mailer::Smtp { from, .. } | Mailer::File { from, .. } | Mailer::Memory { from, .. } => from.clone(),
        };
        let message_id = format!("<{}@parley>", uuid::Uuid::new_v4());
        let message = Message::builder()
            .from(from)
            .to(to.parse().map_err(|_| PermanentMailError("the recipient is not a valid address".into()))?)
            .subject(&email.subject)
            .message_id(Some(message_id.clone()))
            .multipart(MultiPart::alternative_plain_html(email.text.clone(), email.html.clone()))?;
        match self {
            Mailer::Smtp { transport, .. } => match transport.send(message).await {
                Ok(_) => {}
                // A 5xx answer: the server refuses this message for good.
                Err(e) if e.is_permanent() => {
                    return Err(PermanentMailError(crate::domain::mask_emails(&e.to_string())).into());
                }
                Err(e) => return Err(anyhow::Error::new(e).context("sending through SMTP")),
            },
            Mailer::File { transport, .. } => {
                transport.send(message).await.context("writing the email file")?;
            }
            Mailer::Memory { sent, .. } => {
                sent.lock().expect("mail lock").push(SentEmail {
                    to: to.to_owned(),
                    email: email.clone(),
                    message_id: message_id.clone(),
                });
            }
        }
        Ok(message_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_template_renders_its_link_in_both_parts() {
        let templates = Templates::new().unwrap();
        for name in [
            TemplateName::VerifyEmail,
            TemplateName::PasswordReset,
            TemplateName::PasswordChanged,
            TemplateName::MfaEnabled,
            TemplateName::MfaDisabled,
            TemplateName::MfaRemovedByAdmin,
            TemplateName::RecoveryCodesRegenerated,
            TemplateName::RecoveryCodeUsed,
        ] {
            let email = templates
                .render(
                    name,
                    &json!({"display_name": "Ann", "link": "https://x.test/a?t=1&u=2", "expires_in": "24 hours"}),
                )
                .unwrap();
            assert!(!email.subject.is_empty() && !email.subject.contains('\n'));
            assert!(email.text.contains("https://x.test/a?t=1&u=2"), "{}", email.text);
            assert!(email.html.contains("https://x.test/a?t") && email.html.contains("&amp;u"), "{}", email.html);
            assert!(email.text.contains("Hello Ann,") && email.html.contains("Hello Ann,"));
        }
    }

    #[test]
    fn user_text_is_escaped_in_html_and_verbatim_in_text() {
        let templates = Templates::new().unwrap();
        let ctx =
            json!({"display_name": "<script>alert(1)</script>", "link": "https://x.test", "expires_in": "1 hour"});
        let email = templates.render(TemplateName::VerifyEmail, &ctx).unwrap();
        assert!(!email.html.contains("<script>"));
        assert!(email.html.contains("&lt;script&gt;"));
        assert!(email.text.contains("<script>alert(1)</script>"));
    }

    #[test]
    fn an_empty_display_name_gets_a_plain_greeting() {
        let email = Templates::new().unwrap().render(TemplateName::PasswordChanged, &json!({"link": "l"})).unwrap();
        assert!(email.text.starts_with("Hello,"));
    }

    #[tokio::test]
    async fn the_file_transport_writes_a_multipart_eml() {
        let dir = std::env::temp_dir().join(format!("parley-mail-{}", uuid::Uuid::new_v4()));
        let mut config = Config::from_vars(Default::default()).unwrap();
        config.email_dir = dir.clone();
        let mailer = Mailer::from_config(&config).unwrap();
        let email = Templates::new()
            .unwrap()
            .render(TemplateName::PasswordReset, &json!({"link": "https://x.test/r"}))
            .unwrap();
        let id = mailer.send("bob@example.com", &email).await.unwrap();
        let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(files.len(), 1);
        let raw = std::fs::read_to_string(&files[0]).unwrap();
        assert!(raw.contains("text/plain") && raw.contains("text/html") && raw.contains(&id));
        assert!(raw.contains("To: bob@example.com"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
