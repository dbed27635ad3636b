//! Middleware around every route: body size limit, error rendering and request metrics.

use std::sync::Arc;
use std::time::Instant;

use poem::http::StatusCode;
use poem::{Endpoint, IntoResponse, Request, Response};

use crate::http::problem::render_error;
use crate::metrics::Metrics;

/// Reads the body up to `limit` bytes before any handler parses it; larger bodies get 413.
pub async fn limit_body<E: Endpoint>(ep: &E, mut req: Request, limit: usize) -> poem::Result<Response> {
    let declared = req
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let body = req.take_body();
    let bytes = body.into_bytes_limit(limit).await.map_err(|e| match e {
        poem::error::ReadBodyError::PayloadTooLarge => too_large(limit),
        other => poem::Error::from(other),
    })?;
    req.set_body(bytes);
    ep.call(req).await.map(IntoResponse::into_response)
}

fn too_large(limit: usize) -> poem::Error {
    poem::Error::from_string(format!("the request body exceeds {limit} bytes"), StatusCode::PAYLOAD_TOO_LARGE)
}

/// Renders errors in the format of the surface they came from and counts every request.
pub async fn observe<E: Endpoint>(ep: &E, req: Request, metrics: Arc<Metrics>) -> poem::Result<Response> {
    let started = Instant::now();
    let path = req.uri().path().to_string();
    let method = req.method().as_str().to_string();
    let oauth = path.contains("/oauth2/");
    let resp = match ep.call(req).await {
        Ok(resp) => resp.into_response(),
        Err(err) => render_error(err, oauth),
    };
    let mut resp = ensure_problem_for_bare_errors(resp, oauth).await;
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED && !resp.headers().contains_key(poem::http::header::ALLOW) {
        if let Some(allow) = crate::http::spec::allowed_methods(&path).and_then(|a| a.parse().ok()) {
            resp.headers_mut().insert(poem::http::header::ALLOW, allow);
        }
    }
    let route = route_label(&path);
    metrics.observe_request(route, &method, resp.status().as_u16(), started.elapsed());
    Ok(resp)
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
        ".well-known/jwks.json" => "{issuer}/.well-known/jwks.json",
        "oauth2/authorize" => "{issuer}/oauth2/authorize",
        "oauth2/token" => "{issuer}/oauth2/token",
        _ => "other",
    }
}
