//! Per-field validation messages, collected so that a client learns every problem at once.

use super::ParseError;
use std::collections::BTreeMap;

/// Field name → messages.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldErrors(BTreeMap<String, Vec<String>>);

impl FieldErrors {
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.entry(field.to_owned()).or_default().push(message.into());
    }

    /// The parsed value, or `None` with the parse error recorded under `field`.
    pub fn check<T>(&mut self, field: &str, parsed: Result<T, ParseError>) -> Option<T> {
        parsed.map_err(|e| self.add(field, e.0)).ok()
    }

    /// `Err(self)` if any message was collected.
    pub fn finish(self) -> Result<(), FieldErrors> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }

    /// One line for all of them: the single problem, or a summary.
    pub fn summary(&self) -> String {
        match self.0.keys().next() {
            Some(first) if self.0.len() == 1 => format!("{first} {}", self.0[first][0]),
            _ => "some fields are invalid".to_owned(),
        }
    }

    pub fn into_map(self) -> BTreeMap<String, Vec<String>> {
        self.0
    }
}

impl std::fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary())
    }
}

impl std::error::Error for FieldErrors {}
