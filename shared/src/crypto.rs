//! Authenticated encryption of secrets at rest (provider API keys): XChaCha20-Poly1305 with
//! a random nonce per value, stored as base64(nonce ‖ ciphertext).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

pub fn encrypt(key: &[u8; 32], plaintext: &str) -> anyhow::Result<String> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let mut nonce = [0u8; 24];
    rand::rng().fill_bytes(&mut nonce);
    let sealed =
        cipher.encrypt(&XNonce::from(nonce), plaintext.as_bytes()).map_err(|_| anyhow::anyhow!("encryption failed"))?;
    let mut out = nonce.to_vec();
    out.extend(sealed);
    Ok(STANDARD.encode(out))
}

/// Fails if the value was tampered with or sealed with another key.
pub fn decrypt(key: &[u8; 32], stored: &str) -> anyhow::Result<String> {
    let raw = STANDARD.decode(stored)?;
    anyhow::ensure!(raw.len() > 24, "sealed value too short");
    let (nonce, sealed) = raw.split_at(24);
    let nonce: [u8; 24] = nonce.try_into()?;
    let cipher = XChaCha20Poly1305::new(key.into());
    let plain = cipher
        .decrypt(&XNonce::from(nonce), sealed)
        .map_err(|_| anyhow::anyhow!("decryption failed: wrong key or tampered value"))?;
    Ok(String::from_utf8(plain)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_tampering_or_another_key() {
        let key = [7u8; 32];
        let sealed = encrypt(&key, "sk-secret").unwrap();
        assert!(!sealed.contains("sk-secret"));
        assert_ne!(sealed, encrypt(&key, "sk-secret").unwrap(), "nonces differ");
        assert_eq!(decrypt(&key, &sealed).unwrap(), "sk-secret");
        assert!(decrypt(&[8u8; 32], &sealed).is_err());
        let mut raw = STANDARD.decode(&sealed).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert!(decrypt(&key, &STANDARD.encode(raw)).is_err());
    }
}
