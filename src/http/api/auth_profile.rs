//! The signed-in user's own profile and picture, `{issuer}/v1/auth/me…`, and pictures served
//! back under URLs that change with them. Thin adapters over `idm::profile`.

use std::sync::Arc;

use gatehouse_storage::model::UserRecord;
use poem::http::StatusCode;
use poem::web::Data;
use poem_openapi::payload::{Binary, Json};
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use super::auth::{auth_answer, bad_request, problem_of, user_for_change, user_signed_in, FromProblem};
use crate::app::AppState;
use crate::http::api::checked::Checked;
use crate::http::issuer::IssuerScope;
use crate::http::problem::Problem;
use crate::idm::auth::AuthError;
use crate::idm::profile::{self, ProfileChange, MAX_AVATAR_BYTES};

#[derive(Tags)]
enum ProfileTag {
    /// The signed-in user's own profile and picture.
    Profile,
}

pub struct ProfileApi;

#[derive(Debug, Object)]
pub struct Profile {
    pub id: String,
    #[oai(skip_serializing_if_is_none)]
    pub email: Option<String>,
    /// Whether the user proved they read `email`.
    pub email_verified: bool,
    pub display_name: String,
    #[oai(skip_serializing_if_is_none)]
    pub locale: Option<String>,
    /// The picture, when there is one; the URL changes when the picture does.
    #[oai(skip_serializing_if_is_none)]
    pub avatar_url: Option<String>,
}

/// What to change; absent fields stay as they are.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct ProfilePatch {
    #[oai(validator(max_length = 200))]
    pub display_name: Option<String>,
    /// A language tag such as `en` or `pt-BR`; empty clears it.
    #[oai(validator(max_length = 35))]
    pub locale: Option<String>,
    /// A new address: unproven until its verification link is used; needs `current_password`.
    #[oai(validator(max_length = 254))]
    pub email: Option<String>,
    #[oai(validator(max_length = 1024))]
    pub current_password: Option<String>,
}

#[derive(Debug, Object)]
pub struct AvatarSet {
    pub avatar_url: String,
}

/// The picture's URL, relative to the issuer's origin.
fn avatar_url(app: &AppState, user: &UserRecord) -> Option<String> {
    let sha = user.avatar_sha256.as_ref()?;
    Some(format!("{}/v1/auth/avatars/{}/{sha}", app.issuer_of(&user.tenant), user.id))
}

fn view(app: &AppState, user: &UserRecord) -> Profile {
    Profile {
        id: user.id.clone(),
        email: user.email.clone(),
        email_verified: user.email_verified,
        display_name: user.display_name.clone(),
        locale: user.locale.clone(),
        avatar_url: avatar_url(app, user),
    }
}

auth_answer! {
    /// The profile.
    ProfileRead {
        /// The signed-in user's profile.
        #[oai(status = 200)]
        Ok(Json<Profile>),
    }
    401 Unauthorized "Not signed in.",
}

auth_answer! {
    /// The profile changed.
    ProfileChanged {
        /// The profile as it is now.
        #[oai(status = 200)]
        Ok(Json<Profile>),
    }
    401 Unauthorized "Not signed in, or the current password is not right.",
    403 Forbidden "A cross-site request.",
    408 RequestTimeout "The body did not arrive within `http.body_read_timeout_secs`.",
    409 Conflict "The address belongs to another account, or the profile changed meanwhile.",
    413 PayloadTooLarge "The body is larger than `max_body_bytes`.",
}

auth_answer! {
    /// A picture set.
    AvatarChanged {
        /// Stored (re-encoded); its URL.
        #[oai(status = 200)]
        Ok(Json<AvatarSet>),
    }
    401 Unauthorized "Not signed in.",
    403 Forbidden "A cross-site request.",
    408 RequestTimeout "The body did not arrive within `http.body_read_timeout_secs`.",
    413 PayloadTooLarge "The picture is larger than 5 MiB.",
}

auth_answer! {
    /// A picture removed.
    AvatarRemoved {
        /// Removed (or there was none).
        #[oai(status = 204)]
        Done,
    }
    401 Unauthorized "Not signed in.",
    403 Forbidden "A cross-site request.",
}

/// Reads at most `limit` bytes of `body`, or says it was larger.
async fn read_limited(body: poem::Body, limit: usize, deadline: std::time::Duration) -> Result<Vec<u8>, AuthError> {
    match tokio::time::timeout(deadline, body.into_bytes_limit(limit)).await {
        Ok(Ok(bytes)) => Ok(bytes.to_vec()),
        Ok(Err(poem::error::ReadBodyError::PayloadTooLarge)) => Err(AuthError::TooLarge),
        Ok(Err(e)) => Err(AuthError::Invalid(vec![("avatar".into(), format!("the body could not be read: {e}"))])),
        Err(_) => Err(AuthError::Invalid(vec![("avatar".into(), "the body did not arrive in time".into())])),
    }
}

#[OpenApi(tag = "ProfileTag::Profile")]
impl ProfileApi {
    /// The signed-in user's profile.
    #[oai(path = "/v1/auth/me", method = "get", operation_id = "getProfile")]
    async fn me(&self, app: Data<&Arc<AppState>>, scope: Data<&IssuerScope>, req: &poem::Request) -> ProfileRead {
        match user_signed_in(&app, &scope, req).await {
            Ok(user) => ProfileRead::Ok(Json(view(&app, &user))),
            Err(p) => ProfileRead::problem(p),
        }
    }

    /// Change the display name, the locale or (with the current password) the email address.
    #[oai(path = "/v1/auth/me", method = "patch", operation_id = "updateProfile")]
    async fn update(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        body: Json<Checked<ProfilePatch>>,
    ) -> ProfileChanged {
        let user = match user_for_change(&app, &scope, req).await {
            Ok(u) => u,
            Err(p) => return ProfileChanged::problem(p),
        };
        let b = &body.0 .0;
        let change = ProfileChange {
            display_name: b.display_name.as_deref(),
            locale: b.locale.as_deref(),
            email: b.email.as_deref(),
            current_password: b.current_password.as_deref(),
        };
        match profile::update(&app, &user, change).await {
            Ok(now) => ProfileChanged::Ok(Json(view(&app, &now))),
            Err(AuthError::BadCredentials) => ProfileChanged::problem(Problem::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "the current password is not right",
            )),
            Err(AuthError::RateLimited(wait)) => {
                let (p, after) = super::auth::too_many(wait, "too many failed sign-ins");
                ProfileChanged::TooManyRequests(Json(p), after)
            }
            Err(e) => ProfileChanged::problem(problem_of(e)),
        }
    }

    /// Set the picture: a PNG, JPEG or WebP image of at most 5 MiB, told apart by its bytes
    /// (the declared type is not asked). It is re-encoded, at most 512 px on a side.
    #[oai(path = "/v1/auth/me/avatar", method = "put", operation_id = "setAvatar")]
    async fn set_avatar(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        body: Binary<poem::Body>,
    ) -> AvatarChanged {
        // The session first: nothing of the upload is read for nobody.
        let user = match user_for_change(&app, &scope, req).await {
            Ok(u) => u,
            Err(p) => return AvatarChanged::problem(p),
        };
        let deadline = std::time::Duration::from_secs(app.config.http.body_read_timeout_secs);
        let result = match profile::upload_slot() {
            Ok(_slot) => match read_limited(body.0, MAX_AVATAR_BYTES, deadline).await {
                Ok(bytes) => profile::set_avatar(&app, &user, bytes).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match result {
            Ok(sha) => AvatarChanged::Ok(Json(AvatarSet {
                avatar_url: format!("{}/v1/auth/avatars/{}/{sha}", app.issuer_of(&user.tenant), user.id),
            })),
            Err(e) => AvatarChanged::problem(problem_of(e)),
        }
    }

    /// Remove the picture.
    #[oai(path = "/v1/auth/me/avatar", method = "delete", operation_id = "deleteAvatar")]
    async fn delete_avatar(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
    ) -> AvatarRemoved {
        let user = match user_for_change(&app, &scope, req).await {
            Ok(u) => u,
            Err(p) => return AvatarRemoved::problem(p),
        };
        match profile::delete_avatar(&app, &user).await {
            Ok(()) => AvatarRemoved::Done,
            Err(e) => AvatarRemoved::problem(problem_of(e)),
        }
    }
}

/// A user's picture, by the URL their profile gives (`avatar_url`). Served beside the
/// documented API, like the docs' assets: an image is not a JSON resource, and its URL is only
/// ever taken from a profile.
#[poem::handler]
pub async fn avatar(
    poem::web::Path((user, digest)): poem::web::Path<(String, String)>,
    app: Data<&Arc<AppState>>,
    scope: Data<&IssuerScope>,
) -> poem::Response {
    use poem::IntoResponse;
    let well_formed =
        user.strip_prefix("u-").is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            && digest.len() == 64
            && digest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let tenant = match super::auth::tenant_of(&app, &scope) {
        Ok(t) => t,
        Err(p) => return p.into_response(),
    };
    if !well_formed {
        return Problem::not_found("there is no such picture").into_response();
    }
    match profile::avatar(&app, &tenant.id, &user, &digest) {
        Ok(Some((content_type, data))) => poem::Response::builder()
            .content_type(content_type)
            .header("cache-control", "public, max-age=31536000, immutable")
            .body(data),
        Ok(None) => Problem::not_found("there is no such picture").into_response(),
        Err(e) => problem_of(e).into_response(),
    }
}
