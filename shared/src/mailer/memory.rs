//! The memory transport: tests read what would have been sent.

use super::RenderedEmail;
use lettre::message::Mailbox;
use std::sync::{Arc, Mutex};

/// A message the memory transport kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentEmail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub message_id: String,
}

/// Keeps every message; clones share the same list, so a test holding a clone of the
/// app's mailer sees what the app sent.
#[derive(Clone, Debug)]
pub struct MemoryMailer {
    pub(super) from: Mailbox,
    /// Every message sent, oldest first.
    pub sent: Arc<Mutex<Vec<SentEmail>>>,
}

impl MemoryMailer {
    pub fn new(from: Mailbox) -> Self {
        Self { from, sent: Arc::default() }
    }

    /// A copy of what was sent so far, oldest first.
    pub fn sent(&self) -> Vec<SentEmail> {
        self.sent.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub(super) fn record(&self, to: &str, email: &RenderedEmail, message_id: &str) {
        self.sent.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(SentEmail {
            to: to.to_owned(),
            subject: email.subject.clone(),
            text: email.text.clone(),
            html: email.html.clone(),
            message_id: message_id.to_owned(),
        });
    }
}
