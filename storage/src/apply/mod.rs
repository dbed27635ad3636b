//! `apply`: the deterministic state transition of one command.
//!
//! Each noun has one file holding, per command, its check and its write side by side: a
//! planner reads the tables and either refuses or returns the [`Write`] to do. A write takes
//! the tables mutably and can fail only with a [`StoreError`], never refuse, so a refusal
//! always comes before the first change and a command never half-applies. Callers may apply
//! many commands in one write transaction (group commit); a [`StoreError`] aborts that whole
//! transaction.

mod access;
mod clients;
mod cluster;
mod codes;
mod email;
mod idempotency;
mod lockouts;
mod mfa;
mod passkeys;
mod refresh;
mod sessions;
mod tenants;
mod tokens;
mod users;

use redb::{Table, WriteTransaction};

use crate::audit::{self, AuditDraft};
use crate::command::{Applied, Command, Outcome, Proposal, Rejection};
use crate::model::{
    AuthorizationCodeRecord, AvatarRecord, BindingRecord, ClientRecord, ConsentRecord, DataKeyRecord, EmailTokenRecord,
    IdempotentResponse, LockoutRecord, MembershipRecord, OrganizationRecord, OutboxRecord, PasskeyRecord,
    RefreshFamilyRecord, RoleRecord, SessionRecord, SigningKeyRecord, TenantRecord, UserRecord,
};
use crate::table::{Expiring, Rows};
use crate::{tables, StoreError};

/// The replicated tables, open for one command.
pub(crate) struct Tables<'t> {
    meta: Table<'t, &'static str, &'static [u8]>,
    audit: Table<'t, u64, &'static [u8]>,
    tenants: Rows<'t, TenantRecord>,
    data_keys: Rows<'t, DataKeyRecord>,
    signing_keys: Rows<'t, SigningKeyRecord>,
    clients: Rows<'t, ClientRecord>,
    roles: Rows<'t, RoleRecord>,
    bindings: Rows<'t, BindingRecord>,
    users: Rows<'t, UserRecord>,
    organizations: Rows<'t, OrganizationRecord>,
    memberships: Rows<'t, MembershipRecord>,
    idempotency: Rows<'t, IdempotentResponse>,
    sessions: Rows<'t, SessionRecord>,
    lockouts: Rows<'t, LockoutRecord>,
    email_tokens: Rows<'t, EmailTokenRecord>,
    outbox: Rows<'t, OutboxRecord>,
    passkeys: Rows<'t, PasskeyRecord>,
    used_challenges: Expiring<'t>,
    avatars: Rows<'t, AvatarRecord>,
    authorization_codes: Rows<'t, AuthorizationCodeRecord>,
    consents: Rows<'t, ConsentRecord>,
    refresh_families: Rows<'t, RefreshFamilyRecord>,
    revoked: Expiring<'t>,
    used_assertions: Expiring<'t>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(Tables {
            meta: txn.open_table(tables::META)?,
            audit: txn.open_table(tables::AUDIT)?,
            tenants: Rows::open(txn)?,
            data_keys: Rows::open(txn)?,
            signing_keys: Rows::open(txn)?,
            clients: Rows::open(txn)?,
            roles: Rows::open(txn)?,
            bindings: Rows::open(txn)?,
            users: Rows::open(txn)?,
            organizations: Rows::open(txn)?,
            memberships: Rows::open(txn)?,
            idempotency: Rows::open(txn)?,
            sessions: Rows::open(txn)?,
            lockouts: Rows::open(txn)?,
            email_tokens: Rows::open(txn)?,
            outbox: Rows::open(txn)?,
            passkeys: Rows::open(txn)?,
            used_challenges: Expiring::open(txn, tables::USED_CHALLENGES)?,
            avatars: Rows::open(txn)?,
            authorization_codes: Rows::open(txn)?,
            consents: Rows::open(txn)?,
            refresh_families: Rows::open(txn)?,
            revoked: Expiring::open(txn, tables::REVOKED_TOKENS)?,
            used_assertions: Expiring::open(txn, tables::USED_ASSERTIONS)?,
        })
    }
}

/// Why a command stops before writing: it is refused, or the database failed.
pub(crate) enum Stop {
    Refused(Rejection),
    Store(StoreError),
}

impl From<Rejection> for Stop {
    fn from(r: Rejection) -> Self {
        Stop::Refused(r)
    }
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Store(e)
    }
}

/// The changes a checked command makes.
pub(crate) type Write<'c> = Box<dyn for<'t> FnOnce(&mut Tables<'t>) -> Result<Applied, StoreError> + 'c>;

/// A checked command: its write, or why it stops.
pub(crate) type Planned<'c> = Result<Write<'c>, Stop>;

/// Wraps a write closure (naming its higher-ranked type once).
fn writes<'c>(f: impl for<'t> FnOnce(&mut Tables<'t>) -> Result<Applied, StoreError> + 'c) -> Planned<'c> {
    Ok(Box::new(f))
}

/// Applies one proposal and appends its audit entry, inside `txn`.
pub fn apply(txn: &WriteTransaction, proposal: &Proposal) -> Result<Outcome, StoreError> {
    let mut t = Tables::open(txn)?;
    match &proposal.command {
        Command::IssueTokens(batch) => return tokens::issue_batch(&mut t, proposal.at_ms, batch),
        Command::RecordAuthFailures(failures) => return tokens::record_failures(&mut t, proposal.at_ms, failures),
        Command::Probe => return Ok(Outcome::Applied(Applied::Nothing)),
        _ => {}
    }
    let outcome = match plan(&t, &proposal.command, proposal.at_ms) {
        Ok(write) => Outcome::Applied(write(&mut t)?),
        Err(Stop::Refused(rejection)) => Outcome::Refused(rejection),
        Err(Stop::Store(e)) => return Err(e),
    };
    let outcome_text = match &outcome {
        // A replayed authorization code is applied (it revokes tokens) but is no success.
        Outcome::Applied(Applied::AuthorizationCodeReused { .. }) => "replayed:tokens_revoked".to_string(),
        Outcome::Applied(Applied::RefreshTokenReused) => "replayed:family_revoked".to_string(),
        Outcome::Applied(_) => "ok".to_string(),
        Outcome::Refused(r) => format!("refused:{}", r.code()),
    };
    let (tenant, target) = proposal.command.audit_subject();
    let draft = AuditDraft {
        at_ms: proposal.at_ms,
        actor: proposal.actor.clone(),
        tenant,
        action: proposal.command.action().to_string(),
        target,
        outcome: outcome_text,
        origin: proposal.origin.clone(),
    };
    audit::append(&mut t.meta, &mut t.audit, draft)?;
    Ok(outcome)
}

/// Checks `command` against the tables and plans its write: the one dispatch to the nouns.
fn plan<'c>(t: &Tables<'_>, command: &'c Command, now_ms: i64) -> Planned<'c> {
    match command {
        Command::Bootstrap { cluster, tenants } => tenants::bootstrap(t, cluster, tenants),
        Command::CreateTenant(n) => tenants::create(t, n),
        Command::InitCluster { node_ca } => cluster::init(t, node_ca),
        Command::IssueJoinToken(token) => cluster::issue_join_token(t, token, now_ms),
        Command::RetireNode { node_id } => cluster::retire_node(*node_id, now_ms),
        Command::RedeemJoinToken { id, secret_sha256, node_id } => {
            cluster::redeem_join_token(t, id, secret_sha256, *node_id, now_ms)
        }
        Command::UpdateTenant { id, display_name, status, self_registration, cors_origins, require_mfa } => {
            tenants::update(t, id, display_name, *status, *self_registration, cors_origins.as_deref(), *require_mfa)
        }
        Command::DeleteTenant { id } => tenants::delete(t, id),
        Command::AddSigningKeys { tenant, keys } => tenants::add_signing_keys(t, tenant, keys),
        Command::PruneSigningKeys { tenant, kids, max_token_lifetime_ms } => {
            tenants::prune_signing_keys(t, tenant, kids, *max_token_lifetime_ms, now_ms)
        }
        Command::CreateClient(c) => clients::create(t, c),
        Command::UpdateClient { client, expected_revision } => clients::update(t, client, *expected_revision),
        Command::DeleteClient { tenant, client_id } => clients::delete(t, tenant, client_id),
        Command::CreateRole(r) => access::create_role(t, r),
        Command::DeleteRole { tenant, name } => access::delete_role(t, tenant, name),
        Command::CreateBinding(b) => access::create_binding(t, b),
        Command::DeleteBinding { tenant, id } => access::delete_binding(t, tenant, id),
        Command::CreateUser(u) => users::create(t, u),
        Command::UpdateUser { user, expected_revision } => users::update(t, user, *expected_revision),
        Command::SetPassword { tenant, user_id, password_hash } => {
            users::set_password(t, tenant, user_id, password_hash)
        }
        Command::DeleteUser { tenant, user_id } => users::delete(t, tenant, user_id),
        Command::CreateOrganization(o) => users::create_organization(t, o),
        Command::DeleteOrganization { tenant, id } => users::delete_organization(t, tenant, id),
        Command::AddMember(m) => users::add_member(t, m),
        Command::RemoveMember { tenant, organization_id, user_id } => {
            users::remove_member(t, tenant, organization_id, user_id)
        }
        Command::IssueToken(issued) => tokens::issue(t, issued),
        Command::ClientAuthenticationFailed { .. } => Err(Rejection::ClientAuthenticationFailed.into()),
        Command::RevokeToken { tenant, jti, exp_ms } => tokens::revoke(t, tenant, jti, *exp_ms),
        Command::PruneRevocations => tokens::prune_revocations(now_ms),
        Command::ConsumeAssertion { tenant, client_id, jti, exp_ms } => {
            tokens::consume_assertion(t, tenant, client_id, jti, *exp_ms)
        }
        Command::Idempotent { inner, answer } => idempotency::answered(t, inner, answer, now_ms),
        Command::Guarded { inner, holds_at_most } => access::guarded(t, inner, holds_at_most, now_ms),
        Command::Register(r) => sessions::register(t, r),
        Command::StartSession(s) => sessions::start(t, s),
        Command::TouchSession { tenant, id_sha256 } => sessions::touch(t, tenant, id_sha256, now_ms),
        Command::EndSession { tenant, id_sha256 } => sessions::end(tenant, id_sha256),
        Command::PruneSessions => sessions::prune(now_ms),
        Command::RehashPassword { tenant, user_id, previous, password_hash } => {
            users::rehash_password(t, tenant, user_id, previous, password_hash)
        }
        Command::EndSessionsOf { tenant, user_id, except } => sessions::end_others(tenant, user_id, except.as_deref()),
        Command::RememberResponse(r) => idempotency::remember(t, r),
        Command::PruneIdempotency => idempotency::prune(now_ms),
        Command::EnrollTotp { tenant, user_id, seed } => mfa::enroll(t, tenant, user_id, seed),
        Command::ConfirmTotp { tenant, user_id, seed_nonce, step, recovery_sha256 } => {
            mfa::confirm(t, tenant, user_id, seed_nonce, *step, recovery_sha256)
        }
        Command::CompleteMfa { tenant, user_id, factor, pending_sha256, session } => {
            mfa::complete(t, tenant, user_id, factor, pending_sha256, session, now_ms)
        }
        Command::DisableTotp { tenant, user_id, factor } => mfa::disable(t, tenant, user_id, factor),
        Command::RecordLoginFailures { policy, failures } => lockouts::record(t, policy, failures),
        Command::ClearLoginFailures { tenant, account_sha256 } => lockouts::clear(tenant, account_sha256),
        Command::PruneLockouts { policy } => lockouts::prune(policy, now_ms),
        Command::SendEmailToken { token, message } => email::send(t, token, message),
        Command::RedeemEmailToken { tenant, token_sha256, purpose, effect } => {
            email::redeem(t, tenant, token_sha256, *purpose, effect, now_ms)
        }
        Command::EmailDelivered { tenant, id } => email::delivered(tenant, id),
        Command::EmailDeferred { tenant, id, next_attempt_ms } => email::deferred(t, tenant, id, *next_attempt_ms),
        Command::PruneEmail => email::prune(now_ms),
        Command::AddPasskey { passkey, challenge } => passkeys::add(t, passkey, challenge, now_ms),
        Command::PasskeySignIn { tenant, credential_id, challenge, sign_count_was, sign_count, passkey, session } => {
            passkeys::sign_in(
                t,
                tenant,
                credential_id,
                challenge,
                *sign_count_was,
                *sign_count,
                passkey,
                session,
                now_ms,
            )
        }
        Command::DeletePasskey { tenant, user_id, credential_id } => {
            passkeys::delete(t, tenant, user_id, credential_id)
        }
        Command::SetAvatar(avatar) => users::set_avatar(t, avatar, now_ms),
        Command::DeleteAvatar { tenant, user_id } => users::delete_avatar(t, tenant, user_id, now_ms),
        Command::IssueAuthorizationCode(code) => codes::issue(t, code, now_ms),
        Command::RedeemAuthorizationCode { tenant, code_sha256, client_id, redirect_uri, tokens, refresh } => {
            codes::redeem(t, tenant, code_sha256, client_id, redirect_uri, tokens, refresh.as_ref(), now_ms)
        }
        Command::RotateRefreshToken { tenant, family_id, client_id, presented_sha256, next_sha256, access } => {
            refresh::rotate(t, tenant, family_id, client_id, presented_sha256, next_sha256, access, now_ms)
        }
        Command::RevokeRefreshFamily { tenant, family_id, client_id } => {
            refresh::revoke(t, tenant, family_id, client_id)
        }
        Command::PruneRefreshFamilies => refresh::prune(now_ms),
        Command::PruneAuthorizationCodes => codes::prune(now_ms),
        Command::GrantConsent(consent) => codes::grant_consent(t, consent),
        Command::IssueTokens(_) | Command::RecordAuthFailures(_) | Command::Probe => {
            let what = "a batch is applied on its own, never inside another command".to_string();
            Err(Rejection::Inconsistent { what }.into())
        }
    }
}
