//! Every redb table of a Gatehouse database, declared in one place.
//!
//! State tables are replicated (applied from raft and carried in snapshots); the raft log,
//! vote and stored snapshot are this node's own and never part of a snapshot. The state
//! machine's applied id and membership live in `meta` beside the state they describe, and
//! installing a snapshot overwrites them with the snapshot's own.

use redb::TableDefinition;

/// Small singleton records, by name (see [`meta_keys`]).
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Tenants by id.
pub const TENANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("tenants");
/// Signing keys by `{tenant}/{kid}`.
pub const SIGNING_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("signing_keys");
/// Data keys (wrapped under the KEK) by id.
pub const DATA_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("data_keys");
/// OAuth clients by `{tenant}/{client_id}`.
pub const CLIENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("clients");
/// Role bindings by `{tenant}/{binding_id}`.
pub const BINDINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("bindings");
/// Revoked access tokens by `{tenant}/{jti}`: the token's expiry (i64 ms, big-endian), after
/// which the entry may be pruned.
pub const REVOKED_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("revoked_tokens");
/// Users by `{tenant}/{user_id}`.
pub const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// The username index: `{tenant}/{lowercased username}` → user id (UTF-8).
pub const USERNAMES: TableDefinition<&str, &[u8]> = TableDefinition::new("usernames");
/// Organizations by `{tenant}/{organization_id}`.
pub const ORGANIZATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("organizations");
/// Memberships by `{tenant}/{organization_id}/{user_id}`.
pub const MEMBERSHIPS: TableDefinition<&str, &[u8]> = TableDefinition::new("memberships");
/// Tenant roles by `{tenant}/{name}`.
pub const ROLES: TableDefinition<&str, &[u8]> = TableDefinition::new("roles");
/// Client assertions (`private_key_jwt`) already used, by `{tenant}/{client_id}/{jti}`: the
/// assertion's expiry (i64 ms, big-endian), after which the entry may be pruned.
pub const USED_ASSERTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("used_assertions");
/// Remembered admin API answers by `Idempotency-Key` scope (a hash of caller, route and key).
pub const IDEMPOTENCY: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency");
/// End-user sessions by `{tenant}/{sha256 of the session id}`.
pub const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// Derived: sessions by user, `{tenant}/{user_id}/{id_sha256}` → the session's key.
pub const SESSIONS_BY_USER: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions_by_user");
/// Derived: role bindings by subject, `{tenant}/{subject}/{binding_id}` → the binding's key.
/// Failed sign-ins and holds per account, keyed `{tenant}/{sha256 of the account name}`.
pub const LOCKOUTS: TableDefinition<&str, &[u8]> = TableDefinition::new("lockouts");
/// Single-use email tokens by digest, keyed `{tenant}/{digest}`.
pub const EMAIL_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("email_tokens");
/// Derived: `{tenant}/{user}/{digest}` → the email token's key.
pub const EMAIL_TOKENS_BY_USER: TableDefinition<&str, &[u8]> = TableDefinition::new("email_tokens_by_user");
/// Messages waiting to be sent (or, without SMTP, the dev mailbox), keyed `{tenant}/{id}`.
pub const OUTBOX: TableDefinition<&str, &[u8]> = TableDefinition::new("outbox");
/// End users' passkeys, keyed `{tenant}/{credential id}`.
pub const PASSKEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("passkeys");
/// Derived: `{tenant}/{user}/{credential id}` → the passkey's key.
pub const PASSKEYS_BY_USER: TableDefinition<&str, &[u8]> = TableDefinition::new("passkeys_by_user");
/// WebAuthn challenges spent, `{tenant}/{challenge id}` → expiry: each works once (S46, S47).
pub const USED_CHALLENGES: TableDefinition<&str, &[u8]> = TableDefinition::new("used_challenges");
/// Users' pictures, keyed `{tenant}/{user}`.
pub const AVATARS: TableDefinition<&str, &[u8]> = TableDefinition::new("avatars");
/// OAuth authorization codes by digest, keyed `{tenant}/{digest}`, kept spent until they expire.
pub const AUTHORIZATION_CODES: TableDefinition<&str, &[u8]> = TableDefinition::new("authorization_codes");
/// Users' consents to clients, keyed `{tenant}/{user}/{client}`.
pub const CONSENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("consents");
/// Refresh token families, keyed `{tenant}/{family}`.
pub const REFRESH_FAMILIES: TableDefinition<&str, &[u8]> = TableDefinition::new("refresh_families");
/// Kept beside its rows by every write and rebuilt after a snapshot is installed.
pub const BINDINGS_BY_SUBJECT: TableDefinition<&str, &[u8]> = TableDefinition::new("bindings_by_subject");
/// The audit chain by sequence number, starting at 1.
pub const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

/// The raft log by index.
pub const RAFT_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Raft vote and last purged id, by name (the committed index is kept in memory only).
pub const RAFT_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_state");
/// The current snapshot (meta and data) of this node.
pub const RAFT_SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_snapshot");

/// Names of the singleton records in [`META`].
pub mod meta_keys {
    pub const SCHEMA_VERSION: &str = "schema_version";
    pub const CLUSTER: &str = "cluster";
    pub const AUDIT_HEAD: &str = "audit_head";
    /// The raft state machine's last applied log id, kept with the state it describes.
    pub const SM_APPLIED: &str = "sm_applied";
    /// The raft state machine's last membership, kept with the state it describes.
    pub const SM_MEMBERSHIP: &str = "sm_membership";
}

/// The replicated string-keyed tables, in snapshot order.
pub const STATE_STR_TABLES: [TableDefinition<&str, &[u8]>; 24] = [
    META,
    TENANTS,
    SIGNING_KEYS,
    DATA_KEYS,
    CLIENTS,
    BINDINGS,
    REVOKED_TOKENS,
    USERS,
    USERNAMES,
    ORGANIZATIONS,
    MEMBERSHIPS,
    IDEMPOTENCY,
    USED_ASSERTIONS,
    ROLES,
    SESSIONS,
    LOCKOUTS,
    EMAIL_TOKENS,
    OUTBOX,
    PASSKEYS,
    USED_CHALLENGES,
    AVATARS,
    AUTHORIZATION_CODES,
    CONSENTS,
    REFRESH_FAMILIES,
];
/// Indexes derived from replicated rows: not carried in snapshots, rebuilt after one.
pub const DERIVED_TABLES: [TableDefinition<&str, &[u8]>; 4] =
    [BINDINGS_BY_SUBJECT, SESSIONS_BY_USER, PASSKEYS_BY_USER, EMAIL_TOKENS_BY_USER];
/// The replicated integer-keyed tables, in snapshot order.
pub const STATE_U64_TABLES: [TableDefinition<u64, &[u8]>; 1] = [AUDIT];
