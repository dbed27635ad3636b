//! Commands: every change of replicated state, carrying everything random or timed.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{
    BindingRecord, CaRecord, ClientRecord, ClusterRecord, DataKeyRecord, IdempotentResponse, JoinTokenRecord,
    MembershipRecord, OrganizationRecord, RoleRecord, SessionRecord, SigningKeyRecord, TenantRecord, TenantStatus,
    UserRecord,
};

/// One entry of the raft log: a command with its time and its actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Unix time in milliseconds, read by the proposer.
    pub at_ms: i64,
    /// Who asked: `node:{id}`, `cli:uid:{uid}`, `client:{id}`, `user:{id}`.
    pub actor: String,
    pub command: Command,
    /// The HTTP request that caused it, when one did: its audit entry carries both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// Where a change came from: the request id (also `X-Request-Id` on the answer) and the real
/// peer address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub request_id: String,
    pub peer: String,
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} by {} at {}", self.command.action(), self.actor, self.at_ms)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Founds the cluster: its record and the `system` and `default` tenants.
    Bootstrap {
        cluster: ClusterRecord,
        tenants: Vec<NewTenant>,
    },
    CreateTenant(NewTenant),
    /// Makes the cluster ready for more nodes: its node intermediate (`cluster init`).
    InitCluster {
        node_ca: CaRecord,
    },
    /// A one-time token a node joins with; expired tokens are forgotten meanwhile.
    IssueJoinToken(JoinTokenRecord),
    /// Marks a node as removed from the cluster for good: the cluster port refuses its
    /// certificate from then on, whatever membership a node knows.
    RetireNode {
        node_id: u64,
    },
    /// Uses a join token for `node_id`: refused when unknown, wrong, expired or used.
    RedeemJoinToken {
        id: String,
        secret_sha256: String,
        node_id: u64,
    },
    /// Adds keys to one tenant together (a rotation adds one per algorithm).
    AddSigningKeys {
        tenant: String,
        keys: Vec<SigningKeyRecord>,
    },
    /// Removes retired keys from a tenant. Refused for any key that may still sign or whose
    /// tokens may still be valid at the proposal's time.
    PruneSigningKeys {
        tenant: String,
        kids: Vec<String>,
        max_token_lifetime_ms: i64,
    },
    CreateClient(ClientRecord),
    /// Replaces a client's settings when its stored revision is still `expected_revision`.
    UpdateClient {
        client: ClientRecord,
        expected_revision: u64,
    },
    DeleteClient {
        tenant: String,
        client_id: String,
    },
    CreateRole(RoleRecord),
    /// Removes a tenant role; refused while a binding names it.
    DeleteRole {
        tenant: String,
        name: String,
    },
    CreateBinding(BindingRecord),
    DeleteBinding {
        tenant: String,
        id: String,
    },
    /// Records an issued token. It is committed before the token is returned (A10), and is
    /// refused when the client was disabled or deleted in the meantime.
    IssueToken(IssuedToken),
    /// Records many issued tokens at once (group commit from the token endpoint): each is
    /// checked and audited on its own, as if it were an `IssueToken`.
    IssueTokens(Vec<IssuedToken>),
    /// An action answered under an `Idempotency-Key`: `inner` is applied as on its own, and,
    /// when it applies, `answer` is remembered in the same transaction, so a crash can never
    /// leave the action done and its answer forgotten. Refused when an answer is remembered
    /// under the same scope already: a retry never applies the action twice.
    Idempotent {
        inner: Box<Command>,
        answer: IdempotentResponse,
    },
    /// Applies `inner` only while `holds_at_most.subject` holds no role beyond those listed:
    /// the caller was allowed to act on that subject because it may grant each of them, and
    /// must not once the subject holds more (an `owner` binding made meanwhile, say).
    Guarded {
        inner: Box<Command>,
        holds_at_most: HeldRoles,
    },
    /// A user signs themselves up: the user, their first session and, when named, an
    /// organization they own, all or nothing. Refused while the tenant's self-registration
    /// is off.
    Register(Box<Registration>),
    /// A user signed in.
    StartSession(SessionRecord),
    /// Records that a session is in use (written only now and then, for the idle timeout).
    TouchSession {
        tenant: String,
        id_sha256: String,
    },
    /// Replaces a password hash with one of the same password under new parameters, made at a
    /// sign-in; refused (changing nothing) when the stored hash is no longer `previous`. Unlike
    /// a new password it ends no session.
    RehashPassword {
        tenant: String,
        user_id: String,
        previous: String,
        password_hash: String,
    },
    /// Forgets the sessions that ended by the proposal's time (expired or idle).
    PruneSessions,
    /// Ends every session of a user but `except` (a user signing out their other devices).
    EndSessionsOf {
        tenant: String,
        user_id: String,
        except: Option<String>,
    },
    /// Ends a session (logout); ending one that is gone already is no error.
    EndSession {
        tenant: String,
        id_sha256: String,
    },
    /// Records coalesced failed authentications: one audit entry per item, nothing else.
    RecordAuthFailures(Vec<AuthFailures>),
    /// Records a failed client authentication: always refused, so only its audit entry is
    /// written. No longer proposed (failures are coalesced into `RecordAuthFailures`); kept so
    /// logs written by older versions still apply.
    ClientAuthenticationFailed {
        tenant: String,
        client_id: String,
        endpoint: String,
    },
    /// Puts an access token on the tenant's deny-list until it expires (RFC 7009).
    RevokeToken {
        tenant: String,
        jti: String,
        exp_ms: i64,
    },
    /// Drops deny-list entries of tokens, and used client assertions, that expired before the
    /// proposal's time.
    PruneRevocations,
    /// Marks a client assertion's `jti` used (RFC 7523 replay protection, S16): refused when
    /// it was used before, anywhere in the cluster.
    ConsumeAssertion {
        tenant: String,
        client_id: String,
        jti: String,
        exp_ms: i64,
    },
    /// Changes a tenant's display name, status or self-registration.
    UpdateTenant {
        id: String,
        display_name: String,
        status: TenantStatus,
        self_registration: bool,
        /// A new list of CORS origins; absent keeps the list (and older log entries apply).
        #[serde(default)]
        cors_origins: Option<Vec<String>>,
        /// Whether every sign-in needs a second factor; absent keeps it.
        #[serde(default)]
        require_mfa: Option<bool>,
    },
    /// Removes a tenant and everything it holds (its data key too, so its sealed secrets are
    /// gone for good); its audit entries stay. `system` and `default` cannot be deleted.
    DeleteTenant {
        id: String,
    },
    CreateUser(UserRecord),
    /// Replaces a user's profile when its stored revision is still `expected_revision`. The
    /// password hash is kept; `SetPassword` changes it.
    UpdateUser {
        user: UserRecord,
        expected_revision: u64,
    },
    SetPassword {
        tenant: String,
        user_id: String,
        /// An argon2id PHC string, computed before proposing.
        password_hash: String,
    },
    /// Removes a user with its memberships and bindings.
    DeleteUser {
        tenant: String,
        user_id: String,
    },
    CreateOrganization(OrganizationRecord),
    /// Removes an organization with its memberships and the bindings scoped to it.
    DeleteOrganization {
        tenant: String,
        id: String,
    },
    AddMember(MembershipRecord),
    RemoveMember {
        tenant: String,
        organization_id: String,
        user_id: String,
    },
    /// Remembers the first answer to an idempotent request. A second record for the same scope
    /// is refused (the first one stands).
    RememberResponse(IdempotentResponse),
    /// Drops remembered answers that expired before the proposal's time.
    PruneIdempotency,
    /// Gives a user a new authenticator secret, not confirmed yet (refused while one is).
    EnrollTotp {
        tenant: String,
        user_id: String,
        seed: crate::model::Sealed,
    },
    /// Confirms the enrolled secret by the time step of a code it made, and sets the recovery
    /// codes (their SHA-256).
    ConfirmTotp {
        tenant: String,
        user_id: String,
        /// The nonce of the sealed seed the code was checked against: a later enrolment
        /// (another seed) is not confirmed by it.
        seed_nonce: String,
        step: u64,
        recovery_sha256: Vec<String>,
    },
    /// Spends a second factor and replaces the pending session `pending_sha256` with the full
    /// `session` (a new id: S49).
    CompleteMfa {
        tenant: String,
        user_id: String,
        factor: MfaFactor,
        pending_sha256: String,
        session: SessionRecord,
    },
    /// Removes a user's authenticator, spending the factor that proved they hold it.
    DisableTotp {
        tenant: String,
        user_id: String,
        factor: MfaFactor,
    },
    /// Counts failed sign-ins per account, coalesced over a short window, and holds the
    /// accounts that reach the policy's limit (S40).
    RecordLoginFailures {
        policy: crate::model::LockoutPolicy,
        failures: Vec<LoginFailures>,
    },
    /// Forgets an account's failures and holds (it signed in).
    ClearLoginFailures {
        tenant: String,
        account_sha256: String,
    },
    /// Drops failure records the policy no longer needs.
    PruneLockouts {
        policy: crate::model::LockoutPolicy,
    },
    /// Issues a single-use email token and writes the message that carries it (S37, S43).
    SendEmailToken {
        token: crate::model::EmailTokenRecord,
        message: crate::model::OutboxRecord,
    },
    /// Spends an email token issued for `purpose` and does what it was for.
    RedeemEmailToken {
        tenant: String,
        token_sha256: String,
        purpose: crate::model::EmailPurpose,
        effect: Redemption,
    },
    /// A message was handed to the SMTP relay: it leaves the outbox.
    EmailDelivered {
        tenant: String,
        id: String,
    },
    /// A delivery attempt failed; the next waits until `next_attempt_ms`.
    EmailDeferred {
        tenant: String,
        id: String,
        next_attempt_ms: i64,
    },
    /// Drops email tokens and undelivered messages that expired before the proposal's time.
    PruneEmail,
    /// Adds a passkey to its user, spending the registration's challenge.
    AddPasskey {
        passkey: crate::model::PasskeyRecord,
        challenge: SpentChallenge,
    },
    /// Signs in with a passkey: spends the challenge, moves the passkey's counter on from the
    /// one it was checked against (compare-and-set), and starts `session`.
    PasskeySignIn {
        tenant: String,
        credential_id: String,
        challenge: SpentChallenge,
        sign_count_was: u32,
        sign_count: u32,
        /// The credential as updated by the sign-in.
        passkey: String,
        session: SessionRecord,
    },
    DeletePasskey {
        tenant: String,
        user_id: String,
        credential_id: String,
    },
    /// Sets a user's picture (already re-encoded).
    SetAvatar(crate::model::AvatarRecord),
    DeleteAvatar {
        tenant: String,
        user_id: String,
    },
    /// Issues an authorization code for a live session of an active user, to an active client
    /// that may use the code grant.
    IssueAuthorizationCode(crate::model::AuthorizationCodeRecord),
    /// Spends an authorization code for its own client and redirect URI, recording the tokens
    /// it issues (S5, S6). An expired or unknown code, or another client's, is refused; a spent
    /// one revokes the tokens its first use issued (`AuthorizationCodeReused`).
    RedeemAuthorizationCode {
        tenant: String,
        code_sha256: String,
        client_id: String,
        redirect_uri: String,
        tokens: Vec<crate::model::CodeToken>,
        /// The refresh token family the grant starts (`offline_access`), written with it.
        #[serde(default)]
        refresh: Option<crate::model::RefreshFamilyRecord>,
    },
    /// Drops authorization codes that expired before the proposal's time (spent ones once the
    /// tokens they issued expired too).
    PruneAuthorizationCodes,
    /// Rotates a refresh token family: `presented_sha256` must be its current token, which
    /// `next_sha256` replaces, for its own client, while it is live and its user active. Any
    /// other token of the family is a replay: the family is revoked, with the access token it
    /// issued last, in the same write (`RefreshTokenReused`, S12).
    RotateRefreshToken {
        tenant: String,
        family_id: String,
        client_id: String,
        presented_sha256: String,
        next_sha256: String,
        access: crate::model::CodeToken,
    },
    /// Revokes a family (RFC 7009 for a refresh token, by its own client).
    RevokeRefreshFamily {
        tenant: String,
        family_id: String,
        client_id: String,
    },
    /// Drops the families that can no longer be good, nor any access token they issued.
    PruneRefreshFamilies,
    /// Records that a user allowed a client these scopes (added to what they allowed before).
    /// Only for an active user and an active client of the tenant.
    GrantConsent(crate::model::ConsentRecord),
    /// Changes nothing and is not audited: an entry that goes through the whole write path
    /// (log, quorum, apply) for `cluster bench`, which measures that path.
    Probe,
}

/// A WebAuthn challenge, spent once and remembered until it would have expired anyway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpentChallenge {
    pub id: String,
    pub expires_at_ms: i64,
}

/// What redeeming an email token does besides spending it (each also proves the address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Redemption {
    /// Starts this session (pending its second factor when the user has one: S44).
    SignIn(SessionRecord),
    /// Sets this password hash and ends every session of the user.
    SetPassword { password_hash: String },
    /// Only proves the address.
    Verify,
}

/// A second factor as `apply` spends it: a TOTP time step later than the last one accepted,
/// or the SHA-256 of an unused recovery code. Either is accepted once (S45).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MfaFactor {
    TotpStep(u64),
    RecoveryCode(String),
}

/// Identical failed authentications (same tenant, endpoint, presented client, source and
/// reason) seen in one window, written as one audit entry with their count. Never the
/// credential itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthFailures {
    pub tenant: String,
    /// `token`, `introspect`, `revoke` or `admin`.
    pub endpoint: String,
    /// The client id presented (at most 128 characters), `*` when the node folded many into
    /// one entry, empty for a bearer token that named nobody.
    pub client_id: String,
    /// The peer address, `*` when folded.
    pub source: String,
    /// Why: `invalid_client`, `invalid_token`, `forbidden`.
    pub reason: String,
    pub count: u64,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// Failed sign-ins of one account seen in one window: how many, and the time of the last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginFailures {
    pub tenant: String,
    pub account_sha256: String,
    pub count: u32,
    pub last_ms: i64,
}

/// What an issued token carried, for its audit entry. Never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedToken {
    pub tenant: String,
    /// `None` when the node minted it itself (`gatehouse admin token`).
    pub client_id: Option<String>,
    pub subject: String,
    pub jti: String,
    pub grant: String,
    pub scope: String,
    pub audience: String,
    pub exp_ms: i64,
    /// The token request's id and peer address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

impl Command {
    /// Whether applying this changes some tenant's set of signing keys.
    pub fn changes_signing_keys(&self) -> bool {
        if let Command::Idempotent { inner, .. } | Command::Guarded { inner, .. } = self {
            return inner.changes_signing_keys();
        }
        matches!(
            self,
            Command::Bootstrap { .. }
                | Command::CreateTenant(_)
                | Command::AddSigningKeys { .. }
                | Command::PruneSigningKeys { .. }
                | Command::DeleteTenant { .. }
        )
    }

    /// The tenant and the target an audit entry names for this command.
    pub fn audit_subject(&self) -> (String, String) {
        match self {
            Command::Bootstrap { cluster, .. } => ("system".into(), format!("cluster:{}", cluster.cluster_id)),
            Command::CreateTenant(n) => (n.tenant.id.clone(), format!("tenant:{}", n.tenant.id)),
            Command::InitCluster { .. } => ("system".into(), "cluster:node_ca".into()),
            Command::IssueJoinToken(t) => ("system".into(), format!("join_token:{}", t.id)),
            Command::RetireNode { node_id } => ("system".into(), format!("node:{node_id:016x}")),
            Command::RedeemJoinToken { id, node_id, .. } => {
                ("system".into(), format!("join_token:{id} node:{node_id:016x}"))
            }
            Command::AddSigningKeys { tenant, keys } => {
                let kids: Vec<&str> = keys.iter().map(|k| k.kid.as_str()).collect();
                (tenant.clone(), format!("signing_keys:{}", kids.join(",")))
            }
            Command::PruneSigningKeys { tenant, kids, .. } => {
                (tenant.clone(), format!("signing_keys:{}", kids.join(",")))
            }
            Command::CreateClient(c) => (c.tenant.clone(), format!("client:{}", c.client_id)),
            Command::UpdateClient { client, .. } => (client.tenant.clone(), format!("client:{}", client.client_id)),
            Command::DeleteClient { tenant, client_id } => (tenant.clone(), format!("client:{client_id}")),
            Command::CreateRole(r) => (r.tenant.clone(), format!("role:{} template={}", r.name, r.template)),
            Command::DeleteRole { tenant, name } => (tenant.clone(), format!("role:{name}")),
            Command::CreateBinding(b) => (b.tenant.clone(), format!("binding:{}:{}->{}", b.id, b.subject, b.role)),
            Command::DeleteBinding { tenant, id } => (tenant.clone(), format!("binding:{id}")),
            Command::IssueToken(t) => (
                t.tenant.clone(),
                format!("token:{} sub={} grant={} aud={} scope={}", t.jti, t.subject, t.grant, t.audience, t.scope),
            ),
            Command::IssueTokens(batch) => ("system".into(), format!("tokens:{}", batch.len())),
            Command::RecordAuthFailures(f) => ("system".into(), format!("authentication_failures:{}", f.len())),
            Command::RecordLoginFailures { failures, .. } => ("system".into(), format!("accounts:{}", failures.len())),
            Command::ClearLoginFailures { tenant, account_sha256 } => {
                (tenant.clone(), format!("account:{}", short(account_sha256)))
            }
            Command::PruneLockouts { .. } => ("system".into(), "lockouts".into()),
            Command::SendEmailToken { token, message } => (
                token.tenant.clone(),
                format!("user:{} {} message:{}", token.user_id, token.purpose.as_str(), message.id),
            ),
            Command::RedeemEmailToken { tenant, token_sha256, purpose, .. } => {
                (tenant.clone(), format!("{} token:{}", purpose.as_str(), short(token_sha256)))
            }
            Command::EmailDelivered { tenant, id } | Command::EmailDeferred { tenant, id, .. } => {
                (tenant.clone(), format!("message:{id}"))
            }
            Command::PruneEmail => ("system".into(), "email".into()),
            Command::IssueAuthorizationCode(c) => {
                (c.tenant.clone(), format!("code:{} client:{} user:{}", short(&c.code_sha256), c.client_id, c.user_id))
            }
            Command::RedeemAuthorizationCode { tenant, code_sha256, client_id, .. } => {
                (tenant.clone(), format!("code:{} client:{client_id}", short(code_sha256)))
            }
            Command::PruneAuthorizationCodes => ("system".into(), "authorization_codes".into()),
            Command::RotateRefreshToken { tenant, family_id, client_id, .. }
            | Command::RevokeRefreshFamily { tenant, family_id, client_id } => {
                (tenant.clone(), format!("refresh_family:{} client:{client_id}", short(family_id)))
            }
            Command::PruneRefreshFamilies => ("system".into(), "refresh_families".into()),
            Command::GrantConsent(c) => {
                (c.tenant.clone(), format!("user:{} client:{} scopes:{}", c.user_id, c.client_id, c.scopes.join(" ")))
            }
            Command::AddPasskey { passkey, .. } => {
                (passkey.tenant.clone(), format!("user:{} passkey:{}", passkey.user_id, short(&passkey.credential_id)))
            }
            Command::PasskeySignIn { tenant, credential_id, session, .. } => (
                tenant.clone(),
                format!(
                    "user:{} passkey:{} session:{}",
                    session.user_id,
                    short(credential_id),
                    short(&session.id_sha256)
                ),
            ),
            Command::SetAvatar(a) => (a.tenant.clone(), format!("user:{} avatar:{}", a.user_id, short(&a.sha256))),
            Command::DeleteAvatar { tenant, user_id } => (tenant.clone(), format!("user:{user_id} avatar")),
            Command::DeletePasskey { tenant, user_id, credential_id } => {
                (tenant.clone(), format!("user:{user_id} passkey:{}", short(credential_id)))
            }
            Command::Idempotent { inner, .. } | Command::Guarded { inner, .. } => inner.audit_subject(),
            Command::Register(r) => {
                (r.user.tenant.clone(), format!("user:{} session:{}", r.user.id, short(&r.session.id_sha256)))
            }
            Command::StartSession(s) => {
                (s.tenant.clone(), format!("user:{} session:{}", s.user_id, short(&s.id_sha256)))
            }
            Command::PruneSessions => ("system".into(), "sessions".into()),
            Command::RehashPassword { tenant, user_id, .. } => (tenant.clone(), format!("user:{user_id}")),
            Command::EndSessionsOf { tenant, user_id, .. } => (tenant.clone(), format!("user:{user_id} sessions")),
            Command::TouchSession { tenant, id_sha256 } | Command::EndSession { tenant, id_sha256 } => {
                (tenant.clone(), format!("session:{}", short(id_sha256)))
            }
            Command::ClientAuthenticationFailed { tenant, client_id, endpoint } => {
                (tenant.clone(), format!("client:{client_id} at {endpoint}"))
            }
            Command::RevokeToken { tenant, jti, .. } => (tenant.clone(), format!("token:{jti}")),
            Command::PruneRevocations => ("system".into(), "revoked_tokens".into()),
            Command::ConsumeAssertion { tenant, client_id, jti, .. } => {
                (tenant.clone(), format!("client:{client_id} assertion:{jti}"))
            }
            Command::UpdateTenant { id, status, .. } => (id.clone(), format!("tenant:{id} status={status:?}")),
            Command::DeleteTenant { id } => (id.clone(), format!("tenant:{id}")),
            Command::CreateUser(u) => (u.tenant.clone(), format!("user:{}", u.id)),
            Command::UpdateUser { user, .. } => (user.tenant.clone(), format!("user:{}", user.id)),
            Command::SetPassword { tenant, user_id, .. } | Command::DeleteUser { tenant, user_id } => {
                (tenant.clone(), format!("user:{user_id}"))
            }
            Command::CreateOrganization(o) => (o.tenant.clone(), format!("organization:{}", o.id)),
            Command::DeleteOrganization { tenant, id } => (tenant.clone(), format!("organization:{id}")),
            Command::AddMember(m) => {
                (m.tenant.clone(), format!("organization:{} user:{}", m.organization_id, m.user_id))
            }
            Command::RemoveMember { tenant, organization_id, user_id } => {
                (tenant.clone(), format!("organization:{organization_id} user:{user_id}"))
            }
            Command::RememberResponse(r) => ("system".into(), format!("idempotency:{} status={}", r.scope, r.status)),
            Command::PruneIdempotency => ("system".into(), "idempotency".into()),
            Command::Probe => ("system".into(), "probe".into()),
            Command::EnrollTotp { tenant, user_id, .. }
            | Command::ConfirmTotp { tenant, user_id, .. }
            | Command::CompleteMfa { tenant, user_id, .. }
            | Command::DisableTotp { tenant, user_id, .. } => (tenant.clone(), format!("user:{user_id}")),
        }
    }

    /// The audit action name.
    pub fn action(&self) -> &'static str {
        match self {
            Command::Bootstrap { .. } => "cluster.bootstrap",
            Command::CreateTenant(_) => "tenant.create",
            Command::InitCluster { .. } => "cluster.init",
            Command::IssueJoinToken(_) => "cluster.join_token",
            Command::RetireNode { .. } => "cluster.retire_node",
            Command::RedeemJoinToken { .. } => "cluster.join",
            Command::AddSigningKeys { .. } => "signing_key.add",
            Command::PruneSigningKeys { .. } => "signing_key.prune",
            Command::CreateClient(_) => "client.create",
            Command::UpdateClient { .. } => "client.update",
            Command::DeleteClient { .. } => "client.delete",
            Command::CreateRole(_) => "role.create",
            Command::DeleteRole { .. } => "role.delete",
            Command::CreateBinding(_) => "binding.create",
            Command::DeleteBinding { .. } => "binding.delete",
            Command::IssueToken(_) | Command::IssueTokens(_) => "token.issue",
            Command::ClientAuthenticationFailed { .. } => "client.authenticate",
            Command::RecordAuthFailures(_) => "authentication.failed",
            Command::RecordLoginFailures { .. } => "lockout.count",
            Command::ClearLoginFailures { .. } => "lockout.clear",
            Command::PruneLockouts { .. } => "lockout.prune",
            Command::SendEmailToken { .. } => "email.send",
            Command::RedeemEmailToken { .. } => "email.redeem",
            Command::EmailDelivered { .. } => "email.delivered",
            Command::EmailDeferred { .. } => "email.deferred",
            Command::PruneEmail => "email.prune",
            Command::IssueAuthorizationCode(_) => "oauth.code.issue",
            Command::RedeemAuthorizationCode { .. } => "oauth.code.redeem",
            Command::PruneAuthorizationCodes => "oauth.code.prune",
            Command::GrantConsent(_) => "oauth.consent.grant",
            Command::RotateRefreshToken { .. } => "oauth.refresh.rotate",
            Command::RevokeRefreshFamily { .. } => "oauth.refresh.revoke",
            Command::PruneRefreshFamilies => "oauth.refresh.prune",
            Command::AddPasskey { .. } => "passkey.add",
            Command::PasskeySignIn { .. } => "session.start",
            Command::DeletePasskey { .. } => "passkey.delete",
            Command::SetAvatar(_) => "user.set_avatar",
            Command::DeleteAvatar { .. } => "user.delete_avatar",
            Command::Idempotent { inner, .. } | Command::Guarded { inner, .. } => inner.action(),
            Command::Register(_) => "user.register",
            Command::StartSession(_) => "session.start",
            Command::TouchSession { .. } => "session.touch",
            Command::EndSession { .. } => "session.end",
            Command::PruneSessions => "session.prune",
            Command::RehashPassword { .. } => "user.rehash_password",
            Command::EndSessionsOf { .. } => "session.end_others",
            Command::RevokeToken { .. } => "token.revoke",
            Command::PruneRevocations => "token.prune_revocations",
            Command::ConsumeAssertion { .. } => "client.assertion",
            Command::UpdateTenant { .. } => "tenant.update",
            Command::DeleteTenant { .. } => "tenant.delete",
            Command::CreateUser(_) => "user.create",
            Command::UpdateUser { .. } => "user.update",
            Command::SetPassword { .. } => "user.set_password",
            Command::DeleteUser { .. } => "user.delete",
            Command::CreateOrganization(_) => "organization.create",
            Command::DeleteOrganization { .. } => "organization.delete",
            Command::AddMember(_) => "membership.create",
            Command::RemoveMember { .. } => "membership.delete",
            Command::RememberResponse(_) => "idempotency.remember",
            Command::PruneIdempotency => "idempotency.prune",
            Command::Probe => "cluster.probe",
            Command::EnrollTotp { .. } => "user.totp_enroll",
            Command::ConfirmTotp { .. } => "user.totp_confirm",
            Command::CompleteMfa { .. } => "session.mfa",
            Command::DisableTotp { .. } => "user.totp_disable",
        }
    }
}

/// The first characters of a session's digest: enough to follow it in the audit trail.
fn short(id_sha256: &str) -> &str {
    id_sha256.get(..12).unwrap_or(id_sha256)
}

/// What [`Command::Register`] creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub user: UserRecord,
    pub session: SessionRecord,
    pub organization: Option<OwnedOrganization>,
}

/// An organization its creator owns: the organization, their membership and their `owner`
/// binding scoped to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedOrganization {
    pub organization: OrganizationRecord,
    pub membership: MembershipRecord,
    pub binding: BindingRecord,
}

/// The roles a subject held when a caller was allowed to act on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldRoles {
    pub tenant: String,
    /// `client:{id}` or `user:{id}`.
    pub subject: String,
    pub roles: Vec<String>,
}

/// A tenant with its data key and first signing keys, created together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTenant {
    pub tenant: TenantRecord,
    pub data_key: DataKeyRecord,
    pub signing_keys: Vec<SigningKeyRecord>,
}

/// What applying one log entry produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Applied(Applied),
    Refused(Rejection),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// A raft entry without a command (blank or membership).
    Nothing,
    /// Coalesced failed authentications, each audited.
    FailuresRecorded {
        entries: usize,
    },
    Bootstrapped {
        cluster_id: String,
    },
    ClusterInitialised,
    JoinTokenIssued {
        id: String,
    },
    JoinTokenRedeemed {
        id: String,
    },
    NodeRetired,
    TenantCreated {
        id: String,
    },
    SigningKeysAdded {
        tenant: String,
        kids: Vec<String>,
    },
    SigningKeysPruned {
        tenant: String,
        kids: Vec<String>,
    },
    ClientCreated {
        client_id: String,
    },
    ClientUpdated {
        client_id: String,
        revision: u64,
    },
    ClientDeleted {
        client_id: String,
    },
    RoleCreated {
        name: String,
    },
    RoleDeleted {
        name: String,
    },
    BindingCreated {
        id: String,
    },
    BindingDeleted {
        id: String,
    },
    TokenIssued {
        jti: String,
    },
    /// One entry per token of an `IssueTokens`, in order: `None` when it was recorded, or why
    /// it was refused.
    TokensIssued {
        refused: Vec<Option<Rejection>>,
    },
    TokenRevoked {
        jti: String,
    },
    AssertionConsumed,
    Registered {
        user_id: String,
    },
    SessionStarted {
        user_id: String,
    },
    SessionTouched,
    SessionEnded,
    SessionsPruned {
        count: u64,
    },
    /// Failures counted, and how many accounts are now held.
    LoginFailuresCounted {
        held: u64,
    },
    LoginFailuresCleared,
    EmailQueued {
        id: String,
    },
    /// The token was spent; `session_started` when it signed the user in.
    EmailTokenRedeemed {
        user_id: String,
    },
    EmailDelivered,
    EmailDeferred,
    PasskeyAdded,
    AvatarSet,
    AvatarDeleted,
    PasskeyDeleted,
    EmailPruned {
        tokens: u64,
        messages: u64,
    },
    AuthorizationCodeIssued,
    ConsentGranted,
    /// The code was spent: for whom, and what it grants.
    AuthorizationCodeRedeemed {
        code: Box<crate::model::AuthorizationCodeRecord>,
    },
    /// A spent code came back: the tokens its first use issued were revoked (S5).
    AuthorizationCodeReused {
        revoked: u64,
    },
    RefreshTokenRotated {
        family: Box<crate::model::RefreshFamilyRecord>,
    },
    /// A replayed refresh token: its family is revoked (applied, but no success).
    RefreshTokenReused,
    RefreshFamilyRevoked,
    RefreshFamiliesPruned {
        count: u64,
    },
    AuthorizationCodesPruned {
        count: u64,
    },
    LockoutsPruned {
        count: u64,
    },
    SessionsEnded {
        count: u64,
    },
    PasswordRehashed,
    TotpEnrolled,
    TotpConfirmed,
    MfaCompleted {
        user_id: String,
    },
    TotpDisabled,
    RevocationsPruned {
        count: u64,
    },
    TenantUpdated {
        id: String,
    },
    TenantDeleted {
        id: String,
    },
    UserCreated {
        id: String,
    },
    UserUpdated {
        id: String,
        revision: u64,
    },
    PasswordSet {
        user_id: String,
    },
    UserDeleted {
        id: String,
    },
    OrganizationCreated {
        id: String,
    },
    OrganizationDeleted {
        id: String,
    },
    MemberAdded {
        organization_id: String,
        user_id: String,
    },
    MemberRemoved {
        organization_id: String,
        user_id: String,
    },
    ResponseRemembered,
    IdempotencyPruned {
        count: u64,
    },
}

/// A business refusal: the command was valid raft data but the state says no.
/// Only its audit entry is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    #[error("the cluster is already bootstrapped")]
    AlreadyBootstrapped,
    #[error("the cluster is not bootstrapped yet")]
    NotBootstrapped,
    #[error("the cluster is already initialised for more nodes")]
    ClusterAlreadyInitialised,
    #[error("the cluster is not initialised for more nodes: run `gatehouse cluster init` first")]
    ClusterNotInitialised,
    #[error("the join token is unknown, wrong, expired or already used")]
    JoinTokenInvalid,
    #[error("tenant id {id:?} is not valid: use 2-63 characters of a-z, 0-9 and '-', starting with a letter or digit")]
    InvalidTenantId { id: String },
    #[error("tenant id {id:?} is reserved")]
    ReservedTenantId { id: String },
    #[error("tenant {id:?} already exists")]
    TenantExists { id: String },
    #[error("tenant {id:?} does not exist")]
    UnknownTenant { id: String },
    #[error("signing key {kid:?} already exists in tenant {tenant:?}")]
    SigningKeyExists { tenant: String, kid: String },
    #[error("data key {id:?} already exists")]
    DataKeyExists { id: String },
    #[error("signing key {kid:?} does not exist in tenant {tenant:?}")]
    UnknownSigningKey { tenant: String, kid: String },
    #[error("signing key {kid:?} is {state}: it signs, or tokens it signed may still be valid")]
    SigningKeyStillNeeded { kid: String, state: String },
    #[error("client {client_id:?} does not exist in tenant {tenant:?}")]
    UnknownClient { tenant: String, client_id: String },
    #[error("client {client_id:?} already exists in tenant {tenant:?}")]
    ClientExists { tenant: String, client_id: String },
    #[error("client {client_id:?} is disabled")]
    ClientDisabled { client_id: String },
    #[error("tenant {id:?} is disabled")]
    TenantDisabled { id: String },
    #[error("the resource changed since it was read (revision {current})")]
    RevisionMismatch { current: u64 },
    #[error("binding {id:?} already exists")]
    BindingExists { id: String },
    #[error("binding {id:?} does not exist in tenant {tenant:?}")]
    UnknownBinding { tenant: String, id: String },
    #[error("role {role:?} is not a known role")]
    UnknownRole { role: String },
    #[error("client authentication failed")]
    ClientAuthenticationFailed,
    #[error("this client assertion was used before")]
    AssertionReplayed,
    #[error("role {name:?} is bound to someone; delete those bindings first")]
    RoleInUse { name: String },
    #[error("this would remove the last owner of tenant {tenant}")]
    LastOwner { tenant: String },
    #[error("an answer is remembered under this Idempotency-Key already")]
    IdempotencyKeyUsed,
    #[error("tenant {id:?} belongs to the appliance and cannot be deleted")]
    TenantProtected { id: String },
    #[error("user {id:?} does not exist in tenant {tenant:?}")]
    UnknownUser { tenant: String, id: String },
    #[error("username {username:?} is taken in tenant {tenant:?}")]
    UsernameTaken { tenant: String, username: String },
    #[error("organization {id:?} does not exist in tenant {tenant:?}")]
    UnknownOrganization { tenant: String, id: String },
    #[error("{what} {id:?} already exists")]
    AlreadyExists { what: String, id: String },
    #[error("user {user_id:?} is not a member of organization {organization_id:?}")]
    NotAMember { organization_id: String, user_id: String },
    #[error("{subject} was given more roles since this request was allowed to act on it; try again")]
    RolesChanged { subject: String },
    #[error("tenant {id:?} does not allow self-registration")]
    RegistrationClosed { id: String },
    #[error("user {user_id:?} is disabled")]
    UserDisabled { user_id: String },
    #[error("the session has ended")]
    SessionEnded,
    #[error("the user has a confirmed authenticator already; disable it first")]
    TotpAlreadyConfirmed,
    #[error("the user has no authenticator waiting for this")]
    TotpNotEnrolled,
    /// A TOTP step not after the last one accepted, or a recovery code unknown or used.
    #[error("the code was used already or is not valid")]
    MfaFactorUsed,
    #[error("the session is not waiting for a second factor")]
    SessionNotPending,
    /// A full session for a user whose sign-in needs a second factor.
    #[error("the user has an authenticator: the session must wait for a code")]
    MfaRequired,
    /// A full session for a user without a second factor in a tenant that requires one.
    #[error("the tenant requires a second factor the user has not added yet")]
    MfaSetupRequired,
    /// A password or email sign-in where the tenant requires a second factor and the user's is
    /// a passkey: they sign in with it.
    #[error("sign in with your passkey")]
    PasskeyRequired,
    #[error("this credential is registered already")]
    PasskeyExists,
    #[error("there is no such passkey")]
    UnknownPasskey,
    #[error("a user may hold at most {max} passkeys")]
    PasskeyLimit { max: usize },
    /// A WebAuthn challenge spent before (a replay, or a second finish of one ceremony).
    #[error("the challenge was used already")]
    ChallengeUsed,
    /// The passkey was used meanwhile: the counter this sign-in was checked against is stale.
    #[error("the passkey was used meanwhile; sign in again")]
    PasskeyCounterChanged,
    /// An email token that names nothing, has expired, was spent or is for something else.
    #[error("the link or code is not valid, has expired or was used already")]
    EmailTokenInvalid,
    /// An authorization code that names nothing, has expired, or is another client's or
    /// another redirect URI's.
    #[error("the authorization code is not valid or has expired")]
    AuthorizationCodeInvalid,
    /// A refresh token family that names nothing, has ended or was revoked, or is another
    /// client's.
    #[error("the refresh token is not valid or has expired")]
    RefreshTokenInvalid,
    /// The client may not use the authorization code grant.
    #[error("the client may not use the authorization code grant")]
    UnauthorizedGrant,
    #[error("the command is inconsistent: {what}")]
    Inconsistent { what: String },
}

impl Rejection {
    /// A stable code, used in audit outcomes and problem document types.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::AlreadyBootstrapped => "already_bootstrapped",
            Rejection::NotBootstrapped => "not_bootstrapped",
            Rejection::ClusterAlreadyInitialised => "cluster_already_initialised",
            Rejection::ClusterNotInitialised => "cluster_not_initialised",
            Rejection::JoinTokenInvalid => "join_token_invalid",
            Rejection::InvalidTenantId { .. } => "invalid_tenant_id",
            Rejection::ReservedTenantId { .. } => "reserved_tenant_id",
            Rejection::TenantExists { .. } => "tenant_exists",
            Rejection::UnknownTenant { .. } => "unknown_tenant",
            Rejection::SigningKeyExists { .. } => "signing_key_exists",
            Rejection::DataKeyExists { .. } => "data_key_exists",
            Rejection::RolesChanged { .. } => "roles_changed",
            Rejection::RegistrationClosed { .. } => "registration_closed",
            Rejection::UserDisabled { .. } => "user_disabled",
            Rejection::SessionEnded => "session_ended",
            Rejection::TotpAlreadyConfirmed => "totp_already_confirmed",
            Rejection::TotpNotEnrolled => "totp_not_enrolled",
            Rejection::MfaFactorUsed => "mfa_factor_used",
            Rejection::SessionNotPending => "session_not_pending",
            Rejection::MfaRequired => "mfa_required",
            Rejection::MfaSetupRequired => "mfa_setup_required",
            Rejection::PasskeyRequired => "passkey_required",
            Rejection::Inconsistent { .. } => "inconsistent_command",
            Rejection::EmailTokenInvalid => "email_token_invalid",
            Rejection::AuthorizationCodeInvalid => "authorization_code_invalid",
            Rejection::RefreshTokenInvalid => "refresh_token_invalid",
            Rejection::UnauthorizedGrant => "unauthorized_grant",
            Rejection::PasskeyExists => "passkey_exists",
            Rejection::UnknownPasskey => "unknown_passkey",
            Rejection::PasskeyLimit { .. } => "passkey_limit",
            Rejection::ChallengeUsed => "challenge_used",
            Rejection::PasskeyCounterChanged => "passkey_counter_changed",
            Rejection::UnknownSigningKey { .. } => "unknown_signing_key",
            Rejection::SigningKeyStillNeeded { .. } => "signing_key_still_needed",
            Rejection::UnknownClient { .. } => "unknown_client",
            Rejection::ClientExists { .. } => "client_exists",
            Rejection::ClientDisabled { .. } => "client_disabled",
            Rejection::TenantDisabled { .. } => "tenant_disabled",
            Rejection::RevisionMismatch { .. } => "revision_mismatch",
            Rejection::BindingExists { .. } => "binding_exists",
            Rejection::UnknownBinding { .. } => "unknown_binding",
            Rejection::UnknownRole { .. } => "unknown_role",
            Rejection::ClientAuthenticationFailed => "client_authentication_failed",
            Rejection::AssertionReplayed => "assertion_replayed",
            Rejection::TenantProtected { .. } => "tenant_protected",
            Rejection::RoleInUse { .. } => "role_in_use",
            Rejection::LastOwner { .. } => "last_owner",
            Rejection::IdempotencyKeyUsed => "idempotency_key_used",
            Rejection::UnknownUser { .. } => "unknown_user",
            Rejection::UsernameTaken { .. } => "username_taken",
            Rejection::UnknownOrganization { .. } => "unknown_organization",
            Rejection::AlreadyExists { .. } => "already_exists",
            Rejection::NotAMember { .. } => "not_a_member",
        }
    }
}
