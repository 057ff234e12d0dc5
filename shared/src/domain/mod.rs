//! Domain types, parsed at the edge ("parse, don't validate").

mod email;
mod password;
mod profile;

pub use email::{Email, mask_emails};
pub use password::Password;
pub use profile::{Bio, DisplayName, Username};

/// Why a value was refused; shown to the client next to the field's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    pub(crate) fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}
