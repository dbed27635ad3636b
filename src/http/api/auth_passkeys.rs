//! Passkeys under each issuer, `{issuer}/v1/auth/passkeys…`: register (signed in), sign in
//! without a name, list and delete. Thin adapters over `idm::passkeys`; the hosted page is
//! `auth_pages`.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use super::auth::{
    auth_answer, bad_request, problem_of, signed_in, tenant_for_change, too_many, user_for_factor_change,
    user_for_factor_removal, user_signed_in, FromProblem, SessionView,
};
use crate::app::AppState;
use crate::http::api::checked::Checked;
use crate::http::issuer::IssuerScope;
use crate::http::problem::Problem;
use crate::idm::auth::AuthError;
use crate::idm::passkeys;

#[derive(Tags)]
pub(super) enum PasskeyTag {
    /// Passkeys (WebAuthn discoverable credentials) of end users.
    Passkeys,
}

pub struct PasskeysApi;

/// A ceremony begun: the options for the browser, and the ceremony to hand back to finish.
#[derive(Debug, Object)]
pub struct CeremonyStarted {
    /// Sealed by the server: opaque, good for one finish within five minutes.
    pub ceremony: String,
    /// `{"publicKey": …}` for `navigator.credentials.create()` or `get()` (in the JSON form
    /// `PublicKeyCredential.parseCreationOptionsFromJSON` / `parseRequestOptionsFromJSON` read).
    pub options: serde_json::Value,
}

/// The authenticator's answer, with its ceremony.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct RegistrationAnswer {
    #[oai(validator(max_length = 16384))]
    pub ceremony: String,
    /// The `PublicKeyCredential` from `create()`, as its `toJSON()` gives it.
    pub credential: serde_json::Value,
    /// A name for the passkey (default `Passkey`).
    #[oai(validator(max_length = 100))]
    pub name: Option<String>,
}

/// The authenticator's answer to a sign-in, with its ceremony.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct SignInAnswer {
    #[oai(validator(max_length = 16384))]
    pub ceremony: String,
    /// The `PublicKeyCredential` from `get()`, as its `toJSON()` gives it.
    pub credential: serde_json::Value,
}

#[derive(Debug, Object)]
pub struct PasskeyItem {
    /// The credential id, base64url.
    pub id: String,
    pub name: String,
    pub created_at_ms: i64,
    pub last_used_ms: i64,
}

#[derive(Debug, Object)]
pub struct PasskeyList {
    pub items: Vec<PasskeyItem>,
}

fn item(p: gatehouse_storage::model::PasskeyRecord) -> PasskeyItem {
    PasskeyItem { id: p.credential_id, name: p.name, created_at_ms: p.created_at_ms, last_used_ms: p.last_used_ms }
}

auth_answer! {
    /// A ceremony begun.
    Begun {
        /// The options and the ceremony.
        #[oai(status = 200)]
        Ok(Json<CeremonyStarted>),
    }
    401 Unauthorized "Not signed in (registering needs a session).",
    403 Forbidden "A cross-site request.",
}

auth_answer! {
    /// A passkey added.
    PasskeyAdded {
        /// Added: sign in with it from now on.
        #[oai(status = 201)]
        New(Json<PasskeyItem>),
    }
    401 Unauthorized "Not signed in.",
    403 Forbidden "A cross-site request.",
    408 RequestTimeout "The body did not arrive within `http.body_read_timeout_secs`.",
    409 Conflict "The credential is registered already.",
    413 PayloadTooLarge "The body is larger than `max_body_bytes`.",
}

auth_answer! {
    /// The answer to a passkey sign-in.
    PasskeySignedIn {
        /// Signed in: a new session, and its cookie.
        #[oai(status = 200)]
        Ok(Json<SessionView>, #[oai(header = "Set-Cookie")] String),
    }
    403 Forbidden "A cross-site request.",
    408 RequestTimeout "The body did not arrive within `http.body_read_timeout_secs`.",
    413 PayloadTooLarge "The body is larger than `max_body_bytes`.",
}

auth_answer! {
    /// The signed-in user's passkeys.
    PasskeysListed {
        /// Newest first.
        #[oai(status = 200)]
        Ok(Json<PasskeyList>),
    }
    401 Unauthorized "Not signed in.",
}

auth_answer! {
    /// A passkey removed.
    PasskeyRemoved {
        /// Removed.
        #[oai(status = 204)]
        Done,
    }
    401 Unauthorized "Not signed in.",
    403 Forbidden "A cross-site request.",
}

#[OpenApi(tag = "PasskeyTag::Passkeys")]
impl PasskeysApi {
    /// Begin adding a passkey to the signed-in user (writes nothing).
    #[oai(path = "/v1/auth/passkeys/register/begin", method = "post", operation_id = "beginPasskeyRegistration")]
    async fn register_begin(&self, app: Data<&Arc<AppState>>, scope: Data<&IssuerScope>, req: &poem::Request) -> Begun {
        let user = match user_for_factor_change(&app, &scope, req).await {
            Ok(u) => u,
            Err(p) => return Begun::problem(p),
        };
        match passkeys::begin_registration(&app, &user) {
            Ok((options, ceremony)) => Begun::Ok(Json(CeremonyStarted { ceremony, options })),
            Err(e) => Begun::problem(problem_of(e)),
        }
    }

    /// Finish adding a passkey: every relying-party check, then the ceremony's challenge is
    /// spent (once).
    #[oai(path = "/v1/auth/passkeys/register/finish", method = "post", operation_id = "finishPasskeyRegistration")]
    async fn register_finish(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        body: Json<Checked<RegistrationAnswer>>,
    ) -> PasskeyAdded {
        let user = match user_for_factor_change(&app, &scope, req).await {
            Ok(u) => u,
            Err(p) => return PasskeyAdded::problem(p),
        };
        let b = &body.0 .0;
        match passkeys::finish_registration(&app, &user, &b.ceremony, b.credential.clone(), b.name.as_deref()).await {
            Ok(record) => PasskeyAdded::New(Json(item(record))),
            Err(e) => PasskeyAdded::problem(problem_of(e)),
        }
    }

    /// Begin a sign-in with a passkey; no name is asked (writes nothing).
    #[oai(path = "/v1/auth/passkeys/login/begin", method = "post", operation_id = "beginPasskeySignIn")]
    async fn login_begin(&self, app: Data<&Arc<AppState>>, scope: Data<&IssuerScope>, req: &poem::Request) -> Begun {
        let tenant = match tenant_for_change(&app, &scope, req) {
            Ok(t) => t,
            Err(p) => return Begun::problem(p),
        };
        match passkeys::begin_sign_in(&app, &tenant) {
            Ok((options, ceremony)) => Begun::Ok(Json(CeremonyStarted { ceremony, options })),
            Err(e) => Begun::problem(problem_of(e)),
        }
    }

    /// Finish a passkey sign-in: every relying-party check, the challenge spent once, the
    /// counter moved on; a new session (and cookie).
    #[oai(path = "/v1/auth/passkeys/login/finish", method = "post", operation_id = "finishPasskeySignIn")]
    async fn login_finish(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        body: Json<Checked<SignInAnswer>>,
    ) -> PasskeySignedIn {
        let tenant = match tenant_for_change(&app, &scope, req) {
            Ok(t) => t,
            Err(p) => return PasskeySignedIn::problem(p),
        };
        match passkeys::finish_sign_in(&app, &tenant, &body.ceremony, body.credential.clone()).await {
            Ok(s) => {
                let (view, cookie) = signed_in(&s);
                PasskeySignedIn::Ok(view, cookie)
            }
            Err(AuthError::RateLimited(wait)) => {
                let (p, after) = too_many(wait, "too many failed sign-ins");
                PasskeySignedIn::TooManyRequests(Json(p), after)
            }
            Err(e) => PasskeySignedIn::problem(problem_of(e)),
        }
    }

    /// The signed-in user's passkeys.
    #[oai(path = "/v1/auth/passkeys/credentials", method = "get", operation_id = "listPasskeys")]
    async fn list(&self, app: Data<&Arc<AppState>>, scope: Data<&IssuerScope>, req: &poem::Request) -> PasskeysListed {
        let user = match user_signed_in(&app, &scope, req).await {
            Ok(u) => u,
            Err(p) => return PasskeysListed::problem(p),
        };
        match passkeys::list(&app, &user) {
            Ok(all) => PasskeysListed::Ok(Json(PasskeyList { items: all.into_iter().map(item).collect() })),
            Err(e) => PasskeysListed::problem(problem_of(e)),
        }
    }

    /// Remove one of the signed-in user's passkeys.
    #[oai(path = "/v1/auth/passkeys/credentials/:id", method = "delete", operation_id = "deletePasskey")]
    async fn delete(
        &self,
        app: Data<&Arc<AppState>>,
        scope: Data<&IssuerScope>,
        req: &poem::Request,
        /// The passkey's `id` from the list.
        #[oai(validator(max_length = 1400, pattern = r"^[A-Za-z0-9_-]+$"))]
        id: poem_openapi::param::Path<String>,
    ) -> PasskeyRemoved {
        let user = match user_for_factor_removal(&app, &scope, req).await {
            Ok(u) => u,
            Err(p) => return PasskeyRemoved::problem(p),
        };
        match passkeys::delete(&app, &user, &id).await {
            Ok(true) => PasskeyRemoved::Done,
            Ok(false) => PasskeyRemoved::problem(Problem::not_found("there is no such passkey of yours")),
            Err(e) => PasskeyRemoved::problem(problem_of(e)),
        }
    }
}
