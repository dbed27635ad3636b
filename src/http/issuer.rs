//! One route table for every tenant: the issuer-relative endpoints (discovery, JWKS, OAuth) are
//! routed once at the root. A request under `/t/{tenant}/` is mapped onto the same route with
//! its tenant kept as the request's [`IssuerScope`], so no endpoint is written twice; the
//! OpenAPI document lists both forms (`spec::finish`).

use poem::http::uri::{PathAndQuery, Uri};
use poem::{Endpoint, IntoResponse, Request, Response};

/// Whose issuer a request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuerScope {
    /// The `default` tenant, at the root.
    Default,
    /// Another tenant, under `/t/{tenant}` (not checked yet: handlers resolve it).
    Tenant(String),
}

impl IssuerScope {
    /// The path the issuer's routes sit under: empty for `default`, `/t/{tenant}` otherwise
    /// (for links back to a route, whose request path has lost it).
    pub fn path_prefix(&self) -> String {
        match self {
            IssuerScope::Default => String::new(),
            IssuerScope::Tenant(id) => format!("/t/{id}"),
        }
    }
}

/// The paths below an issuer that the route table serves once for every tenant.
pub const ISSUER_PREFIXES: [&str; 3] = [".well-known/", "oauth2/", "v1/auth/"];

/// The issuer-relative rest of `/t/{tenant}/{rest}`, when `rest` is one of ours.
fn split(path: &str) -> Option<(&str, &str)> {
    let (tenant, rest) = path.strip_prefix("/t/")?.split_once('/')?;
    ISSUER_PREFIXES.iter().any(|p| rest.starts_with(p)).then_some((tenant, rest))
}

/// Maps `/t/{tenant}/{rest}` onto `/{rest}` with the tenant as the request's scope; every
/// other request is the `default` tenant's.
pub async fn scope<E: Endpoint>(ep: &E, mut req: Request) -> poem::Result<Response> {
    let path = req.uri().path().to_string();
    let scope = match split(&path) {
        Some((tenant, rest)) => {
            let tail = match req.uri().query() {
                Some(q) => format!("/{rest}?{q}"),
                None => format!("/{rest}"),
            };
            let mut parts = req.uri().clone().into_parts();
            parts.path_and_query = Some(
                PathAndQuery::try_from(tail)
                    .map_err(|_| poem::Error::from_status(poem::http::StatusCode::BAD_REQUEST))?,
            );
            *req.uri_mut() =
                Uri::from_parts(parts).map_err(|_| poem::Error::from_status(poem::http::StatusCode::BAD_REQUEST))?;
            IssuerScope::Tenant(tenant.to_string())
        }
        None => IssuerScope::Default,
    };
    req.extensions_mut().insert(scope);
    ep.call(req).await.map(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn only_issuer_paths_under_a_tenant_are_mapped() {
        assert_eq!(split("/t/acme/oauth2/token"), Some(("acme", "oauth2/token")));
        assert_eq!(split("/t/acme/.well-known/jwks.json"), Some(("acme", ".well-known/jwks.json")));
        assert_eq!(split("/t/acme/v1/auth/login"), Some(("acme", "v1/auth/login")));
        assert_eq!(split("/t/acme/admin/v1/tenants"), None, "the admin API is not issuer-relative");
        assert_eq!(split("/oauth2/token"), None);
        assert_eq!(split("/t/acme"), None);
    }
}
