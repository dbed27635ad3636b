//! Use cases of identity management, one module per domain noun.

pub mod auth;
pub mod authorize;
pub mod bindings;
pub mod clients;
pub mod cluster;
pub mod email;
pub mod keys;
pub mod logout;
pub mod mfa;
pub mod passkeys;
pub mod profile;
pub mod protocol;
pub mod roles;
pub mod tenants;
pub mod tokens;
pub mod userinfo;
pub mod users;

/// Each use case's error keeps a refusal and a failed write as its own variants.
macro_rules! from_propose_error {
    ($($error:ty),* $(,)?) => {$(
        impl From<crate::app::ProposeError> for $error {
            fn from(e: crate::app::ProposeError) -> Self {
                match e {
                    crate::app::ProposeError::Refused(r) => Self::Refused(r),
                    crate::app::ProposeError::Write(w) => Self::Write(w),
                }
            }
        }
    )*};
}

from_propose_error!(
    bindings::BindingError,
    clients::ClientError,
    cluster::ClusterError,
    keys::KeysError,
    roles::RoleError,
    tenants::TenantError,
    users::UserError,
);

/// `command`, applied only while the subject a caller was allowed to act on holds no more
/// roles than it did then (`None`: no such check, for callers such as the CLI).
pub(crate) fn guarded(
    command: gatehouse_storage::Command,
    guard: Option<gatehouse_storage::HeldRoles>,
) -> gatehouse_storage::Command {
    match guard {
        Some(holds_at_most) => gatehouse_storage::Command::Guarded { inner: Box::new(command), holds_at_most },
        None => command,
    }
}

/// The answer for an outcome a use case did not expect of its command (a bug, never input).
pub(crate) fn unexpected(applied: gatehouse_storage::Applied) -> crate::app::NodeWriteError {
    crate::app::NodeWriteError::Unavailable(format!("unexpected outcome {applied:?}"))
}

/// A character the admin API's patterns exclude from names and identifiers: ASCII space and
/// controls, DEL and the C1 controls. (Deliberately ASCII-defined: `\s` differs between regex
/// engines, and the schema's patterns and these checks must agree exactly.)
pub fn is_blank_or_control(c: char) -> bool {
    c <= ' ' || ('\u{7f}'..='\u{9f}').contains(&c)
}

/// Trims ASCII whitespace only, for the same reason.
pub fn trim_ascii(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii_whitespace())
}
