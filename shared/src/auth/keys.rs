//! Sub-keys derived from the master secret, one per purpose.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Keys for signing and deriving tokens. Derived, so one master secret serves every purpose
/// and rotating it invalidates everything at once.
#[derive(Clone)]
pub struct Keys {
    pub jwt: Vec<u8>,
    pub refresh: Vec<u8>,
    pub encryption: [u8; 32],
    /// Keys the hashes of MFA recovery codes (short codes: a plain hash of a leaked table
    /// could be searched).
    pub mfa: Vec<u8>,
}

impl Keys {
    pub fn derive(master: &[u8]) -> Self {
        let mut encryption = [0u8; 32];
        encryption.copy_from_slice(&hmac(master, b"parley encryption v1"));
        Self {
            jwt: hmac(master, b"parley jwt v1").to_vec(),
            refresh: hmac(master, b"parley refresh v1").to_vec(),
            encryption,
            mfa: hmac(master, b"parley mfa v1").to_vec(),
        }
    }
}

impl Keys {
    /// The keys from `PARLEY_SECRET_KEY`, or from a secret generated once and kept in the
    /// database (so every process of one deployment derives the same keys).
    pub async fn load(config: &crate::Config, db: &crate::Db) -> anyhow::Result<Self> {
        use secrecy::ExposeSecret;
        let master = match &config.secret_key {
            Some(key) => key.expose_secret().to_owned(),
            None => {
                tracing::warn!("PARLEY_SECRET_KEY is not set; using a generated key kept in the database");
                crate::store::secrets::get_or_create(&db.writer, "master_key", super::random_token).await?
            }
        };
        Ok(Self::derive(master.as_bytes()))
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

pub fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}
