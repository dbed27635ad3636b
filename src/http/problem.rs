//! Errors on the wire: RFC 7807 problem documents for REST surfaces, RFC 6749 error objects
//! for OAuth endpoints. The one place where internal errors become responses.

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::Object;

use crate::idm::protocol::OAuthErrorCode;

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// An RFC 7807 problem document.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Problem")]
pub struct Problem {
    /// `urn:gatehouse:problem:<code>`.
    #[oai(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// For validation failures: which fields and why.
    #[oai(skip_serializing_if_is_none)]
    pub errors: Option<Vec<FieldError>>,
}

#[derive(Debug, Clone, Object)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Problem {
        Problem {
            type_: format!("urn:gatehouse:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: None,
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub fn into_poem_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = poem_openapi::types::ToJSON::to_json_string(&self);
        Response::builder().status(status).content_type(PROBLEM_CONTENT_TYPE).body(body)
    }
}

/// An RFC 6749 section 5.2 error object.
#[derive(Debug, Clone, Object)]
pub struct OAuthError {
    /// An RFC 6749 error code such as `invalid_request` or `unsupported_grant_type`.
    pub error: String,
    pub error_description: String,
}

impl OAuthError {
    pub fn new(error: OAuthErrorCode, description: impl Into<String>) -> OAuthError {
        OAuthError { error: error.as_str().to_string(), error_description: description.into() }
    }

    pub fn into_poem_response(self, status: StatusCode) -> Response {
        let body = poem_openapi::types::ToJSON::to_json_string(&self);
        Response::builder()
            .status(status)
            .content_type("application/json")
            .header("Cache-Control", "no-store")
            .header("Pragma", "no-cache")
            .body(body)
    }
}

/// Renders an error that escaped the handlers (routing, parsing, limits) in the surface's format.
pub fn render_error(err: poem::Error, oauth_surface: bool) -> Response {
    let status = err.status();
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let detail = if status.is_server_error() {
        tracing::error!("request failed: {err}");
        "the server could not complete the request".to_string()
    } else {
        err.to_string()
    };
    // Unknown paths, 405, 408 and 413 are problem documents on every surface; malformed OAuth
    // requests are RFC 6749 errors.
    let generic = matches!(
        status,
        StatusCode::NOT_FOUND
            | StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::REQUEST_TIMEOUT
    );
    if oauth_surface && status.is_client_error() && !generic {
        return OAuthError::new(OAuthErrorCode::InvalidRequest, detail).into_poem_response(StatusCode::BAD_REQUEST);
    }
    let mut problem = Problem::new(status, code, detail.clone());
    if let Some(field) = field_of_parse_error(&err) {
        problem.errors = Some(vec![FieldError { field, message: detail }]);
    }
    problem.into_response()
}

/// poem-openapi names the parameter or body that failed to parse; surface it as a field.
fn field_of_parse_error(err: &poem::Error) -> Option<String> {
    if let Some(e) = err.downcast_ref::<poem_openapi::error::ParseParamError>() {
        return Some(e.name.to_string());
    }
    if err.is::<poem_openapi::error::ParseRequestPayloadError>() {
        return Some("body".into());
    }
    None
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        self.into_poem_response()
    }
}
