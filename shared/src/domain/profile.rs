//! Profile fields.

use super::ParseError;

/// 3 to 30 characters: letters, digits, `_`, `.`, `-`, taken exactly as sent. Unique
/// (case-insensitively).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let s = raw;
        let n = s.chars().count();
        if !(3..=30).contains(&n) {
            return Err(ParseError::new("must be 3 to 30 characters"));
        }
        if !s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
            return Err(ParseError::new("may contain only letters, digits, '_', '.' and '-'"));
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// At most 100 characters (as sent, before trimming), no control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        if raw.chars().count() > 100 {
            return Err(ParseError::new("must be at most 100 characters"));
        }
        super::check_line(raw)?;
        let s = raw.trim();
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// At most 1000 characters; line breaks and tabs, no other control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bio(String);

impl Bio {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        if raw.chars().count() > 1000 {
            return Err(ParseError::new("must be at most 1000 characters"));
        }
        super::check_text(raw)?;
        Ok(Self(raw.trim().to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_have_a_length_and_an_alphabet() {
        assert!(Username::parse("ann_b.c-d").is_ok());
        assert!(Username::parse("ab").is_err());
        assert!(Username::parse("has space").is_err());
        assert!(Username::parse(" ann ").is_err(), "taken exactly as sent");
        assert!(Username::parse(&"a".repeat(31)).is_err());
    }

    #[test]
    fn display_names_refuse_control_characters() {
        assert!(DisplayName::parse("Ann \u{7}").is_err());
        assert_eq!(DisplayName::parse(" Ann B ").unwrap().as_str(), "Ann B");
        assert!(Bio::parse("a\0b").is_err());
        assert!(Bio::parse("two\nlines\tand a tab").is_ok());
    }
}
