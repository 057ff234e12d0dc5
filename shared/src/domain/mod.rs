//! Domain types, parsed at the edge ("parse, don't validate").

mod email;
mod field_errors;
mod password;
mod profile;

pub use email::{Email, mask_emails};
pub use field_errors::FieldErrors;
pub use password::Password;
pub use profile::{Bio, DisplayName, Username};

/// At most `max` characters, cut at a word boundary when there is one in the second half.
pub fn truncate_words(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let cut: String = s.chars().take(max).collect();
    match cut.rfind(' ') {
        Some(i) if cut[..i].chars().count() > max / 2 => cut[..i].trim_end().to_owned(),
        _ => cut,
    }
}

/// Why a value was refused; shown to the client next to the field's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    pub(crate) fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}
