//! Passkeys for end users (webauthn-rs): a signed-in user adds one; anyone signs in with one
//! without typing a name (discoverable credentials, user verification required).
//!
//! webauthn-rs performs the relying-party checks of S46 and S47 (type, challenge, origin, RP id
//! hash, UP and UV flags, algorithm, signature, counter). A ceremony's state is sealed under the
//! tenant's data key and handed to the client with the options, so starting one writes nothing
//! (a sign-in starts anonymously); finishing one spends its challenge through raft, so each
//! works once cluster-wide and the spend survives a restart. A sign-in moves the credential's
//! counter on only from the value it was checked against.

use std::sync::Arc;

use gatehouse_storage::model::{PasskeyRecord, Sealed, TenantRecord, UserRecord};
use gatehouse_storage::{Applied, Command, Rejection, SpentChallenge};
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    DiscoverableAuthentication, DiscoverableKey, Passkey, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Url, Uuid,
};
use webauthn_rs::{Webauthn, WebauthnBuilder};
use webauthn_rs_proto::ResidentKeyRequirement;

use crate::app::{AppState, NodeWriteError, ProposeError};
use crate::config::WebauthnConfig;
use crate::idm::auth::{self, AuthError, SignedIn};

/// How long a ceremony may take, begin to finish.
const CEREMONY_MS: i64 = 5 * 60 * 1000;
/// The longest sealed ceremony a client may hand back.
const MAX_CEREMONY_CHARS: usize = 16 * 1024;
pub use gatehouse_storage::model::passkey::MAX_PER_USER;

/// The relying party for `public_url`: `Ok(Err(why))` when passkeys stay off because the RP id
/// was left to the public URL and that is an IP address; `Err` when the configuration given
/// cannot work (the start stops).
pub fn relying_party(config: &WebauthnConfig, public_url: &str) -> Result<Result<Arc<Webauthn>, String>, String> {
    let origin = Url::parse(public_url).map_err(|e| format!("the public URL {public_url:?}: {e}"))?;
    let rp_id = match (&config.rp_id, origin.domain()) {
        (Some(id), _) => id.clone(),
        (None, Some(host)) => host.to_string(),
        (None, None) => {
            return Ok(Err(format!(
                "passkeys need a host name, and the public URL {public_url} has an IP address: set public_url \
                 (and webauthn.rp_id) to a name"
            )))
        }
    };
    let mut builder = WebauthnBuilder::new(&rp_id, &origin)
        .map_err(|e| format!("webauthn.rp_id {rp_id:?} does not fit the public URL {public_url}: {e}"))?
        .rp_name(&config.rp_name);
    for extra in &config.extra_origins {
        let url = Url::parse(extra).map_err(|e| format!("webauthn.extra_origins {extra:?}: {e}"))?;
        builder = builder.append_allowed_origin(&url);
    }
    let built = builder.build().map_err(|e| format!("webauthn: {e}"))?;
    Ok(Ok(Arc::new(built)))
}

fn rp(app: &AppState) -> Result<&Webauthn, AuthError> {
    app.webauthn.as_deref().map_err(|why| AuthError::PasskeysOff(why.clone()))
}

fn unavailable(e: impl std::fmt::Display) -> AuthError {
    AuthError::Write(NodeWriteError::Unavailable(e.to_string()))
}

fn refused(e: impl std::fmt::Display) -> AuthError {
    AuthError::PasskeyRefused(e.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Register,
    SignIn,
}

/// What the client carries from begin to finish, sealed: it can neither read nor change it.
#[derive(Debug, Serialize, Deserialize)]
struct Ceremony {
    kind: Kind,
    tenant: String,
    user_id: Option<String>,
    challenge: SpentChallenge,
    state: serde_json::Value,
}

fn ceremony_context(tenant: &str) -> String {
    format!("passkey-ceremony:{tenant}")
}

fn tenant_record(app: &AppState, tenant: &str) -> Result<TenantRecord, AuthError> {
    app.store.read().and_then(|r| r.tenant(tenant)).map_err(unavailable)?.ok_or(AuthError::NotSignedIn)
}

fn seal(app: &AppState, tenant: &TenantRecord, ceremony: &Ceremony) -> Result<String, AuthError> {
    let json = serde_json::to_vec(ceremony).map_err(unavailable)?;
    let sealed = app.cipher.seal(&tenant.data_key_id, &ceremony_context(&tenant.id), &json).map_err(unavailable)?;
    Ok(crate::crypto::b64url(&serde_json::to_vec(&sealed).map_err(unavailable)?))
}

/// The ceremony a client handed back, if it is ours, of `kind`, for `tenant` and not expired.
fn open(app: &AppState, tenant: &str, text: &str, kind: Kind) -> Result<Ceremony, AuthError> {
    use base64::Engine;
    if text.len() > MAX_CEREMONY_CHARS {
        return Err(AuthError::BadCeremony);
    }
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).map_err(|_| AuthError::BadCeremony)?;
    let sealed: Sealed = serde_json::from_slice(&raw).map_err(|_| AuthError::BadCeremony)?;
    let json = app.cipher.open(&sealed, &ceremony_context(tenant)).map_err(|_| AuthError::BadCeremony)?;
    let ceremony: Ceremony = serde_json::from_slice(&json).map_err(|_| AuthError::BadCeremony)?;
    if ceremony.kind != kind || ceremony.tenant != tenant || ceremony.challenge.expires_at_ms <= app.clock.now_ms() {
        return Err(AuthError::BadCeremony);
    }
    // Spent already: refused before any check runs (`apply` refuses it again, cluster-wide).
    if app.store.read().and_then(|r| r.challenge_spent(tenant, &ceremony.challenge.id)).map_err(unavailable)? {
        return Err(AuthError::BadCeremony);
    }
    Ok(ceremony)
}

fn new_challenge(app: &AppState) -> SpentChallenge {
    SpentChallenge { id: crate::clock::random_id(""), expires_at_ms: app.clock.now_ms() + CEREMONY_MS }
}

/// The WebAuthn user handle of a user: the 128 random bits of its id (`u-` and 32 hex digits).
fn user_handle(user_id: &str) -> Result<Uuid, AuthError> {
    let bytes = user_id.strip_prefix("u-").and_then(|h| hex::decode(h).ok());
    bytes
        .and_then(|b| Uuid::from_slice(&b).ok())
        .ok_or_else(|| AuthError::Invalid(vec![("user".into(), "this account cannot hold passkeys".into())]))
}

fn user_id_of(handle: Uuid) -> String {
    format!("u-{}", hex::encode(handle.as_bytes()))
}

/// The options for `navigator.credentials.create()` and the sealed ceremony to finish with.
pub fn begin_registration(app: &AppState, user: &UserRecord) -> Result<(serde_json::Value, String), AuthError> {
    let rp = rp(app)?;
    let handle = user_handle(&user.id)?;
    let held = app.store.read().and_then(|r| r.passkeys_of(&user.tenant, &user.id)).map_err(unavailable)?;
    if held.len() >= MAX_PER_USER {
        return Err(AuthError::Invalid(vec![("passkeys".into(), format!("at most {MAX_PER_USER} per user"))]));
    }
    let exclude = held
        .iter()
        .filter_map(|p| serde_json::from_str::<Passkey>(&p.passkey).ok())
        .map(|p| p.cred_id().clone())
        .collect();
    let (mut options, state) =
        rp.start_passkey_registration(handle, &user.username, &user.display_name, Some(exclude)).map_err(refused)?;
    // Discoverable credentials only: sign-in names nobody, the authenticator does.
    if let Some(selection) = options.public_key.authenticator_selection.as_mut() {
        selection.resident_key = Some(ResidentKeyRequirement::Required);
        selection.require_resident_key = true;
    }
    let tenant = tenant_record(app, &user.tenant)?;
    let ceremony = Ceremony {
        kind: Kind::Register,
        tenant: user.tenant.clone(),
        user_id: Some(user.id.clone()),
        challenge: new_challenge(app),
        state: serde_json::to_value(&state).map_err(unavailable)?,
    };
    Ok((serde_json::to_value(&options).map_err(unavailable)?, seal(app, &tenant, &ceremony)?))
}

/// Checks the authenticator's answer and adds the passkey, spending the ceremony's challenge.
pub async fn finish_registration(
    app: &AppState,
    user: &UserRecord,
    ceremony: &str,
    credential: serde_json::Value,
    name: Option<&str>,
) -> Result<PasskeyRecord, AuthError> {
    let rp = rp(app)?;
    let ceremony = open(app, &user.tenant, ceremony, Kind::Register)?;
    if ceremony.user_id.as_deref() != Some(user.id.as_str()) {
        return Err(AuthError::BadCeremony);
    }
    let answer: RegisterPublicKeyCredential = serde_json::from_value(credential).map_err(refused)?;
    let state: PasskeyRegistration = serde_json::from_value(ceremony.state).map_err(|_| AuthError::BadCeremony)?;
    let passkey = rp.finish_passkey_registration(&answer, &state).map_err(refused)?;
    let name = crate::idm::trim_ascii(name.unwrap_or("Passkey"));
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(AuthError::Invalid(vec![("name".into(), "must be 1 to 100 characters".into())]));
    }
    let now_ms = app.clock.now_ms();
    let record = PasskeyRecord {
        v: 1,
        tenant: user.tenant.clone(),
        credential_id: crate::crypto::b64url(passkey.cred_id().as_ref()),
        user_id: user.id.clone(),
        name: name.to_string(),
        passkey: serde_json::to_string(&passkey).map_err(unavailable)?,
        sign_count: 0,
        created_at_ms: now_ms,
        last_used_ms: now_ms,
    };
    let command = Command::AddPasskey { passkey: record.clone(), challenge: ceremony.challenge };
    match app.propose(&format!("user:{}", user.id), command).await {
        Ok(Applied::PasskeyAdded) => Ok(record),
        Ok(other) => Err(super::unexpected(other).into()),
        Err(ProposeError::Refused(Rejection::ChallengeUsed)) => Err(AuthError::BadCeremony),
        Err(ProposeError::Refused(Rejection::PasskeyLimit { max })) => {
            Err(AuthError::Invalid(vec![("passkeys".into(), format!("at most {max} per user"))]))
        }
        Err(e) => Err(e.into()),
    }
}

/// The options for `navigator.credentials.get()` (no credentials named: the authenticator
/// offers its own) and the sealed ceremony to finish with. Writes nothing.
pub fn begin_sign_in(app: &AppState, tenant: &TenantRecord) -> Result<(serde_json::Value, String), AuthError> {
    let rp = rp(app)?;
    let (options, state) = rp.start_discoverable_authentication().map_err(refused)?;
    let ceremony = Ceremony {
        kind: Kind::SignIn,
        tenant: tenant.id.clone(),
        user_id: None,
        challenge: new_challenge(app),
        state: serde_json::to_value(&state).map_err(unavailable)?,
    };
    Ok((serde_json::to_value(&options).map_err(unavailable)?, seal(app, tenant, &ceremony)?))
}

/// Signs in with a passkey's assertion: a full session (a passkey with user verification is
/// two factors in one).
pub async fn finish_sign_in(
    app: &AppState,
    tenant: &TenantRecord,
    ceremony: &str,
    credential: serde_json::Value,
) -> Result<SignedIn, AuthError> {
    let started = std::time::Instant::now();
    let result = sign_in(app, tenant, ceremony, credential).await;
    if matches!(result, Err(AuthError::PasskeyRefused(_))) {
        let source = crate::app::request::current_request().and_then(|r| r.peer).map(|p| p.ip());
        app.limits.failed(source, None);
        app.auth_failures.record(app.clock.now_ms(), &tenant.id, "passkey", "", source, "invalid_assertion");
    }
    auth::record_attempt(app, &tenant.id, "passkey", started, &result);
    result
}

async fn sign_in(
    app: &AppState,
    tenant: &TenantRecord,
    ceremony: &str,
    credential: serde_json::Value,
) -> Result<SignedIn, AuthError> {
    let rp = rp(app)?;
    let ceremony = open(app, &tenant.id, ceremony, Kind::SignIn)?;
    let answer: PublicKeyCredential = serde_json::from_value(credential).map_err(refused)?;
    let (handle, credential_id) = rp.identify_discoverable_authentication(&answer).map_err(refused)?;
    let credential_id = crate::crypto::b64url(credential_id);
    let reader = app.store.read().map_err(unavailable)?;
    let record = reader.passkey(&tenant.id, &credential_id).map_err(unavailable)?;
    // The credential must be the named user's (the user handle is signed by the authenticator).
    let record = record.filter(|r| r.user_id == user_id_of(handle)).ok_or_else(|| refused("unknown credential"))?;
    let user = reader.user(&tenant.id, &record.user_id).map_err(unavailable)?.ok_or_else(|| refused("no such user"))?;
    drop(reader);
    let passkey: Passkey = serde_json::from_str(&record.passkey).map_err(unavailable)?;
    let state: DiscoverableAuthentication =
        serde_json::from_value(ceremony.state).map_err(|_| AuthError::BadCeremony)?;
    let checked =
        rp.finish_discoverable_authentication(&answer, state, &[DiscoverableKey::from(&passkey)]).map_err(refused)?;
    let mut updated = passkey;
    updated.update_credential(&checked);
    let (session_id, digest) = auth::new_session_id();
    let session = auth::session_for(app, &tenant.id, &user.id, "passkey", digest);
    let command = Command::PasskeySignIn {
        tenant: tenant.id.clone(),
        credential_id,
        challenge: ceremony.challenge,
        sign_count_was: record.sign_count,
        sign_count: checked.counter(),
        passkey: serde_json::to_string(&updated).map_err(unavailable)?,
        session: session.clone(),
    };
    match app.propose(&format!("user:{}", user.id), command).await {
        Ok(Applied::SessionStarted { .. }) => Ok(SignedIn { session_id, session, user }),
        Ok(other) => Err(super::unexpected(other).into()),
        Err(ProposeError::Refused(Rejection::ChallengeUsed)) => Err(AuthError::BadCeremony),
        Err(ProposeError::Refused(
            r @ (Rejection::PasskeyCounterChanged | Rejection::UnknownPasskey | Rejection::UserDisabled { .. }),
        )) => Err(refused(r)),
        Err(e) => Err(e.into()),
    }
}

/// The signed-in user's passkeys, newest first.
pub fn list(app: &AppState, user: &UserRecord) -> Result<Vec<PasskeyRecord>, AuthError> {
    let mut all = app.store.read().and_then(|r| r.passkeys_of(&user.tenant, &user.id)).map_err(unavailable)?;
    all.sort_by_key(|p| std::cmp::Reverse(p.created_at_ms));
    Ok(all)
}

/// Removes one of the signed-in user's passkeys: false when they have no such passkey.
pub async fn delete(app: &AppState, user: &UserRecord, credential_id: &str) -> Result<bool, AuthError> {
    let command = Command::DeletePasskey {
        tenant: user.tenant.clone(),
        user_id: user.id.clone(),
        credential_id: credential_id.to_string(),
    };
    match app.propose(&format!("user:{}", user.id), command).await {
        Ok(_) => Ok(true),
        Err(ProposeError::Refused(Rejection::UnknownPasskey)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
