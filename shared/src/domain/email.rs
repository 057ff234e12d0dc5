//! Email addresses.

use super::ParseError;
use std::fmt;

/// A syntactically plausible email address, trimmed. Uniqueness is case-insensitive
/// ([`Email::normalized`]); the address is kept as typed for sending.
#[derive(Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(ParseError::new("is required"));
        }
        if s.chars().count() > 254 {
            return Err(ParseError::new("must be at most 254 characters"));
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return Err(ParseError::new("is not a valid address"));
        };
        let domain_ok = !domain.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '.');
        let local_ok = !local.is_empty()
            && local.chars().count() <= 64
            && !local.chars().any(|c| c.is_whitespace() || c.is_control() || c == '@' || c == '<' || c == '>');
        if !domain_ok || !local_ok {
            return Err(ParseError::new("is not a valid address"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key for uniqueness and look-ups.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }

    /// A form safe for logs: `j***@example.com`.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }
}

/// Masks any address-like string for logging.
pub fn mask(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

/// `text` with every address-like word masked (for logging errors that may quote one).
pub fn mask_emails(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            if word.contains('@') {
                let inner = word.trim_matches(|c: char| !c.is_alphanumeric() && c != '@' && c != '.');
                word.replace(inner, &mask(inner))
            } else {
                word.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({})", self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_addresses_and_trims_them() {
        assert_eq!(Email::parse(" Ann@Example.com ").unwrap().as_str(), "Ann@Example.com");
        assert_eq!(Email::parse("Ann@Example.com").unwrap().normalized(), "ann@example.com");
        assert!(Email::parse("a.b+tag@sub.example.co.uk").is_ok());
    }

    #[test]
    fn refuses_what_is_not_an_address() {
        for bad in ["", "plain", "@example.com", "a@", "a@b", "a b@example.com", "a@.com", "a@example..com"] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn addresses_inside_error_text_are_masked() {
        assert_eq!(mask_emails("550 <bob.smith@example.com>: no such user"), "550 <b***@example.com>: no such user");
        assert_eq!(mask_emails("no address here"), "no address here");
    }

    #[test]
    fn debug_output_masks_the_local_part() {
        let email = Email::parse("jane.doe@example.com").unwrap();
        assert_eq!(format!("{email:?}"), "Email(j***@example.com)");
    }
}
