//! Passwords: 8 to 128 characters, no composition rules, taken exactly as typed, and not one
//! of the ~20,000 most common passwords (Django's list, shipped in `shared/data`).

use super::ParseError;
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashSet;
use std::io::Read;
use std::sync::LazyLock;

pub const MIN_CHARS: usize = 8;
pub const MAX_CHARS: usize = 128;

static COMMON: LazyLock<HashSet<String>> = LazyLock::new(|| {
    let gz = include_bytes!("../../data/common-passwords.txt.gz");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_string(&mut text).expect("the bundled password list is valid gzip");
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect()
});

/// How many passwords the bundled common-password list holds.
#[cfg(test)]
pub fn common_list_len() -> usize {
    COMMON.len()
}

/// A password that passed the policy. Never printed.
#[derive(Debug)]
pub struct Password(SecretString);

impl Password {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let chars = raw.chars().count();
        if chars < MIN_CHARS {
            return Err(ParseError::new(format!("must be at least {MIN_CHARS} characters")));
        }
        if chars > MAX_CHARS {
            return Err(ParseError::new(format!("must be at most {MAX_CHARS} characters")));
        }
        // `\x1c`..`\x1f` count as whitespace too, as in the documented pattern's `\S`.
        if raw.chars().all(|c| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)) {
            return Err(ParseError::new("must not be only whitespace"));
        }
        if COMMON.contains(&raw.to_lowercase()) {
            return Err(ParseError::new("is too common; choose a less guessable password"));
        }
        Ok(Self(SecretString::from(raw.to_owned())))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_password_of_only_whitespace() {
        assert!(Password::parse("          ").is_err());
        assert!(Password::parse("\t\n\u{a0}        ").is_err());
        assert!(Password::parse("  a long one with spaces  ").is_ok());
    }

    #[test]
    fn the_common_list_has_at_least_ten_thousand_entries() {
        assert!(common_list_len() >= 10_000, "{}", common_list_len());
    }

    #[test]
    fn refuses_common_passwords_in_any_case() {
        assert!(Password::parse("password123").is_err());
        assert!(Password::parse("PassWord123").is_err());
        assert!(Password::parse("qwertyuiop").is_err());
    }

    #[test]
    fn enforces_length_in_characters_not_bytes() {
        assert!(Password::parse("short1!").is_err());
        assert!(Password::parse("ünïcødé✓").is_ok());
        assert!(Password::parse(&"ж".repeat(128)).is_ok());
        assert!(Password::parse(&"ж".repeat(129)).is_err());
    }

    #[test]
    fn keeps_the_password_exactly_as_typed() {
        let p = Password::parse("  spaced out words  ").unwrap();
        assert_eq!(p.expose(), "  spaced out words  ");
    }

    #[test]
    fn has_no_composition_rules() {
        assert!(Password::parse("correct horse battery staple").is_ok());
        assert!(Password::parse("zyxwvutsrqponm").is_ok());
    }
}
