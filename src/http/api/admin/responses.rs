//! Answers shared by the admin API's operations, and the mapping of use-case errors to
//! problem documents (the one place where they become HTTP).

use poem::http::StatusCode;
use poem_openapi::payload::Json;
use poem_openapi::types::{ParseFromJSON, ToJSON};
use poem_openapi::{ApiResponse, Object};

use gatehouse_storage::Rejection;

use crate::app::NodeWriteError;
use crate::http::problem::{FieldError, Problem};

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

/// Declares an admin answer type: its success answer, then the problem answers every admin
/// operation shares, so each operation's document lists the one success it gives (a list
/// never claims "201 Created" or "204 Deleted") with its real body.
macro_rules! admin_answer {
    ($(#[$meta:meta])* $name:ident $(<$t:ident>)? { $($success:tt)* }) => {
        $(#[$meta])*
        #[derive(ApiResponse)]
        #[oai(bad_request_handler = "bad_request")]
        pub enum $name $(<$t: ToJSON + ParseFromJSON + Send + Sync>)? {
            $($success)*
            /// Invalid input; `errors` names the fields.
            #[oai(status = 400, content_type = "application/problem+json")]
            BadRequest(Json<Problem>),
            /// No valid bearer token with the admin audience.
            #[oai(status = 401, content_type = "application/problem+json")]
            Unauthorized(Json<Problem>, #[oai(header = "WWW-Authenticate")] String),
            /// The token's roles do not grant this.
            #[oai(status = 403, content_type = "application/problem+json")]
            Forbidden(Json<Problem>),
            /// No such resource, or one the caller cannot see.
            #[oai(status = 404, content_type = "application/problem+json")]
            NotFound(Json<Problem>),
            /// The resource exists already, or the state does not allow this.
            #[oai(status = 409, content_type = "application/problem+json")]
            Conflict(Json<Problem>),
            /// `If-Match` names a revision that is no longer current.
            #[oai(status = 412, content_type = "application/problem+json")]
            PreconditionFailed(Json<Problem>),
            /// The body is larger than `max_body_bytes` (refused before it is parsed).
            #[oai(status = 413, content_type = "application/problem+json")]
            PayloadTooLarge(Json<Problem>),
            /// The `Idempotency-Key` was used before with another request body.
            #[oai(status = 422, content_type = "application/problem+json")]
            UnprocessableEntity(Json<Problem>),
            /// Too many requests, or too many failed authentications, from this source; retry
            /// after `Retry-After` seconds.
            #[oai(status = 429, content_type = "application/problem+json")]
            TooManyRequests(Json<Problem>, #[oai(header = "Retry-After")] String),
            /// This node cannot serve the request now.
            #[oai(status = 503, content_type = "application/problem+json")]
            Unavailable(Json<Problem>),
        }

        impl $(<$t: ToJSON + ParseFromJSON + Send + Sync>)? FromProblem for $name $(<$t>)? {
            fn problem(p: Problem) -> Self {
                match p.status {
                    400 => Self::BadRequest(Json(p)),
                    401 => Self::Unauthorized(Json(p), UNAUTHORIZED_CHALLENGE.into()),
                    403 => Self::Forbidden(Json(p)),
                    404 => Self::NotFound(Json(p)),
                    409 => Self::Conflict(Json(p)),
                    412 => Self::PreconditionFailed(Json(p)),
                    _ => Self::Unavailable(Json(p)),
                }
            }
        }

        impl $(<$t: ToJSON + ParseFromJSON + Send + Sync>)? $name $(<$t>)? {
            pub fn problem(p: Problem) -> Self {
                <Self as FromProblem>::problem(p)
            }
        }
    };
}

/// An answer built from a problem document.
pub trait FromProblem {
    fn problem(p: Problem) -> Self;
}

const UNAUTHORIZED_CHALLENGE: &str = "Bearer realm=\"gatehouse-admin\", error=\"invalid_token\"";

admin_answer! {
    /// A resource or a list of them.
    Fetched<T> {
        /// The resource.
        #[oai(status = 200)]
        Ok(Json<T>, #[oai(header = "ETag")] Option<String>),
    }
}

admin_answer! {
    /// A created resource.
    Created<T> {
        /// Created.
        #[oai(status = 201)]
        New(Json<T>, #[oai(header = "ETag")] Option<String>),
    }
}

admin_answer! {
    /// A deletion or another action without a body.
    Deleted {
        /// Done; no body.
        #[oai(status = 204)]
        NoContent,
    }
}

/// poem-openapi's own parse errors (body, path, query) as problem documents naming the field.
pub fn bad_request<R: FromProblem>(err: poem::Error) -> R {
    if err.is::<poem_openapi::error::AuthorizationError>() {
        return R::problem(Problem::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "a bearer token with the admin audience is required",
        ));
    }
    let detail = err.to_string();
    let field = field_from_parse_error(&err, &detail);
    let mut p = Problem::new(StatusCode::BAD_REQUEST, "invalid_request", detail.clone());
    p.errors = Some(vec![FieldError { field, message: detail }]);
    R::problem(p)
}

/// The field a poem-openapi parse error is about: the parameter's name, or for a JSON body the
/// member its message names (`field `name` verification failed…`, `unknown field "x"`).
fn field_from_parse_error(err: &poem::Error, detail: &str) -> String {
    if let Some(e) = err.downcast_ref::<poem_openapi::error::ParseParamError>() {
        return e.name.to_string();
    }
    for marker in ["field `", "field \"", "property `", "member `"] {
        if let Some(rest) = detail.split(marker).nth(1) {
            let name: String = rest.chars().take_while(|c| *c != '`' && *c != '"').collect();
            if !name.is_empty() {
                return name;
            }
        }
    }
    "body".into()
}

pub fn invalid(errors: Vec<(String, String)>) -> Problem {
    let detail = errors.iter().map(|(f, m)| format!("{f}: {m}")).collect::<Vec<_>>().join("; ");
    let mut p = Problem::new(StatusCode::BAD_REQUEST, "validation_failed", detail);
    p.errors = Some(errors.into_iter().map(|(field, message)| FieldError { field, message }).collect());
    p
}

/// 409 for a body that names something that does not exist (the request is well formed but
/// does not fit the current state), naming the field. Not 404: the resource addressed by the
/// path does exist.
pub fn missing(field: &str, detail: String) -> Problem {
    let mut p = Problem::new(StatusCode::CONFLICT, "unknown_reference", detail.clone());
    p.errors = Some(vec![FieldError { field: field.into(), message: detail }]);
    p
}

/// The one mapping from a refusal of the state machine to a problem document: what is absent
/// is 404, a stale revision is 412, every other refusal a 409 named by its code.
pub fn refusal(r: Rejection) -> Problem {
    let absent = |what: &str, id: &str| Problem::not_found(format!("there is no {what} {id:?}"));
    match r {
        Rejection::RevisionMismatch { current } => Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            format!("the resource changed since it was read; its current ETag is \"r{current}\""),
        ),
        Rejection::UnknownTenant { id } => absent("tenant", &id),
        Rejection::UnknownClient { client_id, .. } => absent("client", &client_id),
        Rejection::UnknownUser { id, .. } => absent("user", &id),
        Rejection::UnknownOrganization { id, .. } => absent("organization", &id),
        Rejection::UnknownRole { role } => absent("role", &role),
        Rejection::UnknownBinding { id, .. } => absent("binding", &id),
        Rejection::UnknownSigningKey { kid, .. } => absent("signing key", &kid),
        Rejection::NotAMember { user_id, .. } => Problem::not_found(format!("user {user_id:?} is not a member")),
        other => conflict(other.code(), other.to_string()),
    }
}

pub fn conflict(code: &str, detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::CONFLICT, code, detail)
}

pub fn unavailable(detail: impl std::fmt::Display) -> Problem {
    tracing::warn!("admin API: {detail}");
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "this node cannot serve the request now")
}

pub fn write_failed(e: NodeWriteError) -> Problem {
    unavailable(e)
}

pub fn storage(e: gatehouse_storage::StoreError) -> Problem {
    unavailable(e)
}

/// A page of a list.
#[derive(Debug, Object)]
#[oai(rename_all = "snake_case")]
pub struct Page<T: ToJSON + ParseFromJSON + Send + Sync> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub next_cursor: Option<String>,
}

/// Checks `limit` and decodes `cursor`: the last id of the previous page, base64url. A cursor
/// this API did not issue still names a position (its bytes, read leniently), so it pages from
/// there rather than failing.
pub fn page_params(limit: Option<u32>, cursor: Option<&str>) -> Result<(usize, Option<String>), Problem> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(invalid(vec![("limit".into(), format!("must be between 1 and {MAX_LIMIT}"))]));
    }
    let after = cursor.map(|c| match crate::crypto::b64url_decode(c) {
        Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        None => c.to_string(),
    });
    Ok((limit as usize, after))
}

/// The cursor after `last`, when the page was full.
pub fn next_cursor(items_len: usize, limit: usize, last: Option<&str>) -> Option<String> {
    (items_len == limit).then_some(()).and(last).map(|l| crate::crypto::b64url(l.as_bytes()))
}

/// The revision the request's `If-Match` names (`"r{n}"` or `W/"r{n}"`), or `current` without
/// one. An `If-Match` that names no revision of this resource, or not its current one (as
/// `"r18446744073709551615"`, which no counter reaches), cannot match: 412, before anything
/// computes the next revision. `apply` checks the revision again, atomically.
pub fn parse_etag(if_match: Option<&str>, current: u64) -> Result<u64, Problem> {
    let Some(value) = if_match else { return Ok(current) };
    let named: Option<u64> = Some(value)
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|v| v.strip_prefix('r'))
        .and_then(|n| n.parse().ok());
    match named {
        Some(n) if n == current && n < u64::MAX => Ok(n),
        Some(_) => Err(Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            "If-Match names a revision that is no longer current",
        )),
        None => Err(Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            "If-Match names no revision of this resource",
        )),
    }
}
