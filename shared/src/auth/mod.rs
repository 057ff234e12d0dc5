//! Authentication primitives: password hashing, access tokens (JWT), opaque tokens and
//! personal API keys.

pub mod api_keys;
mod jwt;
mod keys;
mod password;
mod tokens;

pub use jwt::{AccessClaims, JwtError, JwtKeys, TOKEN_TYPE_ACCESS};
pub use keys::{Keys, hmac};
pub use password::{PasswordHasher, Verification};
pub use tokens::{hash_token, random_token, successor_token};
