//! Role bindings: a user or a client holds a role in a tenant, optionally scoped.

use serde::{Deserialize, Serialize};

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

impl BindingRecord {
    pub fn table_key(&self) -> String {
        binding_key(&self.tenant, &self.id)
    }
}

pub fn binding_key(tenant: &str, id: &str) -> String {
    format!("{tenant}/{id}")
}
