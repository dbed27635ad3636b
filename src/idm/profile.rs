//! A signed-in user's own profile (display name, locale, email) and picture.
//!
//! A new email address needs the current password (S48: it is a sign-in factor) and is
//! unproven until its verification link is used. A picture is taken only when its bytes are a
//! PNG, JPEG or WebP image with nothing before or after it (the declared type is not asked); it
//! is decoded within limits and re-encoded at most 512 px wide and high, so no metadata, no
//! trailing bytes and no second reading of the upload survive.

use std::io::Cursor;
use std::sync::LazyLock;

use gatehouse_storage::model::{AvatarRecord, UserRecord};
use gatehouse_storage::{Applied, Command, Rejection};
use image::{DynamicImage, ImageFormat};

use crate::app::{AppState, NodeWriteError, ProposeError};
use crate::idm::auth::{self, AuthError};

/// The largest picture taken, as uploaded.
pub const MAX_AVATAR_BYTES: usize = 5 * 1024 * 1024;
/// Stored pictures fit in this square.
const AVATAR_EDGE: u32 = 512;
/// Images larger than this are refused before their pixels are decoded.
const MAX_DECODED_EDGE: u32 = 8192;
/// Pictures decoded at once at most (each may take a few hundred MiB while decoding).
static DECODING: LazyLock<tokio::sync::Semaphore> = LazyLock::new(|| tokio::sync::Semaphore::new(2));

fn invalid(field: &str, message: &str) -> AuthError {
    AuthError::Invalid(vec![(field.into(), message.into())])
}

fn unavailable(e: impl std::fmt::Display) -> AuthError {
    AuthError::Write(NodeWriteError::Unavailable(e.to_string()))
}

/// What a user may change about themselves; `None` leaves a field as it is.
pub struct ProfileChange<'a> {
    pub display_name: Option<&'a str>,
    /// An empty string clears it.
    pub locale: Option<&'a str>,
    pub email: Option<&'a str>,
    /// Needed to change the email address.
    pub current_password: Option<&'a str>,
}

/// A BCP 47 language tag, loosely: a 2 or 3 letter language, then subtags of 1 to 8 letters or
/// digits.
fn plausible_locale(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let language = parts.next().unwrap_or_default();
    tag.len() <= 35
        && (2..=3).contains(&language.len())
        && language.bytes().all(|b| b.is_ascii_alphabetic())
        && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Applies `change` to the signed-in `user`; the profile as it is now.
pub async fn update(app: &AppState, user: &UserRecord, change: ProfileChange<'_>) -> Result<UserRecord, AuthError> {
    let mut next = user.clone();
    if let Some(name) = change.display_name {
        let name = crate::idm::trim_ascii(name);
        if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
            return Err(invalid("display_name", "must be 1 to 200 characters without control characters"));
        }
        next.display_name = name.to_string();
    }
    if let Some(locale) = change.locale {
        next.locale = match locale.trim() {
            "" => None,
            tag if plausible_locale(tag) => Some(tag.to_string()),
            _ => return Err(invalid("locale", "must be a language tag such as en or pt-BR")),
        };
    }
    let mut new_email = None;
    if let Some(email) = change.email {
        let email = auth::normalize_email(email)?;
        if user.email.as_deref() != Some(email.as_str()) {
            let password = change.current_password.ok_or_else(|| {
                invalid("current_password", "the current password is needed to change the email address")
            })?;
            // Each change mails the new address: a user's changes share one hourly budget.
            if !app.limits.admit_email_to(&format!("{}/user:{}", user.tenant, user.id)) {
                let wait = crate::app::limits::RetryAfter(std::time::Duration::from_secs(600));
                return Err(AuthError::RateLimited(wait));
            }
            auth::reauthenticate(app, user, password).await?;
            // An account named by its address is renamed with it.
            if user.email.as_deref() == Some(user.username.as_str()) {
                next.username = email.clone();
            }
            next.email = Some(email.clone());
            new_email = Some(email);
        }
    }
    next.revision = user.revision + 1;
    next.updated_at_ms = app.clock.now_ms();
    let command = Command::UpdateUser { user: next.clone(), expected_revision: user.revision };
    match app.propose(&format!("user:{}", user.id), command).await {
        Ok(Applied::UserUpdated { .. }) => {}
        Ok(other) => return Err(super::unexpected(other).into()),
        Err(ProposeError::Refused(Rejection::UsernameTaken { .. })) => return Err(AuthError::EmailTaken),
        Err(ProposeError::Refused(Rejection::RevisionMismatch { .. })) => return Err(AuthError::ChangedMeanwhile),
        Err(e) => return Err(e.into()),
    }
    if let Some(email) = new_email {
        app.mail.request_verification(&user.tenant, &email);
        next.email_verified = false;
    }
    Ok(next)
}

/// The image format of `bytes` when they hold one PNG, JPEG or WebP image and nothing else.
fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
    if let Some(mut rest) = bytes.strip_prefix(PNG) {
        // Walk the chunks: the file ends with IEND, and nothing may follow it.
        while rest.len() >= 12 {
            let len = u32::from_be_bytes(rest[..4].try_into().ok()?) as usize;
            let kind = &rest[4..8];
            let end = 12usize.checked_add(len)?;
            if end > rest.len() {
                return None;
            }
            rest = &rest[end..];
            if kind == b"IEND" {
                return rest.is_empty().then_some(ImageFormat::Png);
            }
        }
        return None;
    }
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return bytes.ends_with(&[0xFF, 0xD9]).then_some(ImageFormat::Jpeg);
    }
    if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        let declared = u32::from_le_bytes(bytes[4..8].try_into().ok()?) as usize;
        return (declared.checked_add(8)? == bytes.len()).then_some(ImageFormat::WebP);
    }
    None
}

/// Markup a browser might run if it ever sniffed the picture as a page.
fn holds_markup(bytes: &[u8]) -> bool {
    let lower: Vec<u8> = bytes.iter().map(u8::to_ascii_lowercase).collect();
    [&b"<html"[..], b"<script", b"<!doctype", b"<svg", b"<body", b"<iframe"]
        .iter()
        .any(|needle| lower.windows(needle.len()).any(|w| w == *needle))
}

/// Decodes `bytes` within limits and re-encodes them in their own format, at most
/// `AVATAR_EDGE` on a side: the content type and the new bytes.
fn reencode(bytes: &[u8]) -> Result<(&'static str, Vec<u8>), AuthError> {
    let kinds = "must be a PNG, JPEG or WebP image with nothing before or after it";
    let format = sniff(bytes).ok_or_else(|| invalid("avatar", kinds))?;
    if holds_markup(bytes) {
        return Err(invalid("avatar", "an image may not carry markup"));
    }
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_DECODED_EDGE);
    limits.max_image_height = Some(MAX_DECODED_EDGE);
    limits.max_alloc = Some(256 * 1024 * 1024);
    reader.limits(limits);
    let decoded = reader.decode().map_err(|e| invalid("avatar", &format!("the image cannot be read: {e}")))?;
    let picture = if decoded.width() > AVATAR_EDGE || decoded.height() > AVATAR_EDGE {
        decoded.thumbnail(AVATAR_EDGE, AVATAR_EDGE)
    } else {
        decoded
    };
    let mut out = Cursor::new(Vec::new());
    let written = match format {
        ImageFormat::Jpeg => {
            let rgb = DynamicImage::ImageRgb8(picture.to_rgb8());
            rgb.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90))
        }
        ImageFormat::WebP => {
            let rgba = DynamicImage::ImageRgba8(picture.to_rgba8());
            rgba.write_with_encoder(image::codecs::webp::WebPEncoder::new_lossless(&mut out))
        }
        _ => picture.write_to(&mut out, ImageFormat::Png),
    };
    written.map_err(|e| invalid("avatar", &format!("the image cannot be re-encoded: {e}")))?;
    let content_type = match format {
        ImageFormat::Jpeg => "image/jpeg",
        ImageFormat::WebP => "image/webp",
        _ => "image/png",
    };
    Ok((content_type, out.into_inner()))
}

/// One of the few upload slots, taken before an upload is read (503 when all are busy), so
/// uploads in memory stay bounded.
pub fn upload_slot() -> Result<tokio::sync::SemaphorePermit<'static>, AuthError> {
    DECODING.try_acquire().map_err(|_| AuthError::Busy)
}

/// Sets the signed-in user's picture from uploaded `bytes` (read within an `upload_slot`); its
/// digest (which names its URL).
pub async fn set_avatar(app: &AppState, user: &UserRecord, bytes: Vec<u8>) -> Result<String, AuthError> {
    if bytes.len() > MAX_AVATAR_BYTES {
        return Err(AuthError::TooLarge);
    }
    let (content_type, data) = tokio::task::spawn_blocking(move || reencode(&bytes)).await.map_err(unavailable)??;
    let sha256 = hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &data));
    use base64::Engine;
    let avatar = AvatarRecord {
        v: 1,
        tenant: user.tenant.clone(),
        user_id: user.id.clone(),
        content_type: content_type.to_string(),
        sha256: sha256.clone(),
        data: base64::engine::general_purpose::STANDARD.encode(&data),
        updated_at_ms: app.clock.now_ms(),
    };
    app.propose(&format!("user:{}", user.id), Command::SetAvatar(avatar)).await?;
    Ok(sha256)
}

pub async fn delete_avatar(app: &AppState, user: &UserRecord) -> Result<(), AuthError> {
    let command = Command::DeleteAvatar { tenant: user.tenant.clone(), user_id: user.id.clone() };
    app.propose(&format!("user:{}", user.id), command).await?;
    Ok(())
}

/// The picture of `user_id` whose digest is `sha256`: its content type and bytes.
pub fn avatar(
    app: &AppState,
    tenant: &str,
    user_id: &str,
    sha256: &str,
) -> Result<Option<(String, Vec<u8>)>, AuthError> {
    use base64::Engine;
    let found = app.store.read().and_then(|r| r.avatar(tenant, user_id)).map_err(unavailable)?;
    let Some(a) = found.filter(|a| a.sha256 == sha256) else { return Ok(None) };
    let data = base64::engine::general_purpose::STANDARD.decode(&a.data).map_err(unavailable)?;
    Ok(Some((a.content_type, data)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7])));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn a_picture_is_taken_by_its_bytes_and_re_encoded_small() {
        let (kind, data) = reencode(&png(1000, 600)).unwrap();
        assert_eq!(kind, "image/png");
        let back = image::load_from_memory(&data).unwrap();
        assert_eq!((back.width(), back.height()), (512, 307), "fits 512 px, proportions kept");

        let mut trailing = png(10, 10);
        trailing.extend_from_slice(b"<html><script>alert(1)</script>");
        assert!(reencode(&trailing).is_err(), "bytes after the image");
        let mut markup = png(10, 10);
        let at = 33;
        let chunk = b"\x00\x00\x00\x0ftEXt<script>x</s>";
        markup.splice(at..at, chunk.iter().copied());
        assert!(reencode(&markup).is_err(), "markup inside the image");
        assert!(reencode(b"<!doctype html><p>not a picture</p>").is_err());
        let whole = png(50, 50);
        assert!(reencode(&whole[..whole.len() / 2]).is_err(), "a truncated image");
    }

    #[test]
    fn locales_are_language_tags() {
        for ok in ["en", "pt-BR", "zh-Hant-TW", "de-CH-1996"] {
            assert!(plausible_locale(ok), "{ok}");
        }
        for bad in ["", "e", "english", "en_US", "en-", "en-toolongsubtag", "<script>"] {
            assert!(!plausible_locale(bad), "{bad}");
        }
    }
}
