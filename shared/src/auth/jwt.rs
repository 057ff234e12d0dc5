//! Access tokens: HS256 JWTs with a fixed algorithm, issuer, audience and a type claim.

use crate::ids::{SessionId, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};

pub const TOKEN_TYPE_ACCESS: &str = "access";

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: UserId,
    pub sid: SessionId,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
    pub typ: String,
    /// How the session signed in (RFC 8176 names: `pwd`, `otp`).
    #[serde(default)]
    pub amr: Vec<String>,
}

/// Why a token was refused (logged at debug; the client always sees the same 401).
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("token rejected: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("token has type {0:?}, not an access token")]
    WrongType(String),
}

/// Signs and checks access tokens.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl_secs: i64,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

impl JwtKeys {
    pub fn new(secret: &[u8], issuer: &str, audience: &str, ttl_secs: i64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl_secs,
        }
    }

    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    /// A new access token for a session that signed in with the methods `amr`.
    pub fn issue(&self, user: UserId, session: SessionId, amr: &[&str]) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        let claims = AccessClaims {
            sub: user,
            sid: session,
            iat: now,
            exp: now + self.ttl_secs,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            typ: TOKEN_TYPE_ACCESS.to_owned(),
            amr: amr.iter().map(|m| (*m).to_owned()).collect(),
        };
        Ok(encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?)
    }

    /// Checks signature, algorithm, expiry, issuer, audience and type.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, JwtError> {
        let data = decode::<AccessClaims>(token, &self.decoding, &self.validation)?;
        if data.claims.typ != TOKEN_TYPE_ACCESS {
            return Err(JwtError::WrongType(data.claims.typ));
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    fn keys() -> JwtKeys {
        JwtKeys::new(b"0123456789abcdef0123456789abcdef", "parley", "parley-api", 900)
    }

    fn forge(header: serde_json::Value, claims: serde_json::Value, secret: &[u8]) -> String {
        let head = B64.encode(header.to_string());
        let body = B64.encode(claims.to_string());
        let sig = super::super::keys::hmac(secret, format!("{head}.{body}").as_bytes());
        format!("{head}.{body}.{}", B64.encode(sig))
    }

    fn claims(typ: &str, iss: &str, aud: &str, exp_offset: i64) -> serde_json::Value {
        let now = chrono::Utc::now().timestamp();
        serde_json::json!({
            "sub": UserId::new(), "sid": SessionId::new(), "iat": now, "exp": now + exp_offset,
            "iss": iss, "aud": aud, "typ": typ,
        })
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_fresh_token_verifies() {
        let k = keys();
        let (u, s) = (UserId::new(), SessionId::new());
        let c = k.verify(&k.issue(u, s, &["pwd", "otp"]).unwrap()).unwrap();
        assert_eq!((c.sub, c.sid), (u, s));
        assert_eq!(c.amr, ["pwd", "otp"]);
    }

    #[test]
    fn a_hand_made_token_with_the_right_key_verifies() {
        let t = forge(
            serde_json::json!({"alg": "HS256", "typ": "JWT"}),
            claims("access", "parley", "parley-api", 60),
            SECRET,
        );
        assert!(keys().verify(&t).is_ok());
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let c = claims("access", "parley", "parley-api", 60);
        let none = format!("{}.{}.", B64.encode(r#"{"alg":"none","typ":"JWT"}"#), B64.encode(c.to_string()));
        assert!(keys().verify(&none).is_err());
        let hs512 = forge(serde_json::json!({"alg": "HS512"}), c.clone(), SECRET);
        assert!(keys().verify(&hs512).is_err());
        let hs384 = forge(serde_json::json!({"alg": "HS384"}), c, SECRET);
        assert!(keys().verify(&hs384).is_err());
    }

    #[test]
    fn wrong_issuer_audience_expiry_or_signature_is_refused() {
        let h = serde_json::json!({"alg": "HS256"});
        assert!(keys().verify(&forge(h.clone(), claims("access", "evil", "parley-api", 60), SECRET)).is_err());
        assert!(keys().verify(&forge(h.clone(), claims("access", "parley", "other", 60), SECRET)).is_err());
        assert!(keys().verify(&forge(h.clone(), claims("access", "parley", "parley-api", -60), SECRET)).is_err());
        assert!(
            keys()
                .verify(&forge(
                    h.clone(),
                    claims("access", "parley", "parley-api", 60),
                    b"another-secret-another-secret!!"
                ))
                .is_err()
        );
        let good = keys().issue(UserId::new(), SessionId::new(), &["pwd"]).unwrap();
        let mut tampered = good.clone().into_bytes();
        let i = good.find('.').unwrap() + 3;
        tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
        assert!(keys().verify(&String::from_utf8(tampered).unwrap()).is_err());
    }

    #[test]
    fn other_token_types_are_refused_as_access_tokens() {
        let h = serde_json::json!({"alg": "HS256"});
        for typ in ["refresh", "email_verification", ""] {
            let t = forge(h.clone(), claims(typ, "parley", "parley-api", 60), SECRET);
            assert!(matches!(keys().verify(&t), Err(JwtError::WrongType(_))), "{typ}");
        }
    }
}
