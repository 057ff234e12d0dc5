//! TOTP second factors (RFC 6238): secrets, codes, recovery codes and the enrolment QR code.
//! What is stored is in [`crate::store::mfa`]; replay refusal lives there too (each accepted
//! code's time step is kept, and a code is accepted only for a later step).

use crate::auth::{Keys, hmac};
use anyhow::Context;
use base64::Engine;
use rand::RngCore;
use totp_rs::{Algorithm, Builder, Secret, Totp};

/// Recovery codes given at confirmation and at each regeneration.
pub const RECOVERY_CODE_COUNT: usize = 10;
/// How long an `mfa_token` is accepted.
pub const CHALLENGE_TTL_SECS: i64 = 5 * 60;
/// A session this young may enrol a factor without giving the password again.
pub const RECENT_SIGN_IN_SECS: i64 = 10 * 60;

/// What a user needs to add the factor to an authenticator app.
#[derive(Debug, Clone)]
pub struct Enrolment {
    /// Base32, for typing in by hand.
    pub secret: String,
    pub otpauth_uri: String,
    /// An SVG QR code of the URI, as a `data:` URI.
    pub qr_code: String,
}

/// A new random secret (160 bits, as RFC 4226 recommends), base32.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    Secret::from(bytes).to_base32()
}

fn totp(secret_base32: &str, issuer: &str, account: &str) -> anyhow::Result<Totp> {
    let secret = Secret::try_from_base32(secret_base32).map_err(|e| anyhow::anyhow!("stored TOTP secret: {e}"))?;
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_skew(1)
        .with_secret(secret)
        .with_issuer(Some(issuer.replace(':', " ")))
        .with_account_name(account.replace(':', " "))
        .build()
        .map_err(|e| anyhow::anyhow!("building a TOTP: {e}"))
}

/// The URI and QR code for `secret`, labelled `issuer:account`.
pub fn enrolment(secret_base32: &str, issuer: &str, account: &str) -> anyhow::Result<Enrolment> {
    let otpauth_uri =
        totp(secret_base32, issuer, account)?.to_url().map_err(|e| anyhow::anyhow!("otpauth URI: {e}"))?;
    let svg = qrcode::QrCode::new(otpauth_uri.as_bytes())
        .context("encoding the QR code")?
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .build();
    let qr_code = format!("data:image/svg+xml;base64,{}", base64::engine::general_purpose::STANDARD.encode(svg));
    Ok(Enrolment { secret: secret_base32.to_owned(), otpauth_uri, qr_code })
}

/// The time step `code` is valid for at `unix_secs` (one step of skew either way), if any.
pub fn check_code(secret_base32: &str, code: &str, unix_secs: u64) -> anyhow::Result<Option<i64>> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let totp = totp(secret_base32, "Parley", "")?;
    Ok(totp.check(&code, unix_secs).and_then(|step| i64::try_from(step).ok()))
}

/// The code for `unix_secs` (for tests and tools).
pub fn code_at(secret_base32: &str, unix_secs: u64) -> anyhow::Result<String> {
    Ok(totp(secret_base32, "Parley", "")?.generate(unix_secs).to_string())
}

pub fn now_secs() -> u64 {
    u64::try_from(crate::time::now_ms() / 1000).unwrap_or_default()
}

/// Ten codes like `k7d2m-x9qpt` (50 bits each), in a set of letters and digits that are
/// hard to mistake for each other.
pub fn new_recovery_codes() -> Vec<String> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..RECOVERY_CODE_COUNT)
        .map(|_| {
            let chars: String = (0..10).map(|_| ALPHABET[(rng.next_u32() as usize) % ALPHABET.len()] as char).collect();
            format!("{}-{}", &chars[..5], &chars[5..])
        })
        .collect()
}

/// The stored form of a recovery code: keyed with the server's MFA key and the user, and
/// insensitive to case, spaces and dashes.
pub fn recovery_code_hash(keys: &Keys, user: crate::ids::UserId, code: &str) -> String {
    let normalized: String =
        code.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect();
    hex::encode(hmac(&keys.mfa, format!("{user}:{normalized}").as_bytes()))
}

/// Seals a secret for storage.
pub fn seal(keys: &Keys, secret_base32: &str) -> anyhow::Result<String> {
    crate::crypto::encrypt(&keys.encryption, secret_base32)
}

pub fn unseal(keys: &Keys, sealed: &str) -> anyhow::Result<String> {
    crate::crypto::decrypt(&keys.encryption, sealed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_valid_for_its_step_and_one_either_side_only() {
        let secret = new_secret();
        let t = 1_700_000_000u64;
        let code = code_at(&secret, t).unwrap();
        assert_eq!(check_code(&secret, &code, t).unwrap(), Some((t / 30) as i64));
        assert!(check_code(&secret, &code, t + 30).unwrap().is_some());
        assert!(check_code(&secret, &code, t + 90).unwrap().is_none());
        assert!(check_code(&secret, "12345", t).unwrap().is_none());
        assert!(check_code(&secret, "abcdef", t).unwrap().is_none());
        let spaced = format!("{} {}", &code[..3], &code[3..]);
        assert!(check_code(&secret, &spaced, t).unwrap().is_some());
    }

    #[test]
    fn the_enrolment_uri_names_the_issuer_and_account_and_the_qr_code_is_an_svg() {
        let secret = new_secret();
        let e = enrolment(&secret, "Parley", "ann@example.com").unwrap();
        assert!(e.otpauth_uri.starts_with("otpauth://totp/Parley:ann%40example.com?"), "{}", e.otpauth_uri);
        assert!(e.otpauth_uri.contains(&format!("secret={secret}")));
        assert!(e.otpauth_uri.contains("issuer=Parley"));
        let svg = e.qr_code.strip_prefix("data:image/svg+xml;base64,").unwrap();
        let svg = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(svg).unwrap()).unwrap();
        assert!(svg.contains("<svg"));
    }

    #[test]
    fn recovery_codes_are_distinct_and_their_hashes_are_per_user_and_forgiving() {
        let keys = Keys::derive(b"master");
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODE_COUNT);
        assert_eq!(codes.iter().collect::<std::collections::HashSet<_>>().len(), RECOVERY_CODE_COUNT);
        let (a, b) = (crate::ids::UserId::new(), crate::ids::UserId::new());
        let code = &codes[0];
        assert_eq!(
            recovery_code_hash(&keys, a, code),
            recovery_code_hash(&keys, a, &code.to_uppercase().replace('-', " "))
        );
        assert_ne!(recovery_code_hash(&keys, a, code), recovery_code_hash(&keys, b, code));
        assert!(!recovery_code_hash(&keys, a, code).contains(&code.replace('-', "")));
    }
}
