//! CORS for the sign-in API, `{issuer}/v1/auth/…`: browser front ends on the origins a tenant
//! lists (`cors_origins`) may call it with credentials. A listed origin gets
//! `Access-Control-Allow-Origin` set to itself (never `*`), `Access-Control-Allow-Credentials:
//! true` and `Vary: Origin`, and its preflight is answered here. An unlisted origin gets no CORS
//! header, so the browser keeps the answer from its page. Nothing else (the admin API, OAuth,
//! the OIDC endpoints) answers CORS.

use poem::http::{header, HeaderValue, Method, StatusCode};
use poem::{Endpoint, IntoResponse, Request, Response};

use crate::app::AppState;
use crate::http::problem::Problem;

const ALLOWED_METHODS: &str = "GET, POST, PUT, PATCH, DELETE";
const ALLOWED_HEADERS: &str = "content-type";
const PREFLIGHT_MAX_AGE_SECS: &str = "600";

/// The tenant whose sign-in API `path` addresses.
fn tenant_of_path(path: &str) -> Option<&str> {
    if path.starts_with("/v1/auth/") {
        return Some("default");
    }
    let (tenant, rest) = path.strip_prefix("/t/")?.split_once('/')?;
    rest.starts_with("v1/auth/").then_some(tenant)
}

/// Whether `tenant` lists `origin` (compared as the tenant stores them: lowercase).
pub fn listed(app: &AppState, tenant: &str, origin: &str) -> bool {
    let origin = origin.to_ascii_lowercase();
    matches!(app.store.read().and_then(|r| r.tenant(tenant)), Ok(Some(t)) if t.cors_origins.contains(&origin))
}

fn allow(resp: &mut Response, origin: &HeaderValue) {
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    h.append(header::VARY, HeaderValue::from_static("Origin"));
}

pub async fn cors<E: Endpoint>(ep: &E, req: Request, app: &AppState) -> poem::Result<Response> {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let tenant = tenant_of_path(req.uri().path()).map(str::to_string);
    let (Some(origin), Some(tenant)) = (origin, tenant) else {
        return ep.call(req).await.map(IntoResponse::into_response);
    };
    let own =
        origin.to_str().is_ok_and(|o| o.eq_ignore_ascii_case(&crate::http::api::auth::public_origin(&app.public_url)));
    if own {
        return ep.call(req).await.map(IntoResponse::into_response);
    }
    let allowed = origin.to_str().is_ok_and(|o| listed(app, &tenant, o));
    let preflight =
        req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        if !allowed {
            let p = Problem::new(StatusCode::FORBIDDEN, "cors_origin_not_allowed", "this origin is not allowed here");
            return Ok(p.into_response());
        }
        let mut resp = Response::builder().status(StatusCode::NO_CONTENT).finish();
        allow(&mut resp, &origin);
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOWED_METHODS));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOWED_HEADERS));
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(PREFLIGHT_MAX_AGE_SECS));
        return Ok(resp);
    }
    let mut resp = ep.call(req).await.map(IntoResponse::into_response)?;
    if allowed {
        allow(&mut resp, &origin);
        resp.headers_mut().insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("retry-after"));
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::tenant_of_path;

    #[test]
    fn only_the_sign_in_api_is_shared() {
        assert_eq!(tenant_of_path("/v1/auth/session"), Some("default"));
        assert_eq!(tenant_of_path("/t/acme/v1/auth/login"), Some("acme"));
        assert_eq!(tenant_of_path("/oauth2/token"), None);
        assert_eq!(tenant_of_path("/admin/v1/tenants"), None);
        assert_eq!(tenant_of_path("/t/acme/oauth2/token"), None);
    }
}
