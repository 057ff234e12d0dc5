//! Domain types, parsed at the edge ("parse, don't validate").

mod email;
mod field_errors;
pub mod numbers;
mod password;
mod profile;

pub use email::{Email, mask_emails};
pub use field_errors::FieldErrors;
pub use password::Password;
pub use profile::{Bio, DisplayName, Username};

/// Text on one line (a name, a title, a tag, a model): no control characters at all.
pub fn check_line(text: &str) -> Result<(), ParseError> {
    if text.chars().any(char::is_control) {
        return Err(ParseError::new("must not contain control characters"));
    }
    Ok(())
}

/// Longer text (a message, a bio, a system prompt): line breaks and tabs, and no other
/// control characters.
pub fn check_text(text: &str) -> Result<(), ParseError> {
    if text.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(ParseError::new("must not contain control characters other than line breaks and tabs"));
    }
    Ok(())
}

/// The OpenAPI `pattern` of [`check_line`].
pub const LINE_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*$";
/// The OpenAPI `pattern` of [`check_text`].
pub const TEXT_PATTERN: &str = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$";

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_refuse_every_control_character_and_text_keeps_line_breaks_and_tabs() {
        for bad in ["a\0b", "a\u{7}", "a\u{1b}[31m", "a\u{85}", "a\nb", "a\tb"] {
            assert!(check_line(bad).is_err(), "{bad:?}");
        }
        assert!(check_line("Ann B. — résumé").is_ok());
        for bad in ["a\0b", "a\u{7}", "a\u{1b}[31m", "a\u{7f}"] {
            assert!(check_text(bad).is_err(), "{bad:?}");
        }
        assert!(check_text("line one\r\nline\ttwo").is_ok());
    }
}
