//! Wire-level fakes of identity providers, on 127.0.0.1 port 0: a GitHub-like server
//! (token, user, emails) and an OpenID Connect provider (discovery, JWKS, a token endpoint
//! answering RS256-signed ID tokens). Each checks the PKCE verifier against the challenge of
//! the authorization request the test registered the code with.

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::Digest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The key the fake OIDC provider publishes and signs with.
pub const KEY_PEM: &str = r#"-----BEGIN RSA PRIVATE KEY-----
MIIEowIBAAKCAQEAm9CdGBz5rMiLQDOIH1VF/zzcnTn1/TvHmx/HHlhb/jzgboy9
fxILVMyEf1HBR2LGn1o3ZO2VNJrHdfS8OaOdNqPiAehweBQ/Xe3lqOK0aZOPJkJs
WxXXnCui7rIzwHrS59/Z5/Xyk8DqjWHfQX/nbvqCCy7dhCA+p0Nzp1/tqn/8JK7t
idsJShel2palHxRrvon6XI7Gq2HCKdvPnHFiT/m9jad88BHUy9tpeo1u6IorUrD1
GirgVu6E1nTcxqDUuL5EN55esUxSEGrdVIotWN0FI+lK+grPm+fnpARpPjThAE1Q
XoRQau410f+FXJJRPwfl6gTxwh2VpSDVUEwREwIDAQABAoIBAAviGPEGA1v+6XEq
h5xNeRVSXh2W64tLcVmDzsBM4ICJwltmsWxiWGnjCncuqYJuZpPa917jqF2cMPpu
gU0WDNSQzW5JfLZeY5zKxW6gEj6mXyRTAYeK1BLtgwjC9M5zr5Jj5e8FDgyLCc22
4/t6ATuwsD/2bDTPmWemmHNF43l9bdHzePQZgG2fgUH6AxO8CxsJDS5TyYXswEq2
bWJnfj8ZLtIuIYpz909d1hdOzcTsiChYmUR3O+AaHIwMObS6PAOEtZNJ/2smurIp
5NWakZLjFigShkU3QSKUnd6akopJ9g+mwdLyhcGLElLNfJdq47aVkLDXvXNLST2q
XZ9AHT0CgYEAziN4tQnI/4wHqhT0EMAFeh8Wncy5JRrn2LsMT2doPrNvsF2wct5H
BpGnutjtWr0gXRRfhDkncLtepW3+EG5mw+Vbi7VVrtZtXAdj4G9r505NVmtVy92P
ggOcBzkmMaYgRbNKGx0C8qE7wZd6LANJu5OX1ASJvV6xOHb2gtMMzY8CgYEAwYD/
B2C1tMxY7NWKsRnY20DXbGc4OfR5siTfoTe/fvA7/4to+QST0TlDj+jm0Qb0qgMs
RHGAZG7s7fi978grI+IbrxxAm/3UJzgk22gUw2+Ft90r1ng69E/cMlbRoIXYtsYg
7unaLYcjeZ8douvAzjVA1QThxbYcyQhRVhGQij0CgYBPWs5j+xFadwCYVBqkvBcf
rQoa0y3O/+2SvGb/xlIWGSN85IRBpBn5iGbmgg3VaYsk6evfTdVGC4ti6dXtY2LC
NPAp9zO166wLyniDdME4OSeChi1wHqnZJiSRj0mJwWcZDe0QRPnWh4UmgHayrM1c
nXPMVbbkpKhakUlSkYaTNwKBgBEgAXH9tRcTHquXGnch+ncs/eOyHt/CKyMA8Gms
LV5mlGjBRcEEDrDtiHUr/4FwRCbnsPs9sEczKfTFlsmpxWefkyOkNHOZuzTdWyWv
yGajcAodoMuSSGVmy+4IkPTL46oJTtDWEWEGHLWex1ir1JxrShmQHQsKWvHPsqMT
Wt9hAoGBAL2NEuIl9BTQbn8OargsJyoUzo3fPOegL0/dYSlhogTqJmR6jkGGoC71
mrrVJulCpdCEEjyK3KXHySVerKbsbeOZDDNJVIQedw7w88Fh642KdoHAD24B7OiV
wCvCS60Ei5LeQ5oKL0lKeMa4+P+chUUPku842r9n8yOqqCv1R2bV
-----END RSA PRIVATE KEY-----"#;
/// Another key, for ID tokens an attacker signed.
pub const OTHER_KEY_PEM: &str = r#"-----BEGIN RSA PRIVATE KEY-----
MIIEpAIBAAKCAQEA2DFAhgnBa81/ABmWv6ipCDqAiIwWhbiBpFx09XnG8LTStMxr
bONEf0n5tQ3nnyMpw1I+odCKYM1K0FcjWJ7Jlk6tbWnaJakkmjKef1I/G5ZwhT9E
od0rk9v8oM6hqpWNbHHGMcfEKKUvyQAC0U7CIqNdDbkURo9EXl1lKfjrHJhYFf3w
lZ005/VdpKaPqkezgyAzJlXKmPO+rDF+tQOvchWdGTzPbZNDVjFH/9WROMOAuRCx
E3/5hmZ7MWBU0xu9KSXCYfGo/1EEhmOwmjA4rT+2C4f5kX1Rjn0TEbFgRXJEv/Ue
K1MYy/+Pgt3EjbpDkHZneEfCqjbyWj0gpw/PrQIDAQABAoIBABCwnrH/rfhip9Jh
Z1dPpTr+zzObbaqwRNvkN7LyuNvAzep0xI9RApWkEkcQC339gt4dauXm7vk2/WFU
9M7aNVGpVxn/sRO1ZDS+QdOuTQkWGwTXuUvuAoz6j50iI+4YImVJPvB9YvnzT1uA
U3db/JXxetUndmFVx+9UB6O5n9Giwc8+cCk6li46fOzUVOZH2bldYI8o9B5swHN4
6VOs18RJ20DtxpNi+muZbptOadpqGfSEYkLsoE7PZDAOhNB7y9toNFDwtgTOLtAh
ssCi2cfufdm2yS2nIAsoTrnyBeeA3uVdRi5daGq/ASAqawnD71FCt2VMwTKhpCXl
zqwJ20ECgYEA+SexSI5KDkj8qtNWJCaE45Y4pX3VczJBgE/ZnDMpEDjVUpZBg7pQ
zZ2xmtu7S6aQpkEOqbcIQXWmN9+TkgFrGoHvYxViqthwEtIGy4hDPta67W68S0cs
ca9oy9IC6H9ON8KZRD99hvY6jNQYg4zo0sJfANq4Uq1LyDMtN8QhoW0CgYEA3iG7
r/oQWBPzjyaLCichsFQJU99iKGauhb6B7x5qKj/nITino5CsMymftSHKelqwn4Pp
Nn2v6xBQqL9OXQ54ZhOC+dH6QooXstlnn5XU0blkzbq7A5Tt8JnfNdngfgevnH8w
0ru/kfzLKRZCcief3uxbLahIqaFAFJmLRA98P0ECgYEAwPzwwh2M2THJnFvkLk4z
wsEaEX29duQnfkbbbLToCquq+LRv/KO1cP7Dkgq/MaLMCir8O5MNbv69CCxCduZo
WnjovtvSuDi73qgWIVLjm2niEoUijkCL+WcAClgabpIlOOWfqBBxn7dbtLeYYVUl
BhMOWXARM+ENgP26+aYO0qUCgYEAvfTC+B40U93b7pLbW/dSy+NRhrQE0N/eZukf
XEj6KN803CgC09EoMShrNw6KhE+BsyevC7Y39iChmWzfqpxxQXl2DAUQqk5FLeDU
yJfswtxz46rHuqxlPdeYFgkX/S69cmsiaVO84y723U/3yn8wLAabglPir40Bq5wS
iEVlzwECgYAxhesuHGZRoj0rbQNn8n5rUuQwLQ17KTwNTE/4Q5vJOeEGcCsbt8Jv
itxg3Vkhj1LZApB9afLzsfpGR827XvUw4i9k3f73fQtGBjI5KesvEuEcDogfMwG9
0PwVOP8oDXhhpsJbqdqamEKrvetK3M6OlxjxEwiAbJPLHPlNu30Ipg==
-----END RSA PRIVATE KEY-----"#;
const KEY_N: &str = "m9CdGBz5rMiLQDOIH1VF_zzcnTn1_TvHmx_HHlhb_jzgboy9fxILVMyEf1HBR2LGn1o3ZO2VNJrHdfS8OaOdNqPiAehweBQ_Xe3lqOK0aZOPJkJsWxXXnCui7rIzwHrS59_Z5_Xyk8DqjWHfQX_nbvqCCy7dhCA-p0Nzp1_tqn_8JK7tidsJShel2palHxRrvon6XI7Gq2HCKdvPnHFiT_m9jad88BHUy9tpeo1u6IorUrD1GirgVu6E1nTcxqDUuL5EN55esUxSEGrdVIotWN0FI-lK-grPm-fnpARpPjThAE1QXoRQau410f-FXJJRPwfl6gTxwh2VpSDVUEwREw";

/// Who signs in at the provider, and how its ID token is made.
#[derive(Clone, Debug)]
pub struct Grant {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    /// Filled in from the authorization request.
    pub challenge: String,
    pub nonce: Option<String>,
    /// ID-token attacks.
    pub sign_with_other_key: bool,
    pub audience: Option<String>,
    pub wrong_nonce: bool,
}

impl Grant {
    pub fn new(subject: &str, email: &str, email_verified: bool) -> Self {
        Self {
            subject: subject.into(),
            email: Some(email.into()),
            email_verified,
            challenge: String::new(),
            nonce: None,
            sign_with_other_key: false,
            audience: None,
            wrong_nonce: false,
        }
    }
}

#[derive(Default)]
struct Inner {
    /// Authorization codes not yet exchanged.
    codes: HashMap<String, Grant>,
    /// Access tokens handed out (GitHub API calls).
    tokens: HashMap<String, Grant>,
    /// Token requests seen, to assert on.
    token_requests: Vec<HashMap<String, String>>,
}

#[derive(Clone)]
pub struct FakeIdp {
    pub base: String,
    pub client_id: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeIdp {
    pub async fn start(client_id: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let fake = Self { base, client_id: client_id.into(), inner: Arc::default() };
        let app = Router::new()
            .route("/login/oauth/access_token", post(github_token))
            .route("/api/user", get(github_user))
            .route("/api/user/emails", get(github_emails))
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/token", post(oidc_token))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    /// Registers `code` for an authorization request that carried `challenge` (and `nonce`).
    pub fn grant(&self, code: &str, grant: Grant) {
        self.inner.lock().unwrap().codes.insert(code.into(), grant);
    }

    pub fn token_requests(&self) -> Vec<HashMap<String, String>> {
        self.inner.lock().unwrap().token_requests.clone()
    }

    /// Takes a code whose PKCE verifier matches; `None` for an unknown or used code or a bad
    /// verifier.
    fn take(&self, form: &HashMap<String, String>) -> Option<Grant> {
        let mut inner = self.inner.lock().unwrap();
        inner.token_requests.push(form.clone());
        let code = form.get("code")?;
        let verifier = form.get("code_verifier")?;
        let grant = inner.codes.remove(code)?;
        let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
        (challenge == grant.challenge && form.get("grant_type").map(String::as_str) == Some("authorization_code"))
            .then_some(grant)
    }
}

/// The DER body of a PEM block.
fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).unwrap()
}

fn invalid_grant() -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": "invalid_grant"}))).into_response()
}

async fn github_token(State(fake): State<FakeIdp>, Form(form): Form<HashMap<String, String>>) -> Response {
    let Some(grant) = fake.take(&form) else { return invalid_grant() };
    let token = format!("gho_{}", uuid::Uuid::new_v4().simple());
    fake.inner.lock().unwrap().tokens.insert(token.clone(), grant);
    Json(json!({"access_token": token, "token_type": "bearer", "scope": "read:user,user:email"})).into_response()
}

fn bearer_grant(fake: &FakeIdp, headers: &HeaderMap) -> Option<Grant> {
    let token = headers.get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")?;
    fake.inner.lock().unwrap().tokens.get(token).cloned()
}

async fn github_user(State(fake): State<FakeIdp>, headers: HeaderMap) -> Response {
    match bearer_grant(&fake, &headers) {
        Some(g) => Json(json!({"id": g.subject.parse::<i64>().unwrap(), "login": "octo"})).into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn github_emails(State(fake): State<FakeIdp>, headers: HeaderMap) -> Response {
    match bearer_grant(&fake, &headers) {
        Some(g) => Json(json!([
            {"email": "secondary@example.net", "primary": false, "verified": true},
            {"email": g.email, "primary": true, "verified": g.email_verified},
        ]))
        .into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn discovery(State(fake): State<FakeIdp>) -> Json<Value> {
    let base = &fake.base;
    Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "jwks_uri": format!("{base}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

async fn jwks() -> Json<Value> {
    Json(json!({"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": "k1", "n": KEY_N, "e": "AQAB"}]}))
}

async fn oidc_token(State(fake): State<FakeIdp>, Form(form): Form<HashMap<String, String>>) -> Response {
    let Some(grant) = fake.take(&form) else { return invalid_grant() };
    let now = chrono::Utc::now().timestamp();
    let nonce = if grant.wrong_nonce { Some("another-nonce".to_owned()) } else { grant.nonce.clone() };
    let claims = json!({
        "iss": fake.base, "sub": grant.subject, "aud": grant.audience.clone().unwrap_or(fake.client_id.clone()),
        "iat": now, "exp": now + 300, "nonce": nonce, "email": grant.email, "email_verified": grant.email_verified,
    });
    let pem = if grant.sign_with_other_key { OTHER_KEY_PEM } else { KEY_PEM };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("k1".into());
    let key = jsonwebtoken::EncodingKey::from_rsa_der(&pem_der(pem));
    let id_token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    Json(json!({"access_token": "at-oidc", "token_type": "Bearer", "expires_in": 3600, "id_token": id_token}))
        .into_response()
}
