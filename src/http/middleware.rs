//! Middleware around every route: request ids, body size limit and read deadline, security
//! headers, error rendering and request metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use poem::http::{Method, StatusCode};
use poem::{Endpoint, IntoResponse, Request, Response};

use crate::http::problem::{render_error, FieldError, Problem};
use crate::metrics::Metrics;

/// Reads the body up to `limit` bytes before any handler parses it; larger bodies get 413, and
/// one that does not arrive within `deadline` gets 408.
pub async fn limit_body<E: Endpoint>(
    ep: &E,
    mut req: Request,
    limit: usize,
    deadline: Duration,
) -> poem::Result<Response> {
    let declared = req
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // No operation with these methods takes a body: one is refused before it is read. (A
    // method the path does not have is left to the router's 405.)
    let bodiless = matches!(*req.method(), Method::GET | Method::HEAD | Method::DELETE);
    let has_body = declared.is_some_and(|n| n > 0) || req.headers().contains_key(poem::http::header::TRANSFER_ENCODING);
    if bodiless && has_body && declared_operation(&req) {
        return Err(poem::Error::from_string(
            format!("a {} request takes no body", req.method()),
            StatusCode::BAD_REQUEST,
        ));
    }
    // A picture upload is read by its handler, after the session is checked, within its own
    // limit (5 MiB); the deadline still holds there.
    if *req.method() == Method::PUT && req.uri().path().ends_with("/v1/auth/me/avatar") {
        if declared.is_some_and(|n| n > crate::idm::profile::MAX_AVATAR_BYTES as u64) {
            return Err(too_large(crate::idm::profile::MAX_AVATAR_BYTES));
        }
        return ep.call(req).await.map(IntoResponse::into_response);
    }
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let body = req.take_body();
    let read = tokio::time::timeout(deadline, body.into_bytes_limit(limit)).await.map_err(|_| {
        poem::Error::from_string(
            format!("the request body did not arrive within {} s", deadline.as_secs()),
            StatusCode::REQUEST_TIMEOUT,
        )
    })?;
    let bytes = read.map_err(|e| match e {
        poem::error::ReadBodyError::PayloadTooLarge => too_large(limit),
        other => poem::Error::from(other),
    })?;
    // Only the admin API takes JSON bodies, and only after its gate authenticated the caller.
    let json = req.uri().path().starts_with("/admin/v1/")
        && req.content_type().is_some_and(|c| c.starts_with("application/json") || c.contains("+json"));
    if json {
        if let Some(field) = crate::http::api::checked::duplicate_member(&bytes) {
            let detail = format!("member {field:?} appears more than once");
            let mut p = Problem::new(StatusCode::BAD_REQUEST, "invalid_request", detail.clone());
            p.errors = Some(vec![FieldError { field, message: detail }]);
            return Ok(p.into_response());
        }
    }
    // A UserInfo POST may carry its token in the header alone (RFC 6750 §2.1): without a body
    // it is read as the empty form it amounts to.
    if *req.method() == Method::POST
        && bytes.is_empty()
        && req.content_type().is_none()
        && req.uri().path().ends_with("/oauth2/userinfo")
    {
        req.headers_mut().insert(
            poem::http::header::CONTENT_TYPE,
            poem::http::HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
    }
    req.set_body(bytes);
    ep.call(req).await.map(IntoResponse::into_response)
}

/// Whether the document declares the request's method on its path (`HEAD` as `GET`).
fn declared_operation(req: &Request) -> bool {
    let method = if req.method() == Method::HEAD { "GET" } else { req.method().as_str() };
    crate::http::spec::allowed_methods(req.uri().path()).is_some_and(|allow| allow.split(", ").any(|m| m == method))
}

fn too_large(limit: usize) -> poem::Error {
    poem::Error::from_string(format!("the request body exceeds {limit} bytes"), StatusCode::PAYLOAD_TOO_LARGE)
}

/// Renders errors in the format of the surface they came from, sets the security headers and
/// the request id on every answer, and counts every request.
pub async fn observe<E: Endpoint>(ep: &E, req: Request, metrics: Arc<Metrics>, hsts: bool) -> poem::Result<Response> {
    let started = Instant::now();
    let path = req.uri().path().to_string();
    let method = req.method().as_str().to_string();
    let oauth = path.contains("/oauth2/");
    let context = crate::app::request::RequestContext {
        id: crate::clock::random_id(""),
        peer: req.remote_addr().as_socket_addr().copied(),
    };
    let request_id = context.id.clone();
    let span = tracing::info_span!("request", id = %request_id, method = %method, route = route_label(&path));
    let served = tracing::Instrument::instrument(crate::app::request::serve(context, ep.call(req)), span).await;
    let resp = match served {
        Ok(resp) => resp.into_response(),
        Err(err) => render_error(err, oauth),
    };
    let mut resp = ensure_problem_for_bare_errors(resp, oauth).await;
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED && !resp.headers().contains_key(poem::http::header::ALLOW) {
        if let Some(allow) = crate::http::spec::allowed_methods(&path).and_then(|a| a.parse().ok()) {
            resp.headers_mut().insert(poem::http::header::ALLOW, allow);
        }
    }
    secure_headers(&mut resp, &path, hsts);
    if let Ok(id) = request_id.parse() {
        resp.headers_mut().insert("x-request-id", id);
    }
    let route = route_label(&path);
    metrics.observe_request(route, &method, resp.status().as_u16(), started.elapsed());
    Ok(resp)
}

/// The general per-source ceiling and the failure budget of the OAuth and admin endpoints:
/// 429 with `Retry-After`, in the surface's error format, before anything else is done.
pub async fn rate_limit<E: Endpoint>(ep: &E, req: Request, app: &crate::app::AppState) -> poem::Result<Response> {
    let path = req.uri().path();
    let limited = path.contains("/oauth2/")
        || path.starts_with("/admin/v1")
        || path.contains("/v1/auth/")
        || path.starts_with("/cluster/v1/");
    if let (true, Some(source)) = (limited, req.remote_addr().as_socket_addr().map(|a| a.ip())) {
        if let Err(wait) = app.limits.admit(source) {
            return Ok(too_many_requests(path.contains("/oauth2/"), wait));
        }
    }
    ep.call(req).await.map(IntoResponse::into_response)
}

/// A 429 answer in the surface's format.
pub fn too_many_requests(oauth: bool, wait: crate::app::limits::RetryAfter) -> Response {
    let detail = format!("too many requests from this source; retry after {} s", wait.secs());
    let mut resp = if oauth {
        crate::http::problem::OAuthError::new(crate::idm::protocol::OAuthErrorCode::TemporarilyUnavailable, detail)
            .into_poem_response(StatusCode::TOO_MANY_REQUESTS)
    } else {
        Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", detail).into_response()
    };
    if let Ok(v) = wait.secs().to_string().parse() {
        resp.headers_mut().insert(poem::http::header::RETRY_AFTER, v);
    }
    resp
}

/// The policy of the HTML pages: scripts and styles only from this origin (styles may be
/// inline: the docs viewer injects them), nothing framed, no plugins, no base rewriting.
pub const HTML_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; \
frame-ancestors 'none'; base-uri 'none'; object-src 'none'; form-action 'self'";

/// The policy of every other answer (JSON documents, problems, metrics).
pub const DATA_CSP: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// Headers every answer carries (S51): no MIME sniffing, no referrer, nothing cached unless
/// the answer says otherwise (discovery, JWKS and the document are public and cacheable), the
/// HTML policy on pages, and HSTS where the public URL is not a loopback one.
fn secure_headers(resp: &mut Response, path: &str, hsts: bool) {
    use poem::http::header::{self, HeaderValue};
    let html = resp.content_type().is_some_and(|c| c.starts_with("text/html"));
    let headers = resp.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    let public_document = path.contains("/.well-known/") || path == "/openapi.json" || path.starts_with("/docs");
    if !public_document && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if html {
        // A page whose form posts elsewhere (the form_post response mode) sets its own, as
        // strict but for that form's target.
        if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
            headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(HTML_CSP));
        }
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    } else {
        // A JSON or text answer opened as a page runs nothing and is never framed.
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(DATA_CSP));
    }
    if hsts {
        headers
            .insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000; includeSubDomains"));
    }
}

/// Some of poem's own answers (405 for an undeclared method) arrive as empty responses
/// rather than errors; give them a problem document too.
async fn ensure_problem_for_bare_errors(resp: Response, oauth: bool) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) || resp.content_type().is_some() {
        return resp;
    }
    let err = poem::Error::from_status(status);
    let mut out = render_error(err, oauth);
    for (name, value) in resp.headers() {
        if name == poem::http::header::ALLOW {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// A bounded set of route names for metrics labels (never the raw path).
pub fn route_label(path: &str) -> &'static str {
    let rest = match path.strip_prefix("/t/") {
        Some(r) => r.split_once('/').map_or("", |(_, tail)| tail),
        None => path.trim_start_matches('/'),
    };
    match rest {
        "health" => "/health",
        "ready" => "/ready",
        "metrics" => "/metrics",
        "openapi.json" => "/openapi.json",
        "docs" | "docs/" => "/docs",
        ".well-known/openid-configuration" => "{issuer}/.well-known/openid-configuration",
        ".well-known/oauth-authorization-server" => "{issuer}/.well-known/oauth-authorization-server",
        "oauth2/introspect" => "{issuer}/oauth2/introspect",
        "oauth2/revoke" => "{issuer}/oauth2/revoke",
        ".well-known/jwks.json" => "{issuer}/.well-known/jwks.json",
        "oauth2/authorize" => "{issuer}/oauth2/authorize",
        "oauth2/token" => "{issuer}/oauth2/token",
        "oauth2/userinfo" => "{issuer}/oauth2/userinfo",
        "oauth2/logout" => "{issuer}/oauth2/logout",
        r if r.starts_with("admin/v1/") || r == "admin/v1" => "/admin/v1",
        "cluster/v1/join" => "/cluster/v1/join",
        // RFC 8414's form for a tenant's issuer: the path after the well-known name.
        r if r.strip_prefix(".well-known/oauth-authorization-server/t/").is_some_and(|t| !t.contains('/')) => {
            "/.well-known/oauth-authorization-server/t/{tenant}"
        }
        r => r.strip_prefix("v1/auth/").map_or("other", auth_route_label),
    }
}

/// The label of an end-user route, `{issuer}/v1/auth/…` with ids as placeholders (a fixed set,
/// so a made-up path cannot grow the metrics).
fn auth_route_label(rest: &str) -> &'static str {
    macro_rules! routes {
        ($($route:literal),* $(,)?) => { [$(($route, concat!("{issuer}/v1/auth/", $route))),*] };
    }
    const EXACT: [(&str, &str); 27] = routes!(
        "register",
        "login",
        "logout",
        "session",
        "sessions",
        "sessions/end-others",
        "password/forgot",
        "password/reset",
        "email/verify",
        "email-otp/request",
        "email-otp/verify",
        "magic-link/request",
        "magic-link/consume",
        "mfa/totp/enroll",
        "mfa/totp/confirm",
        "mfa/totp/challenge",
        "mfa/totp/disable",
        "passkeys",
        "passkeys/register/begin",
        "passkeys/register/finish",
        "passkeys/login/begin",
        "passkeys/login/finish",
        "passkeys/credentials",
        "me",
        "me/avatar",
        "sign-in",
        "consent",
    );
    if let Some((_, label)) = EXACT.iter().find(|(route, _)| *route == rest) {
        return label;
    }
    let one_segment_after =
        |prefix: &str| rest.strip_prefix(prefix).is_some_and(|id| !id.is_empty() && !id.contains('/'));
    if one_segment_after("sessions/") {
        "{issuer}/v1/auth/sessions/{session}"
    } else if one_segment_after("passkeys/credentials/") {
        "{issuer}/v1/auth/passkeys/credentials/{id}"
    } else if rest.strip_prefix("avatars/").is_some_and(|r| r.split('/').count() == 2) {
        "{issuer}/v1/auth/avatars/{user}/{digest}"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::route_label;

    #[test]
    fn every_documented_route_has_its_own_label_and_made_up_paths_share_one() {
        let document: serde_json::Value = serde_json::from_str(include_str!("../../openapi/gatehouse.json")).unwrap();
        let unlabelled: Vec<&String> = document["paths"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|path| route_label(&path.replace("{tenant}", "acme").replace(['{', '}'], "")) == "other")
            .collect();
        assert!(unlabelled.is_empty(), "{unlabelled:?}");
        assert_eq!(route_label("/t/acme/v1/auth/sessions/s1"), "{issuer}/v1/auth/sessions/{session}");
        assert_eq!(route_label("/v1/auth/avatars/u-1/abc"), "{issuer}/v1/auth/avatars/{user}/{digest}");
        for made_up in ["/v1/auth/sessions/a/b", "/v1/auth/nothing", "/v1/auth/", "/t/acme/v1/authx/login"] {
            assert_eq!(route_label(made_up), "other", "{made_up}");
        }
    }
}
