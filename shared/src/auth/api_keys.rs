//! Personal API keys: `sk-parley-` and 256 random bits, shown once; only a SHA-256 hash is
//! stored (the key's entropy makes a slow hash unnecessary), with a short prefix to tell keys
//! apart in lists.

use super::tokens::{hash_token, random_token};
use serde::{Deserialize, Serialize};

/// What every key starts with.
pub const KEY_PREFIX: &str = "sk-parley-";
/// Characters of a key shown in lists: the prefix and four of the random part.
const SHOWN_CHARS: usize = KEY_PREFIX.len() + 4;

/// A freshly made key: the secret (answered once, never stored), its hash and its shown
/// prefix. `Debug` leaves the secret out.
pub struct GeneratedKey {
    pub secret: String,
    pub hash: String,
    pub prefix: String,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

/// A new key.
pub fn generate() -> GeneratedKey {
    let secret = format!("{KEY_PREFIX}{}", random_token());
    GeneratedKey { hash: hash_key(&secret), prefix: secret[..SHOWN_CHARS].to_owned(), secret }
}

/// The form a key is stored and looked up in.
pub fn hash_key(key: &str) -> String {
    hash_token(key)
}

/// Whether a bearer token is (shaped like) a personal API key.
pub fn is_api_key(token: &str) -> bool {
    token.starts_with(KEY_PREFIX) && token.len() > KEY_PREFIX.len()
}

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every `/v1` endpoint: chat completions and reads.
    Chat,
    /// The read-only `/v1` endpoints (`GET /v1/models`).
    Read,
}

impl Scope {
    pub const ALL: [Scope; 2] = [Scope::Chat, Scope::Read];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Chat => "chat",
            Scope::Read => "read",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A key's scopes, read from their stored text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scopes(pub Vec<Scope>);

impl TryFrom<String> for Scopes {
    type Error = crate::jobs::UnknownValue;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        scopes_from_text(&text).map(Scopes)
    }
}

/// Scopes as stored: space-separated names.
pub fn scopes_to_text(scopes: &[Scope]) -> String {
    Scope::ALL.iter().filter(|s| scopes.contains(s)).map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
}

/// Stored scopes; a name the code does not know is an error.
pub fn scopes_from_text(text: &str) -> Result<Vec<Scope>, crate::jobs::UnknownValue> {
    text.split_whitespace()
        .map(|s| {
            Scope::parse(s).ok_or_else(|| crate::jobs::UnknownValue { what: "API key scope", value: s.to_owned() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn keys_carry_256_random_bits_behind_their_prefix_and_only_hash_to_what_is_stored() {
        let key = generate();
        let random = key.secret.strip_prefix(KEY_PREFIX).expect("the prefix");
        assert_eq!(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(random).unwrap().len(), 32);
        assert!(key.secret.starts_with(&key.prefix) && key.prefix.len() == KEY_PREFIX.len() + 4);
        assert_eq!(key.hash, hash_key(&key.secret));
        assert_eq!(key.hash.len(), 64);
        assert!(!key.hash.contains(random));
        assert_ne!(generate().secret, key.secret);
        assert!(!format!("{key:?}").contains(random));
        assert!(is_api_key(&key.secret));
        assert!(!is_api_key("eyJhbGciOi.x.y") && !is_api_key(KEY_PREFIX));
    }

    #[test]
    fn scopes_round_trip_through_their_stored_text() {
        assert_eq!(scopes_to_text(&[Scope::Read, Scope::Chat]), "chat read");
        assert_eq!(scopes_from_text("chat read").unwrap(), [Scope::Chat, Scope::Read]);
        assert_eq!(scopes_from_text("").unwrap(), []);
        assert!(scopes_from_text("chat admin").is_err());
    }
}
