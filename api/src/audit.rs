//! Where a request came from, for the activity log and the session list.

use crate::error::ApiError;
use crate::extract::ClientIp;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use parley_shared::audit::{AuditAction, AuditEvent};
use std::net::IpAddr;

/// The client's address and user agent.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub ip: IpAddr,
    pub user_agent: String,
}

impl RequestMeta {
    pub fn new(ip: IpAddr, user_agent: &str) -> Self {
        Self { ip, user_agent: user_agent.chars().take(255).collect() }
    }

    /// An activity-log event from this request.
    pub fn event(&self, action: AuditAction) -> AuditEvent {
        AuditEvent::new(action, &self.ip.to_string(), &self.user_agent)
    }

    /// Records an admin's action on its own, after the change it describes.
    pub async fn admin_action(
        &self,
        state: &AppState,
        admin: &crate::extract::AdminUser,
        action: AuditAction,
        target: Option<parley_shared::ids::UserId>,
        details: serde_json::Value,
    ) -> Result<(), ApiError> {
        let mut event = self.event(action).actor(admin.0.user.id).details(details);
        event.target = target;
        event.record(&state.db.writer).await?;
        Ok(())
    }
}

impl FromRequestParts<AppState> for RequestMeta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let ClientIp(ip) = ClientIp::from_request_parts(parts, state).await?;
        let agent = parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
        Ok(Self::new(ip, agent))
    }
}

/// An address cut to its network, as shown to users: IPv4 to its /24, IPv6 to its /48.
/// Text that is not an address shows as it is.
pub fn truncate_ip(ip: &str) -> String {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => truncate_ip(&v4.to_string()),
            None => {
                let mut segments = v6.segments();
                segments[3..].fill(0);
                format!("{}/48", std::net::Ipv6Addr::from(segments))
            }
        },
        Err(_) => ip.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_cut_to_their_network() {
        assert_eq!(truncate_ip("203.0.113.77"), "203.0.113.0/24");
        assert_eq!(truncate_ip("2001:db8:abcd:12:3456::1"), "2001:db8:abcd::/48");
        assert_eq!(truncate_ip("::ffff:192.0.2.9"), "192.0.2.0/24");
        assert_eq!(truncate_ip(""), "");
    }
}
