//! `/admin/v1/tenants/{tenant}/users`: the tenant's user directory. Passwords are write-only.

use std::sync::Arc;

use gatehouse_storage::model::{UserRecord, UserStatus};
use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::auth::{authorize, may_act_on, AdminBearer, Permission};
use super::responses::{
    invalid, next_cursor, page_params, parse_etag, refusal, storage, write_failed, Created, Deleted, Done, Fetched,
    Page, Replaced,
};
use super::tenants::visible_tenant;
use super::AdminTag;
use crate::app::AppState;
use crate::http::api::checked::Checked;
use crate::http::api::text::Text;
use crate::http::problem::Problem;
use crate::idm::users::{self, UserError, UserSpec};

pub struct UsersApi;

#[derive(Debug, Object)]
pub struct User {
    pub id: String,
    pub username: String,
    #[oai(skip_serializing_if_is_none)]
    pub email: Option<String>,
    pub display_name: String,
    pub disabled: bool,
    /// Whether a password is set (the password itself is never shown).
    pub has_password: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// Messages waiting in the outbox (the dev mailbox when no SMTP relay is configured).
#[derive(Debug, Object)]
pub struct Mailbox {
    pub items: Vec<MailboxMessage>,
}

#[derive(Debug, Object)]
pub struct MailboxMessage {
    pub id: String,
    pub to: String,
    pub subject: String,
    /// The plain-text body, with its code or link.
    pub body: String,
    /// `sign_in_code`, `sign_in_link`, `password_reset` or `verify_email`.
    pub purpose: String,
    pub created_at_ms: i64,
    /// Dropped unsent at this time (its code or link has expired by then).
    pub expires_at_ms: i64,
    /// Failed delivery attempts.
    pub attempts: u32,
}

/// A new user.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example)]
pub struct CreateUser {
    /// Unique in the tenant (case-insensitive), no spaces.
    #[oai(validator(min_length = 1, max_length = 128, pattern = r"^[^\x00-\x20\x7f-\x9f]+$"))]
    pub username: Text,
    #[oai(validator(
        max_length = 254,
        pattern = r"^[^@\x00-\x20\x7f-\x9f]+@[^@\x00-\x20\x7f-\x9f]*\.[^@\x00-\x20\x7f-\x9f]*$"
    ))]
    pub email: Option<Text>,
    #[oai(validator(max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"))]
    pub display_name: Option<Text>,
    /// 15 to 256 characters, any characters; refused when easy to guess. Stored as an argon2id
    /// hash only.
    #[oai(validator(max_length = 1024))]
    pub password: Option<Text>,
    #[oai(default)]
    pub disabled: bool,
}

impl poem_openapi::types::Example for CreateUser {
    fn example() -> Self {
        CreateUser {
            username: "ada".into(),
            email: Some("ada@example.com".into()),
            display_name: Some("Ada Lovelace".into()),
            password: Some("correct horse battery staple".into()),
            disabled: false,
        }
    }
}

/// A user's profile; an update replaces it.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct UpdateUser {
    #[oai(validator(min_length = 1, max_length = 128, pattern = r"^[^\x00-\x20\x7f-\x9f]+$"))]
    pub username: Text,
    #[oai(validator(
        max_length = 254,
        pattern = r"^[^@\x00-\x20\x7f-\x9f]+@[^@\x00-\x20\x7f-\x9f]*\.[^@\x00-\x20\x7f-\x9f]*$"
    ))]
    pub email: Option<Text>,
    #[oai(validator(max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"))]
    pub display_name: Option<Text>,
    #[oai(default)]
    pub disabled: bool,
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct SetPassword {
    /// 15 to 256 characters, any characters; refused when easy to guess.
    #[oai(validator(max_length = 1024))]
    pub password: Text,
}

pub(crate) fn view(u: UserRecord) -> User {
    User {
        id: u.id,
        username: u.username,
        email: u.email,
        display_name: u.display_name,
        disabled: u.status != UserStatus::Active,
        has_password: u.password_hash.is_some(),
        created_at_ms: u.created_at_ms,
        updated_at_ms: u.updated_at_ms,
    }
}

pub(crate) fn etag(u: &UserRecord) -> String {
    format!("\"r{}\"", u.revision)
}

pub(crate) fn problem_of(e: UserError) -> Problem {
    match e {
        UserError::Invalid(errors) => invalid(errors),
        UserError::Refused(r) => refusal(r),
        UserError::Write(e) => write_failed(e),
        UserError::Hashing(e) => super::responses::unavailable(e),
        UserError::Busy => super::responses::unavailable("every password hashing slot is busy"),
    }
}

fn find(app: &AppState, tenant: &str, id: &str) -> Result<UserRecord, Problem> {
    app.store
        .read()
        .and_then(|r| r.user(tenant, id))
        .map_err(storage)?
        .ok_or_else(|| Problem::not_found(format!("there is no user {id:?}")))
}

fn spec(username: &Text, email: &Option<Text>, display_name: &Option<Text>, disabled: bool) -> UserSpec {
    UserSpec {
        username: username.0.clone(),
        email: email.as_ref().map(|e| e.0.clone()),
        display_name: display_name.as_ref().map(|d| d.0.clone()),
        disabled,
    }
}

#[OpenApi(tag = "AdminTag::Users")]
impl UsersApi {
    /// List a tenant's users; `search` matches username, e-mail or display name.
    #[oai(path = "/admin/v1/tenants/:tenant/users", method = "get", operation_id = "listUsers")]
    async fn list(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
        /// Case-insensitive substring of username, e-mail or display name.
        #[oai(validator(max_length = 128))]
        search: Query<Option<String>>,
        /// Page size, 1 to 500 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        #[oai(validator(max_length = 256, pattern = r"^[A-Za-z0-9_-]*$"))]
        cursor: Query<Option<String>>,
    ) -> Fetched<Page<User>> {
        let result = (|| {
            authorize(&app, &auth, Some(&tenant), Permission::UsersRead)?;
            visible_tenant(&app, &tenant)?;
            let (limit, after) = page_params(limit.0, cursor.0.as_deref())?;
            let needle = search.0.as_deref().map(str::to_lowercase);
            let matches = |u: &UserRecord| {
                needle.as_deref().is_none_or(|n| {
                    u.username.to_lowercase().contains(n)
                        || u.display_name.to_lowercase().contains(n)
                        || u.email.as_deref().is_some_and(|e| e.to_lowercase().contains(n))
                })
            };
            let items =
                app.store.read().and_then(|r| r.users(&tenant, after.as_deref(), limit, matches)).map_err(storage)?;
            let next = next_cursor(items.len(), limit, items.last().map(|u| u.id.as_str()));
            Ok(Page { items: items.into_iter().map(view).collect(), next_cursor: next })
        })();
        match result {
            Ok(page) => Fetched::Ok(Json(page), None),
            Err(p) => Fetched::problem(p),
        }
    }

    /// The dev mailbox: the tenant's messages not sent yet, newest first (at most 100). Without
    /// `email.smtp_url` every message stays here until it expires; the bodies hold sign-in
    /// codes and links, so reading them needs `users:write`.
    #[oai(path = "/admin/v1/tenants/:tenant/mailbox", method = "get", operation_id = "listMailbox")]
    async fn mailbox(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
    ) -> Fetched<Mailbox> {
        let result = (|| {
            authorize(&app, &auth, Some(&tenant), Permission::UsersWrite)?;
            visible_tenant(&app, &tenant)?;
            let messages = crate::idm::email::mailbox(&app, &tenant, 100).map_err(|e| {
                tracing::warn!("mailbox: {e}");
                Problem::new(
                    poem::http::StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the mailbox cannot be read now",
                )
            })?;
            let items = messages
                .into_iter()
                .map(|m| MailboxMessage {
                    id: m.record.id,
                    to: m.record.to,
                    subject: m.record.subject,
                    body: m.body,
                    purpose: m.record.purpose.as_str().to_string(),
                    created_at_ms: m.record.created_at_ms,
                    expires_at_ms: m.record.expires_at_ms,
                    attempts: m.record.attempts,
                })
                .collect();
            Ok(Mailbox { items })
        })();
        match result {
            Ok(m) => Fetched::Ok(Json(m), None),
            Err(p) => Fetched::problem(p),
        }
    }

    /// Create a user.
    #[oai(path = "/admin/v1/tenants/:tenant/users", method = "post", operation_id = "createUser")]
    async fn create(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        /// Makes a retry safe: the first successful answer is remembered for 24 h and replayed.
        #[oai(name = "Idempotency-Key", validator(min_length = 1, max_length = 255, pattern = r"^[\x21-\x7e]+$"))]
        _idempotency_key: Header<Option<String>>,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
        body: Json<Checked<CreateUser>>,
    ) -> Created<User> {
        let caller = match authorize(&app, &auth, Some(&tenant), Permission::UsersWrite)
            .and_then(|c| visible_tenant(&app, &tenant).map(|_| c))
        {
            Ok(c) => c,
            Err(p) => return Created::problem(p),
        };
        let b = &body.0 .0;
        let spec = spec(&b.username, &b.email, &b.display_name, b.disabled);
        match users::create(&app, &tenant, spec, b.password.as_deref(), &caller.actor()).await {
            Ok(u) => {
                let tag = etag(&u);
                Created::New(Json(view(u)), Some(tag))
            }
            Err(e) => Created::problem(problem_of(e)),
        }
    }

    /// Get a user.
    #[oai(path = "/admin/v1/tenants/:tenant/users/:user_id", method = "get", operation_id = "getUser")]
    async fn get(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
        #[oai(validator(max_length = 128, pattern = r"^[A-Za-z0-9_-]{1,128}$"))] user_id: Path<String>,
    ) -> Fetched<User> {
        match authorize(&app, &auth, Some(&tenant), Permission::UsersRead).and_then(|_| find(&app, &tenant, &user_id)) {
            Ok(u) => {
                let tag = etag(&u);
                Fetched::Ok(Json(view(u)), Some(tag))
            }
            Err(p) => Fetched::problem(p),
        }
    }

    /// Replace a user's profile (and enable or disable it). With `If-Match`, a stale ETag gets 412.
    #[oai(path = "/admin/v1/tenants/:tenant/users/:user_id", method = "put", operation_id = "updateUser")]
    async fn update(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
        #[oai(validator(max_length = 128, pattern = r"^[A-Za-z0-9_-]{1,128}$"))] user_id: Path<String>,
        /// The `ETag` the update was based on; a stale one gets 412.
        #[oai(name = "If-Match", validator(max_length = 64))]
        if_match: Header<Option<String>>,
        body: Json<Checked<UpdateUser>>,
    ) -> Replaced<User> {
        let (caller, current, held) = match authorize(&app, &auth, Some(&tenant), Permission::UsersWrite)
            .and_then(|c| find(&app, &tenant, &user_id).map(|u| (c, u)))
            .and_then(|(c, u)| may_act_on(&app, &c, &tenant, &format!("user:{}", user_id.0)).map(|held| (c, u, held)))
        {
            Ok(v) => v,
            Err(p) => return Replaced::problem(p),
        };
        let expected = match parse_etag(if_match.0.as_deref(), current.revision) {
            Ok(n) => n,
            Err(p) => return Replaced::problem(p),
        };
        let b = &body.0 .0;
        let spec = spec(&b.username, &b.email, &b.display_name, b.disabled);
        match users::update(&app, &current, spec, expected, &caller.actor(), Some(held)).await {
            Ok(u) => {
                let tag = etag(&u);
                Replaced::Ok(Json(view(u)), Some(tag))
            }
            Err(e) => Replaced::problem(problem_of(e)),
        }
    }

    /// Delete a user with its memberships and role bindings.
    #[oai(path = "/admin/v1/tenants/:tenant/users/:user_id", method = "delete", operation_id = "deleteUser")]
    async fn delete(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
        #[oai(validator(max_length = 128, pattern = r"^[A-Za-z0-9_-]{1,128}$"))] user_id: Path<String>,
    ) -> Deleted {
        let (caller, held) = match authorize(&app, &auth, Some(&tenant), Permission::UsersWrite)
            .and_then(|c| find(&app, &tenant, &user_id).map(|_| c))
            .and_then(|c| may_act_on(&app, &c, &tenant, &format!("user:{}", user_id.0)).map(|held| (c, held)))
        {
            Ok(v) => v,
            Err(p) => return Deleted::problem(p),
        };
        match users::delete(&app, &tenant, &user_id, &caller.actor(), Some(held)).await {
            Ok(()) => Deleted::NoContent,
            Err(e) => Deleted::problem(problem_of(e)),
        }
    }

    /// Set a user's password.
    #[oai(
        path = "/admin/v1/tenants/:tenant/users/:user_id/password",
        method = "post",
        operation_id = "setUserPassword"
    )]
    async fn set_password(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        /// Makes a retry safe: the first successful answer is remembered for 24 h and replayed.
        #[oai(name = "Idempotency-Key", validator(min_length = 1, max_length = 255, pattern = r"^[\x21-\x7e]+$"))]
        _idempotency_key: Header<Option<String>>,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
        #[oai(validator(max_length = 128, pattern = r"^[A-Za-z0-9_-]{1,128}$"))] user_id: Path<String>,
        body: Json<Checked<SetPassword>>,
    ) -> Done {
        let (caller, held) = match authorize(&app, &auth, Some(&tenant), Permission::UsersWrite)
            .and_then(|c| find(&app, &tenant, &user_id).map(|_| c))
            .and_then(|c| may_act_on(&app, &c, &tenant, &format!("user:{}", user_id.0)).map(|held| (c, held)))
        {
            Ok(v) => v,
            Err(p) => return Done::problem(p),
        };
        match users::set_password(&app, &tenant, &user_id, &body.0 .0.password, &caller.actor(), Some(held)).await {
            Ok(()) => Done::NoContent,
            Err(e) => Done::problem(problem_of(e)),
        }
    }
}
