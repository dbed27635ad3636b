//! Who is calling the admin API, and what they may do.
//!
//! Authentication happens once per request, before anything reads the body: [`gate`] runs in
//! front of the body limit, verifies the bearer token and keeps the [`Caller`] in the request;
//! the security scheme, the handlers and the idempotency layer all take it from there.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::{Endpoint, IntoResponse, Request, Response};
use poem_openapi::auth::Bearer;
use poem_openapi::SecurityScheme;

use gatehouse_storage::HeldRoles;

use crate::app::AppState;
use crate::http::problem::Problem;
pub use crate::idm::roles::{Permission, PERMISSIONS};
use crate::idm::tokens::{self, tenant_of_issuer, unverified_issuer, AccessClaims, InvalidToken};

/// A bearer access token with the admin audience, verified by [`gate`].
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "verified_caller")]
pub struct AdminBearer(pub Arc<Caller>);

async fn verified_caller(req: &Request, _bearer: Bearer) -> Option<Arc<Caller>> {
    req.extensions().get::<Arc<Caller>>().cloned()
}

/// An authenticated admin API caller.
#[derive(Debug)]
pub struct Caller {
    pub claims: AccessClaims,
    /// Holds a token of the `system` issuer: may act on every tenant.
    pub platform: bool,
}

impl Caller {
    /// The audit actor: `admin:{tenant}:{sub}`.
    pub fn actor(&self) -> String {
        format!("admin:{}:{}", self.claims.tenant, self.claims.sub)
    }
}

fn unauthorized(why: &str) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, "invalid_token", why)
}

fn storage_unavailable() -> Problem {
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", "storage is not readable on this node")
}

/// Verifies the bearer token of a request (fail-closed): the admin audience, one of our
/// issuers, a signature by that tenant's keys, times, the deny-list and an active tenant.
pub fn authenticate(app: &AppState, req: &Request) -> Result<Caller, Problem> {
    let header = req.headers().get(poem::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let token = header
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .ok_or_else(|| unauthorized("a bearer token with the admin audience is required"))?;
    let issuer = unverified_issuer(token).ok_or_else(|| unauthorized("the bearer token is not a JWT access token"))?;
    let token_tenant = tenant_of_issuer(app, &issuer).ok_or_else(|| unauthorized("the token's issuer is not ours"))?;
    let claims = tokens::verify_access_token(app, &token_tenant, token, Some(&app.config.oauth.admin_audience))
        .map_err(|e| match e {
            InvalidToken::Unavailable => storage_unavailable(),
            other => unauthorized(&other.to_string()),
        })?;
    // A disabled tenant's tokens no longer reach the admin API.
    let active = app.store.read().and_then(|r| r.tenant(&claims.tenant)).map_err(|_| storage_unavailable())?;
    if !active.is_some_and(|t| t.status == gatehouse_storage::model::TenantStatus::Active) {
        return Err(unauthorized("the token's tenant is disabled"));
    }
    Ok(Caller { platform: claims.tenant == "system", claims })
}

/// In front of every admin operation: a request without a valid admin token gets 401 before
/// its body is read or parsed (S56). Requests the router will refuse anyway (an unknown path
/// or method) pass through to its 404 or 405.
pub async fn gate<E: Endpoint>(ep: &E, mut req: Request, app: &AppState) -> poem::Result<Response> {
    let path = req.uri().path();
    if path.starts_with("/admin/v1/") || path == "/admin/v1" {
        let routed = crate::http::spec::allowed_methods(path).is_some_and(|allowed| {
            // poem answers HEAD with the GET handler.
            let method = if req.method() == poem::http::Method::HEAD { "GET" } else { req.method().as_str() };
            allowed.split(", ").any(|m| m == method)
        });
        if routed {
            // Authenticated on local state first, so an anonymous request costs no read
            // index; then again after it, so a token revoked (or a tenant disabled) anywhere
            // before this request began is refused here too (R1, S14).
            let checked = match authenticate(app, &req) {
                Ok(_) => match app.raft.ensure_linearizable().await {
                    Ok(()) => authenticate(app, &req),
                    Err(e) => {
                        tracing::warn!("admin request: {e}");
                        let p = Problem::new(
                            poem::http::StatusCode::SERVICE_UNAVAILABLE,
                            "no_leader",
                            "no raft leader confirmed this request in time; retry shortly",
                        );
                        return Ok(p.into_response());
                    }
                },
                Err(p) => Err(p),
            };
            match checked {
                Ok(caller) => {
                    // Reads after this see every write acknowledged before the request (the
                    // leader confirmed its leadership, this node applied up to its index).
                    req.extensions_mut().insert(Arc::new(caller));
                }
                Err(p) => {
                    // Counted and audited coalesced, like any failed authentication.
                    let source = req.remote_addr().as_socket_addr().map(|a| a.ip());
                    if p.status == 401 {
                        app.limits.failed(source, None);
                        app.auth_failures.record(app.clock.now_ms(), "system", "admin", "", source, "invalid_token");
                    }
                    let challenge = match p.status {
                        401 => "Bearer realm=\"gatehouse-admin\", error=\"invalid_token\"",
                        _ => "Bearer realm=\"gatehouse-admin\"",
                    };
                    let mut resp = p.into_response();
                    let challenge = poem::http::HeaderValue::from_static(challenge);
                    resp.headers_mut().insert(poem::http::header::WWW_AUTHENTICATE, challenge);
                    return Ok(resp);
                }
            }
        }
    }
    ep.call(req).await.map(IntoResponse::into_response)
}

/// Checks that the authenticated caller may use `p` on `tenant`. A tenant the caller cannot
/// see is 404, like one that does not exist (S53).
pub fn authorize(
    app: &AppState,
    bearer: &AdminBearer,
    tenant: Option<&str>,
    p: Permission,
) -> Result<Arc<Caller>, Problem> {
    let caller = bearer.0.clone();
    if let Some(t) = tenant {
        if !caller.platform && caller.claims.tenant != t {
            return Err(Problem::not_found(format!("there is no tenant {t:?}")));
        }
    }
    let grants = crate::idm::roles::grants(app, &caller.claims.tenant, &caller.claims.roles, p)
        .map_err(|_| storage_unavailable())?;
    if !grants {
        let source = crate::app::request::current_request().and_then(|r| r.peer).map(|p| p.ip());
        let (tenant, sub) = (&caller.claims.tenant, &caller.claims.sub);
        app.auth_failures.record(app.clock.now_ms(), tenant, "admin", sub, source, "forbidden");
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this token's roles do not grant {}", p.name()),
        ));
    }
    Ok(caller)
}

/// What the caller may hand out (its roles where it holds them).
pub fn grantor(app: &AppState, caller: &Caller) -> Result<crate::idm::roles::Grantor, Problem> {
    crate::idm::roles::Grantor::of(app, &caller.claims.tenant, &caller.claims.roles).map_err(|_| storage_unavailable())
}

/// A caller may change, disable, re-credential or delete a user or client only when it could
/// grant every role that subject holds: otherwise taking the subject over would hand the
/// caller those roles (an admin setting its own key on an owner's client, say).
///
/// Answers the roles it checked: the change is then proposed guarded by them, so `apply`
/// refuses it should the subject be given more roles before it applies.
pub fn may_act_on(app: &AppState, caller: &Caller, tenant: &str, subject: &str) -> Result<HeldRoles, Problem> {
    let grantor = grantor(app, caller)?;
    let held = app.store.read().and_then(|r| r.roles_held(tenant, subject)).map_err(|_| storage_unavailable())?;
    for role in &held {
        grantor
            .may_grant(app, tenant, role)
            .map_err(|_| storage_unavailable())?
            .map_err(|why| escalation(format!("{subject} holds {role:?}, which this caller may not grant: {why}")))?;
    }
    Ok(HeldRoles { tenant: tenant.to_string(), subject: subject.to_string(), roles: held })
}

/// Deleting a scope (an organization) deletes the bindings scoped to it: the caller must be
/// able to grant each of their roles, as deleting one binding requires.
pub fn may_remove_scope(app: &AppState, caller: &Caller, tenant: &str, scope: &str) -> Result<(), Problem> {
    let grantor = grantor(app, caller)?;
    let bindings =
        app.store.read().and_then(|r| r.bindings(tenant, None, usize::MAX)).map_err(|_| storage_unavailable())?;
    let mut roles: Vec<String> =
        bindings.into_iter().filter(|b| b.scope.as_deref() == Some(scope)).map(|b| b.role).collect();
    roles.sort();
    roles.dedup();
    for role in roles {
        grantor.may_grant(app, tenant, &role).map_err(|_| storage_unavailable())?.map_err(|why| {
            escalation(format!("{scope} has {role:?} bindings, which this caller may not remove: {why}"))
        })?;
    }
    Ok(())
}

/// 403 for an attempt to grant more than the caller holds.
pub fn escalation(detail: String) -> Problem {
    Problem::new(StatusCode::FORBIDDEN, "forbidden", detail)
}

/// Platform-only operations (listing and creating tenants) are 403 for tenant admins.
pub fn require_platform(caller: &Caller) -> Result<(), Problem> {
    if caller.platform {
        Ok(())
    } else {
        Err(Problem::new(StatusCode::FORBIDDEN, "forbidden", "only platform admins may do this"))
    }
}
