//! Role bindings: a user or a client holds a role in a tenant, optionally scoped.

use serde::{Deserialize, Serialize};

use crate::table::{Row, StrTable};
use crate::tables;

/// The system role templates.
pub const ROLE_TEMPLATES: [&str; 4] = ["owner", "admin", "member", "viewer"];

/// A tenant role: a template with permissions added and removed (`resource:action` names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleRecord {
    pub v: u8,
    pub tenant: String,
    pub name: String,
    pub template: String,
    pub add: Vec<String>,
    pub remove: Vec<String>,
    pub created_at_ms: i64,
}

pub fn role_key(tenant: &str, name: &str) -> String {
    format!("{tenant}/{name}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingRecord {
    pub v: u8,
    pub tenant: String,
    pub id: String,
    /// `client:{client_id}` or `user:{user_id}`.
    pub subject: String,
    pub role: String,
    /// `org:{id}`, `project:{id}`…; `None` for the whole tenant.
    pub scope: Option<String>,
    pub created_at_ms: i64,
}

pub fn binding_key(tenant: &str, id: &str) -> String {
    format!("{tenant}/{id}")
}

/// The prefix of a subject's entries in the bindings-by-subject index. Subject ids never hold
/// a `/` (apply refuses one), so one subject's prefix never covers another's entries.
pub fn subject_prefix(tenant: &str, subject: &str) -> String {
    format!("{tenant}/{subject}/")
}

impl Row for RoleRecord {
    const TABLE: StrTable = tables::ROLES;
    const NAME: &'static str = "roles";
    fn key(&self) -> String {
        role_key(&self.tenant, &self.name)
    }
}

impl Row for BindingRecord {
    const TABLE: StrTable = tables::BINDINGS;
    const NAME: &'static str = "bindings";
    const INDEX: Option<StrTable> = Some(tables::BINDINGS_BY_SUBJECT);
    fn key(&self) -> String {
        binding_key(&self.tenant, &self.id)
    }
    fn index_entries(&self) -> Vec<(String, Vec<u8>)> {
        let entry = format!("{}{}", subject_prefix(&self.tenant, &self.subject), self.id);
        vec![(entry, self.key().into_bytes())]
    }
}
