//! Who is calling the admin API, and what they may do.

use poem_openapi::auth::Bearer;
use poem_openapi::SecurityScheme;

use crate::http::problem::Problem;
pub use crate::idm::roles::{Permission, PERMISSIONS};
use crate::idm::tokens::{self, tenant_of_issuer, unverified_issuer, AccessClaims, InvalidToken};
use crate::node::AppState;

/// A bearer access token with the admin audience.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT")]
pub struct AdminBearer(pub Bearer);

/// An authenticated admin API caller.
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
    Problem::new(poem::http::StatusCode::UNAUTHORIZED, "invalid_token", why)
}

/// Authenticates the bearer token (fail-closed) and checks that it may use `p` on `tenant`.
/// A tenant the caller cannot see is 404, like one that does not exist (S53).
pub fn authorize(app: &AppState, bearer: &AdminBearer, tenant: Option<&str>, p: Permission) -> Result<Caller, Problem> {
    let token = bearer.0.token.as_str();
    let issuer = unverified_issuer(token).ok_or_else(|| unauthorized("the bearer token is not a JWT access token"))?;
    let token_tenant = tenant_of_issuer(app, &issuer).ok_or_else(|| unauthorized("the token's issuer is not ours"))?;
    let claims = tokens::verify_access_token(app, &token_tenant, token, Some(&app.config.oauth.admin_audience))
        .map_err(|e| match e {
            InvalidToken::Unavailable => Problem::new(
                poem::http::StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "storage is not readable on this node",
            ),
            other => unauthorized(&other.to_string()),
        })?;
    // A disabled tenant's tokens no longer reach the admin API.
    let active = app.store.read().and_then(|r| r.tenant(&claims.tenant)).map_err(|_| {
        Problem::new(
            poem::http::StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "storage is not readable on this node",
        )
    })?;
    if !active.is_some_and(|t| t.status == gatehouse_storage::model::TenantStatus::Active) {
        return Err(unauthorized("the token's tenant is disabled"));
    }
    let caller = Caller { platform: claims.tenant == "system", claims };
    if let Some(t) = tenant {
        if !caller.platform && caller.claims.tenant != t {
            return Err(Problem::not_found(format!("there is no tenant {t:?}")));
        }
    }
    let grants = crate::idm::roles::grants(app, &caller.claims.tenant, &caller.claims.roles, p).map_err(|_| {
        Problem::new(
            poem::http::StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "storage is not readable on this node",
        )
    })?;
    if !grants {
        return Err(Problem::new(
            poem::http::StatusCode::FORBIDDEN,
            "forbidden",
            format!("this token's roles do not grant {}", p.name()),
        ));
    }
    Ok(caller)
}

/// Platform-only operations (listing and creating tenants) are 403 for tenant admins.
pub fn require_platform(caller: &Caller) -> Result<(), Problem> {
    if caller.platform {
        Ok(())
    } else {
        Err(Problem::new(poem::http::StatusCode::FORBIDDEN, "forbidden", "only platform admins may do this"))
    }
}
