//! Use cases of identity management, one module per domain noun.

pub mod bindings;
pub mod clients;
pub mod keys;
pub mod roles;
pub mod tenants;
pub mod tokens;
pub mod users;

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
