//! Typed ids. Every id is a UUIDv7 (time-ordered, so it doubles as a pagination cursor),
//! stored as text.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// A user account.
    UserId
);
id_type!(
    /// A sign-in session (one per login; its refresh tokens rotate within it).
    SessionId
);
id_type!(
    /// A job, as clients see it.
    JobId
);
id_type!(
    /// A chat session (a conversation; not a sign-in [`SessionId`]).
    ChatSessionId
);
id_type!(
    /// A chat message, the user's or an assistant reply.
    MessageId
);
id_type!(
    /// An LLM configuration (the model a chat uses).
    LlmConfigId
);
id_type!(
    /// An entry of the activity log.
    AuditEventId
);
id_type!(
    /// An account at an identity provider, linked to a user.
    IdentityId
);

id_type!(
    /// A personal API key (for the OpenAI-compatible `/v1` endpoints).
    ApiKeyId
);
id_type!(
    /// One call of the OpenAI-compatible chat completions endpoint.
    ApiCompletionId
);

macro_rules! id_conversions {
    ($($name:ident),*) => {$(
        impl TryFrom<String> for $name {
            type Error = uuid::Error;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl TryFrom<NullableId> for Option<$name> {
            type Error = uuid::Error;
            fn try_from(s: NullableId) -> Result<Self, Self::Error> {
                s.0.map(|s| s.parse()).transpose()
            }
        }
    )*};
}

id_conversions!(
    UserId,
    SessionId,
    JobId,
    ChatSessionId,
    MessageId,
    LlmConfigId,
    ApiKeyId,
    ApiCompletionId,
    AuditEventId,
    IdentityId,
    ExportId,
    ShareId
);

/// A nullable id column, for `#[sqlx(try_from = "crate::ids::NullableId")]` on an
/// `Option<...Id>` field (`Option` cannot take a `TryFrom<Option<String>>`): null reads as
/// `None`, and a stored value that is not an id fails to decode instead of reading as `None`.
#[derive(Debug, Clone)]
pub struct NullableId(Option<String>);

impl sqlx::Type<sqlx::Any> for NullableId {
    fn type_info() -> sqlx::any::AnyTypeInfo {
        <String as sqlx::Type<sqlx::Any>>::type_info()
    }

    fn compatible(ty: &sqlx::any::AnyTypeInfo) -> bool {
        <String as sqlx::Type<sqlx::Any>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Any> for NullableId {
    fn decode(value: sqlx::any::AnyValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        <Option<String> as sqlx::Decode<sqlx::Any>>::decode(value).map(NullableId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_the_text_form_of_the_stored_uuids() {
        // Rows written before the typed ids hold `Uuid::now_v7().to_string()`.
        let stored = Uuid::now_v7().to_string();
        let id: MessageId = stored.parse().unwrap();
        assert_eq!(id.to_string(), stored);
        assert_eq!(serde_json::to_value(id).unwrap(), serde_json::Value::String(stored.clone()));
        assert_eq!(ChatSessionId::new().to_string().len(), stored.len());
    }

    #[test]
    fn a_stored_value_that_is_not_an_id_is_an_error() {
        assert!(LlmConfigId::try_from("cfg-1".to_owned()).is_err());
        assert!(Option::<LlmConfigId>::try_from(NullableId(Some("cfg-1".into()))).is_err());
        assert_eq!(Option::<LlmConfigId>::try_from(NullableId(None)).unwrap(), None);
    }
}

id_type!(
    /// An export file (and the job that writes it).
    ExportId
);

id_type!(
    /// A share link of a chat session (its public id is a separate random token).
    ShareId
);
