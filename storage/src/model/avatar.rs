//! A user's picture: re-encoded by the server (so no metadata or trailing bytes of the upload
//! survive), kept with its content type and digest. The digest names its URL, which changes when
//! the picture does.

use serde::{Deserialize, Serialize};

use crate::table::{Row, StrTable};
use crate::tables;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvatarRecord {
    pub v: u8,
    pub tenant: String,
    pub user_id: String,
    /// `image/png`, `image/jpeg` or `image/webp`.
    pub content_type: String,
    /// SHA-256 of `data`, lowercase hex.
    pub sha256: String,
    /// The image, base64 (standard alphabet).
    pub data: String,
    pub updated_at_ms: i64,
}

pub fn avatar_key(tenant: &str, user_id: &str) -> String {
    format!("{tenant}/{user_id}")
}

impl Row for AvatarRecord {
    const TABLE: StrTable = tables::AVATARS;
    const NAME: &'static str = "avatars";
    fn key(&self) -> String {
        avatar_key(&self.tenant, &self.user_id)
    }
}
