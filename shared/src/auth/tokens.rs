//! Opaque tokens (refresh, email verification, password reset): 256 random bits, URL-safe,
//! stored only as a SHA-256 hash.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A fresh random token (256 bits).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The form a token is stored and looked up in.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The refresh token that replaces `token` on rotation. Derived with a server key, so a
/// client that presents a just-rotated token again (a second tab) can be given the same
/// successor without the server keeping any token in clear.
pub fn successor_token(key: &[u8], token: &str) -> String {
    URL_SAFE_NO_PAD.encode(super::keys::hmac(key, token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tokens_carry_256_bits_and_differ() {
        let a = random_token();
        let b = random_token();
        assert_ne!(a, b);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
    }

    #[test]
    fn successors_are_deterministic_per_key() {
        let t = random_token();
        assert_eq!(successor_token(b"k1", &t), successor_token(b"k1", &t));
        assert_ne!(successor_token(b"k1", &t), successor_token(b"k2", &t));
        assert_ne!(successor_token(b"k1", &t), t);
    }

    #[test]
    fn hashes_are_hex_sha256() {
        assert_eq!(hash_token("abc").len(), 64);
        assert_ne!(hash_token("abc"), "abc");
    }
}
