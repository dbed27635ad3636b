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

/// Declares an admin answer type: its one success answer with its real body, the problem
/// answers every admin operation can give (400, 401, 403, 404, 429, 503), and those of the
/// optional ones its operations can give, named with their description: `slow_body` (408),
/// `conflict` (409), `stale` (412), `too_large` (413), `reused_key` (422). Operations without a
/// body refuse one (400), so only those with a body can give 408 or 413. So no list claims "201 Created", and no
/// read claims a 409.
macro_rules! admin_answer {
    (
        $(#[$meta:meta])* $name:ident $(<$t:ident>)? { $($success:tt)* }
        $(slow_body: $slow_body:literal,)?
        $(conflict: $conflict:literal,)?
        $(stale: $stale:literal,)?
        $(too_large: $too_large:literal,)?
        $(reused_key: $reused_key:literal,)?
    ) => {
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
            $(
                #[doc = $slow_body]
                #[oai(status = 408, content_type = "application/problem+json")]
                RequestTimeout(Json<Problem>),
            )?
            $(
                #[doc = $conflict]
                #[oai(status = 409, content_type = "application/problem+json")]
                Conflict(Json<Problem>),
            )?
            $(
                #[doc = $stale]
                #[oai(status = 412, content_type = "application/problem+json")]
                PreconditionFailed(Json<Problem>),
            )?
            $(
                #[doc = $too_large]
                #[oai(status = 413, content_type = "application/problem+json")]
                PayloadTooLarge(Json<Problem>),
            )?
            $(
                #[doc = $reused_key]
                #[oai(status = 422, content_type = "application/problem+json")]
                UnprocessableEntity(Json<Problem>),
            )?
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
                    $(409 => {
                        let _: &str = $conflict;
                        Self::Conflict(Json(p))
                    })?
                    $(412 => {
                        let _: &str = $stale;
                        Self::PreconditionFailed(Json(p))
                    })?
                    // 408, 413, 422 and 429 come from the middleware, never from a handler.
                    503 => Self::Unavailable(Json(p)),
                    other => {
                        tracing::error!("admin API: a {other} this operation does not declare: {}", p.detail);
                        Self::Unavailable(Json(Problem::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "unavailable",
                            "this node cannot serve the request now",
                        )))
                    }
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
    /// A resource or a list of them, read.
    Fetched<T> {
        /// The resource.
        #[oai(status = 200)]
        Ok(Json<T>, #[oai(header = "ETag")] Option<String>),
    }
}

admin_answer! {
    /// A resource replaced (`PUT`, optionally under `If-Match`).
    Replaced<T> {
        /// The resource as it is now.
        #[oai(status = 200)]
        Ok(Json<T>, #[oai(header = "ETag")] Option<String>),
    }
    slow_body: "The body did not arrive within `http.body_read_timeout_secs`.",
    conflict: "The new settings do not fit the state (a username taken, the last owner disabled).",
    stale: "`If-Match` names a revision that is not the current one.",
    too_large: "The body is larger than `max_body_bytes` (refused before it is parsed).",
}

admin_answer! {
    /// A resource changed in part (`PATCH`).
    Updated<T> {
        /// The resource as it is now.
        #[oai(status = 200)]
        Ok(Json<T>, #[oai(header = "ETag")] Option<String>),
    }
    slow_body: "The body did not arrive within `http.body_read_timeout_secs`.",
    conflict: "The change is not allowed for this resource.",
    too_large: "The body is larger than `max_body_bytes` (refused before it is parsed).",
}

admin_answer! {
    /// A created resource.
    Created<T> {
        /// Created.
        #[oai(status = 201)]
        New(Json<T>, #[oai(header = "ETag")] Option<String>),
    }
    slow_body: "The body did not arrive within `http.body_read_timeout_secs`.",
    conflict: "The resource exists already, or the state does not allow this.",
    too_large: "The body is larger than `max_body_bytes` (refused before it is parsed).",
    reused_key: "The `Idempotency-Key` was used before with another request body.",
}

admin_answer! {
    /// The result of an action (`POST` that creates no resource of its own).
    Acted<T> {
        /// Done; the result.
        #[oai(status = 200)]
        Ok(Json<T>, #[oai(header = "ETag")] Option<String>),
    }
    slow_body: "The body did not arrive within `http.body_read_timeout_secs`.",
    conflict: "The state does not allow this now.",
    too_large: "The body is larger than `max_body_bytes` (refused before it is parsed).",
    reused_key: "The `Idempotency-Key` was used before with another request body.",
}

admin_answer! {
    /// An action without a result body (`POST`).
    Done {
        /// Done; no body.
        #[oai(status = 204)]
        NoContent,
    }
    slow_body: "The body did not arrive within `http.body_read_timeout_secs`.",
    conflict: "The subject changed meanwhile (it was given more roles), or the state does not allow this.",
    too_large: "The body is larger than `max_body_bytes` (refused before it is parsed).",
    reused_key: "The `Idempotency-Key` was used before with another request body.",
}

admin_answer! {
    /// A removal that nothing can stand in the way of (an organization, a membership).
    Removed {
        /// Removed; no body.
        #[oai(status = 204)]
        NoContent,
    }
}

admin_answer! {
    /// A deletion the state may refuse.
    Deleted {
        /// Deleted; no body.
        #[oai(status = 204)]
        NoContent,
    }
    conflict: "The resource cannot be deleted now (the last owner, a role still bound, a protected tenant).",
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A refusal of each kind, as `refusal` maps it.
    fn refusals() -> Vec<Problem> {
        vec![
            refusal(Rejection::UnknownClient { tenant: "t".into(), client_id: "c".into() }),
            refusal(Rejection::LastOwner { tenant: "t".into() }),
            refusal(Rejection::RolesChanged { subject: "user:u".into() }),
            refusal(Rejection::IdempotencyKeyUsed),
        ]
    }

    #[test]
    fn every_operation_that_writes_declares_what_a_refusal_becomes() {
        // The fallback for an undeclared status is a 503: no refusal may ever reach it.
        for p in refusals() {
            let status = p.status;
            assert!(!matches!(Replaced::<String>::problem(p.clone()), Replaced::Unavailable(_)), "PUT {status}");
            assert!(!matches!(Updated::<String>::problem(p.clone()), Updated::Unavailable(_)), "PATCH {status}");
            assert!(!matches!(Created::<String>::problem(p.clone()), Created::Unavailable(_)), "create {status}");
            assert!(!matches!(Acted::<String>::problem(p.clone()), Acted::Unavailable(_)), "action {status}");
            assert!(!matches!(Done::problem(p.clone()), Done::Unavailable(_)), "action without body {status}");
            assert!(!matches!(Deleted::problem(p), Deleted::Unavailable(_)), "DELETE {status}");
        }
        let stale = refusal(Rejection::RevisionMismatch { current: 3 });
        assert!(matches!(Replaced::<String>::problem(stale), Replaced::PreconditionFailed(_)));
    }
}
