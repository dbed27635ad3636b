//! Typed reads over one redb read transaction: a consistent view of the state.

use redb::{ReadTransaction, ReadableDatabase, ReadableTable};

use crate::audit::{self, AuditEntry, AuditHead, VerifyReport};
use crate::model::binding::subject_prefix;
use crate::model::user::{organization_key, user_key, username_key};
use crate::model::{
    BindingRecord, ClientRecord, ClusterRecord, DataKeyRecord, IdempotentResponse, MembershipRecord,
    OrganizationRecord, SigningKeyRecord, TenantRecord, UserRecord,
};
use crate::table::{self, tenant_prefix};
use crate::{codec, tables, StoreError};

pub struct Reader {
    txn: ReadTransaction,
}

impl Reader {
    pub fn begin(db: &impl ReadableDatabase) -> Result<Reader, StoreError> {
        Ok(Reader { txn: db.begin_read()? })
    }

    pub fn cluster(&self) -> Result<Option<ClusterRecord>, StoreError> {
        let meta = self.txn.open_table(tables::META)?;
        let key = tables::meta_keys::CLUSTER;
        meta.get(key)?.map(|v| codec::decode("meta", key, v.value())).transpose()
    }

    /// Whether `node_id` was removed from the cluster (`RetireNode`).
    pub fn is_retired(&self, node_id: u64) -> Result<bool, StoreError> {
        let meta = self.txn.open_table(tables::META)?;
        Ok(meta.get(crate::model::cluster::retired_node_key(node_id).as_str())?.is_some())
    }

    /// A join token by id (used ones too: a used token is refused, not unknown).
    pub fn join_token(&self, id: &str) -> Result<Option<crate::model::JoinTokenRecord>, StoreError> {
        let meta = self.txn.open_table(tables::META)?;
        let key = crate::model::cluster::join_token_key(id);
        meta.get(key.as_str())?.map(|v| codec::decode("meta", &key, v.value())).transpose()
    }

    pub fn tenant(&self, id: &str) -> Result<Option<TenantRecord>, StoreError> {
        let t = self.txn.open_table(tables::TENANTS)?;
        table::get(&t, id)
    }

    pub fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        let t = self.txn.open_table(tables::TENANTS)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            out.push(codec::decode("tenants", k.value(), v.value())?);
        }
        Ok(out)
    }

    /// The signing keys of one tenant, in kid order.
    pub fn signing_keys(&self, tenant: &str) -> Result<Vec<SigningKeyRecord>, StoreError> {
        let t = self.txn.open_table(tables::SIGNING_KEYS)?;
        table::rows_under(&t, &tenant_prefix(tenant), |_| true)
    }

    pub fn client(&self, tenant: &str, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
        let t = self.txn.open_table(tables::CLIENTS)?;
        let key = crate::model::client::client_key(tenant, client_id);
        table::get(&t, &key)
    }

    /// Up to `limit` clients of a tenant in client id order, after `after` when given.
    pub fn clients(&self, tenant: &str, after: Option<&str>, limit: usize) -> Result<Vec<ClientRecord>, StoreError> {
        let t = self.txn.open_table(tables::CLIENTS)?;
        table::page(&t, &tenant_prefix(tenant), after, limit, |_| true)
    }

    /// Up to `limit` bindings of a tenant in id order, after `after` when given.
    pub fn bindings(&self, tenant: &str, after: Option<&str>, limit: usize) -> Result<Vec<BindingRecord>, StoreError> {
        let t = self.txn.open_table(tables::BINDINGS)?;
        table::page(&t, &tenant_prefix(tenant), after, limit, |_| true)
    }

    pub fn binding(&self, tenant: &str, id: &str) -> Result<Option<BindingRecord>, StoreError> {
        let t = self.txn.open_table(tables::BINDINGS)?;
        let key = crate::model::binding::binding_key(tenant, id);
        table::get(&t, &key)
    }

    pub fn role(&self, tenant: &str, name: &str) -> Result<Option<crate::model::RoleRecord>, StoreError> {
        let t = self.txn.open_table(tables::ROLES)?;
        let key = crate::model::binding::role_key(tenant, name);
        table::get(&t, &key)
    }

    pub fn roles(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<crate::model::RoleRecord>, StoreError> {
        let t = self.txn.open_table(tables::ROLES)?;
        table::page(&t, &tenant_prefix(tenant), after, limit, |_| true)
    }

    /// The bindings of one subject (`client:{id}`, `user:{id}`), through the subject index.
    fn bindings_of(&self, tenant: &str, subject: &str) -> Result<Vec<BindingRecord>, StoreError> {
        let index = self.txn.open_table(tables::BINDINGS_BY_SUBJECT)?;
        let rows = self.txn.open_table(tables::BINDINGS)?;
        let mut out = Vec::new();
        for key in table::index_values(&index, &subject_prefix(tenant, subject))? {
            // The index names candidates; the row decides (never trust an entry's prefix alone).
            if let Some(b) = table::get::<BindingRecord>(&rows, &String::from_utf8_lossy(&key))? {
                if b.subject == subject {
                    out.push(b);
                }
            }
        }
        Ok(out)
    }

    /// Every role `subject` holds in `tenant`, in any scope.
    pub fn roles_held(&self, tenant: &str, subject: &str) -> Result<Vec<String>, StoreError> {
        let mut roles: Vec<String> = self.bindings_of(tenant, subject)?.into_iter().map(|b| b.role).collect();
        roles.sort();
        roles.dedup();
        Ok(roles)
    }

    /// The roles `subject` holds over the whole of `tenant` (unscoped bindings only).
    pub fn roles_of(&self, tenant: &str, subject: &str) -> Result<Vec<String>, StoreError> {
        let bindings = self.bindings_of(tenant, subject)?;
        let mut roles: Vec<String> = bindings.into_iter().filter(|b| b.scope.is_none()).map(|b| b.role).collect();
        roles.sort();
        roles.dedup();
        Ok(roles)
    }

    /// Whether an access token is on the tenant's deny-list.
    pub fn is_revoked(&self, tenant: &str, jti: &str) -> Result<bool, StoreError> {
        let t = self.txn.open_table(tables::REVOKED_TOKENS)?;
        Ok(t.get(format!("{tenant}/{jti}").as_str())?.is_some())
    }

    pub fn user(&self, tenant: &str, id: &str) -> Result<Option<UserRecord>, StoreError> {
        let t = self.txn.open_table(tables::USERS)?;
        let key = user_key(tenant, id);
        table::get(&t, &key)
    }

    /// The user with this username (case-insensitive), if any.
    pub fn user_by_username(&self, tenant: &str, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let index = self.txn.open_table(tables::USERNAMES)?;
        let id = index
            .get(username_key(tenant, username).as_str())?
            .map(|v| String::from_utf8_lossy(v.value()).into_owned());
        match id {
            Some(id) => self.user(tenant, &id),
            None => Ok(None),
        }
    }

    /// Up to `limit` users of a tenant in id order after `after`, keeping those `keep` accepts.
    pub fn users(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&UserRecord) -> bool,
    ) -> Result<Vec<UserRecord>, StoreError> {
        let t = self.txn.open_table(tables::USERS)?;
        table::page(&t, &tenant_prefix(tenant), after, limit, keep)
    }

    pub fn organization(&self, tenant: &str, id: &str) -> Result<Option<OrganizationRecord>, StoreError> {
        let t = self.txn.open_table(tables::ORGANIZATIONS)?;
        let key = organization_key(tenant, id);
        table::get(&t, &key)
    }

    pub fn organizations(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<OrganizationRecord>, StoreError> {
        let t = self.txn.open_table(tables::ORGANIZATIONS)?;
        table::page(&t, &tenant_prefix(tenant), after, limit, |_| true)
    }

    /// Up to `limit` members of an organization in user id order after `after`.
    pub fn members(
        &self,
        tenant: &str,
        organization_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<MembershipRecord>, StoreError> {
        let t = self.txn.open_table(tables::MEMBERSHIPS)?;
        table::page(&t, &format!("{tenant}/{organization_id}/"), after, limit, |_| true)
    }

    /// The email token stored under `token_sha256`, expired or not (the caller checks).
    pub fn email_token(
        &self,
        tenant: &str,
        token_sha256: &str,
    ) -> Result<Option<crate::model::EmailTokenRecord>, StoreError> {
        let t = self.txn.open_table(tables::EMAIL_TOKENS)?;
        table::get(&t, &crate::model::email::email_token_key(tenant, token_sha256))
    }

    /// The authorization code stored under `code_sha256`, spent or expired or not (the caller
    /// checks; `apply` decides).
    /// What `user_id` allowed `client_id`, if they were asked.
    pub fn consent(
        &self,
        tenant: &str,
        user_id: &str,
        client_id: &str,
    ) -> Result<Option<crate::model::ConsentRecord>, StoreError> {
        let t = self.txn.open_table(tables::CONSENTS)?;
        table::get(&t, &crate::model::consent::consent_key(tenant, user_id, client_id))
    }

    pub fn authorization_code(
        &self,
        tenant: &str,
        code_sha256: &str,
    ) -> Result<Option<crate::model::AuthorizationCodeRecord>, StoreError> {
        let t = self.txn.open_table(tables::AUTHORIZATION_CODES)?;
        table::get(&t, &crate::model::authorization_code::authorization_code_key(tenant, code_sha256))
    }

    pub fn refresh_family(
        &self,
        tenant: &str,
        family_id: &str,
    ) -> Result<Option<crate::model::RefreshFamilyRecord>, StoreError> {
        let t = self.txn.open_table(tables::REFRESH_FAMILIES)?;
        table::get(&t, &crate::model::refresh_token::refresh_family_key(tenant, family_id))
    }

    /// How many refresh families may be forgotten at `now_ms` (the pruning job's question).
    pub fn expired_refresh_families(&self, now_ms: i64) -> Result<u64, StoreError> {
        let mut n = 0;
        let t = self.txn.open_table(tables::REFRESH_FAMILIES)?;
        table::scan(&t, "", |_, f: crate::model::RefreshFamilyRecord| {
            n += u64::from(f.forget_at_ms() <= now_ms);
            Ok(true)
        })?;
        Ok(n)
    }

    /// How many authorization codes may be forgotten at `now_ms` (the pruning job's question).
    pub fn expired_authorization_codes(&self, now_ms: i64) -> Result<u64, StoreError> {
        let mut n = 0;
        let t = self.txn.open_table(tables::AUTHORIZATION_CODES)?;
        table::scan(&t, "", |_, c: crate::model::AuthorizationCodeRecord| {
            n += u64::from(c.forget_at_ms() <= now_ms);
            Ok(true)
        })?;
        Ok(n)
    }

    /// Up to `limit` messages of a tenant's outbox (its dev mailbox without SMTP), newest first.
    pub fn outbox(&self, tenant: &str, limit: usize) -> Result<Vec<crate::model::OutboxRecord>, StoreError> {
        let t = self.txn.open_table(tables::OUTBOX)?;
        let mut all: Vec<crate::model::OutboxRecord> = table::rows_under(&t, &tenant_prefix(tenant), |_| true)?;
        all.sort_by_key(|m| std::cmp::Reverse((m.created_at_ms, m.id.clone())));
        all.truncate(limit);
        Ok(all)
    }

    /// Up to `limit` messages of every tenant due for delivery at `now_ms`, oldest first.
    pub fn outbox_due(&self, now_ms: i64, limit: usize) -> Result<Vec<crate::model::OutboxRecord>, StoreError> {
        let t = self.txn.open_table(tables::OUTBOX)?;
        let mut due = Vec::new();
        table::scan(&t, "", |_, m: crate::model::OutboxRecord| {
            if m.next_attempt_ms <= now_ms && m.expires_at_ms > now_ms {
                due.push(m);
            }
            Ok(due.len() < limit)
        })?;
        Ok(due)
    }

    /// How many email tokens and messages expired before `now_ms`.
    pub fn expired_email(&self, now_ms: i64) -> Result<u64, StoreError> {
        let mut n = 0;
        let t = self.txn.open_table(tables::EMAIL_TOKENS)?;
        table::scan(&t, "", |_, k: crate::model::EmailTokenRecord| {
            n += u64::from(k.expires_at_ms <= now_ms);
            Ok(true)
        })?;
        let t = self.txn.open_table(tables::OUTBOX)?;
        table::scan(&t, "", |_, m: crate::model::OutboxRecord| {
            n += u64::from(m.expires_at_ms <= now_ms);
            Ok(true)
        })?;
        Ok(n)
    }

    /// A user's picture, if they have one.
    pub fn avatar(&self, tenant: &str, user_id: &str) -> Result<Option<crate::model::AvatarRecord>, StoreError> {
        let t = self.txn.open_table(tables::AVATARS)?;
        table::get(&t, &crate::model::avatar::avatar_key(tenant, user_id))
    }

    /// Whether the WebAuthn challenge `id` of `tenant` was spent.
    pub fn challenge_spent(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let t = self.txn.open_table(tables::USED_CHALLENGES)?;
        Ok(t.get(format!("{tenant}/{id}").as_str())?.is_some())
    }

    /// The passkey with this credential id, if the tenant has it.
    pub fn passkey(
        &self,
        tenant: &str,
        credential_id: &str,
    ) -> Result<Option<crate::model::PasskeyRecord>, StoreError> {
        let t = self.txn.open_table(tables::PASSKEYS)?;
        table::get(&t, &crate::model::passkey::passkey_key(tenant, credential_id))
    }

    /// A user's passkeys, through the passkeys-by-user index.
    pub fn passkeys_of(&self, tenant: &str, user_id: &str) -> Result<Vec<crate::model::PasskeyRecord>, StoreError> {
        let index = self.txn.open_table(tables::PASSKEYS_BY_USER)?;
        let rows = self.txn.open_table(tables::PASSKEYS)?;
        let mut out = Vec::new();
        for key in table::index_values(&index, &crate::model::passkey::user_passkeys_prefix(tenant, user_id))? {
            if let Some(p) = table::get::<crate::model::PasskeyRecord>(&rows, &String::from_utf8_lossy(&key))? {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// An account's failed sign-ins and hold, if it has any.
    pub fn lockout(
        &self,
        tenant: &str,
        account_sha256: &str,
    ) -> Result<Option<crate::model::LockoutRecord>, StoreError> {
        let t = self.txn.open_table(tables::LOCKOUTS)?;
        table::get(&t, &crate::model::lockout::lockout_key(tenant, account_sha256))
    }

    /// How many failure records `policy` no longer needs at `now_ms`.
    pub fn forgotten_lockouts(&self, now_ms: i64, policy: &crate::model::LockoutPolicy) -> Result<u64, StoreError> {
        let t = self.txn.open_table(tables::LOCKOUTS)?;
        let mut n = 0;
        table::scan(&t, "", |_, r: crate::model::LockoutRecord| {
            n += u64::from(r.forgotten_at(now_ms, policy));
            Ok(true)
        })?;
        Ok(n)
    }

    /// The session whose id hashes to `id_sha256`, live or not (the caller checks the times).
    pub fn session(&self, tenant: &str, id_sha256: &str) -> Result<Option<crate::model::SessionRecord>, StoreError> {
        let t = self.txn.open_table(tables::SESSIONS)?;
        table::get(&t, &crate::model::session::session_key(tenant, id_sha256))
    }

    /// The sessions of one user, through the sessions-by-user index.
    pub fn sessions_of(&self, tenant: &str, user_id: &str) -> Result<Vec<crate::model::SessionRecord>, StoreError> {
        let index = self.txn.open_table(tables::SESSIONS_BY_USER)?;
        let rows = self.txn.open_table(tables::SESSIONS)?;
        let mut out = Vec::new();
        let prefix = crate::model::session::user_sessions_prefix(tenant, user_id);
        for key in table::index_values(&index, &prefix)? {
            if let Some(s) = table::get::<crate::model::SessionRecord>(&rows, &String::from_utf8_lossy(&key))? {
                if s.user_id == user_id {
                    out.push(s);
                }
            }
        }
        Ok(out)
    }

    /// How many sessions have ended by `now_ms` (and may be pruned).
    pub fn ended_sessions(&self, now_ms: i64) -> Result<u64, StoreError> {
        let t = self.txn.open_table(tables::SESSIONS)?;
        let mut n = 0;
        table::scan(&t, "", |_, s: crate::model::SessionRecord| {
            n += u64::from(!s.live_at(now_ms));
            Ok(true)
        })?;
        Ok(n)
    }

    /// The remembered answer for an idempotency scope, if it has not expired at `now_ms`.
    pub fn idempotent_response(&self, scope: &str, now_ms: i64) -> Result<Option<IdempotentResponse>, StoreError> {
        let t = self.txn.open_table(tables::IDEMPOTENCY)?;
        let found: Option<IdempotentResponse> = table::get(&t, scope)?;
        Ok(found.filter(|r| r.expires_at_ms >= now_ms))
    }

    /// How many remembered answers expired before `now_ms`.
    pub fn expired_idempotency(&self, now_ms: i64) -> Result<u64, StoreError> {
        let t = self.txn.open_table(tables::IDEMPOTENCY)?;
        let mut n = 0;
        for item in t.iter()? {
            let (k, v) = item?;
            let r: IdempotentResponse = codec::decode("idempotency", k.value(), v.value())?;
            if r.expires_at_ms < now_ms {
                n += 1;
            }
        }
        Ok(n)
    }

    /// How many deny-list entries belong to tokens that expired before `now_ms`.
    /// (Also counts used client assertions that expired: the same command prunes both.)
    pub fn expired_revocations(&self, now_ms: i64) -> Result<u64, StoreError> {
        let mut n = 0;
        for table in [tables::REVOKED_TOKENS, tables::USED_ASSERTIONS, tables::USED_CHALLENGES] {
            let t = self.txn.open_table(table)?;
            for item in t.iter()? {
                let (_, v) = item?;
                if table::expiry_of(v.value()) < now_ms {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    pub fn data_key(&self, id: &str) -> Result<Option<DataKeyRecord>, StoreError> {
        let t = self.txn.open_table(tables::DATA_KEYS)?;
        table::get(&t, id)
    }

    pub fn audit_head(&self) -> Result<AuditHead, StoreError> {
        audit::read_head(&self.txn.open_table(tables::META)?)
    }

    /// Up to `limit` audit entries from sequence number `from` on.
    pub fn audit_entries(&self, from: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let t = self.txn.open_table(tables::AUDIT)?;
        let mut out = Vec::new();
        for item in t.range(from..)?.take(limit) {
            let (k, v) = item?;
            let entry = AuditEntry::from_bytes(v.value()).ok_or_else(|| StoreError::Decode {
                table: "audit",
                key: k.value().to_string(),
                reason: "not a well-formed audit entry".into(),
            })?;
            out.push(entry);
        }
        Ok(out)
    }

    pub fn verify_audit(&self) -> Result<VerifyReport, StoreError> {
        audit::verify(&self.txn.open_table(tables::META)?, &self.txn.open_table(tables::AUDIT)?)
    }

    /// A raw singleton from the meta table (used by the raft crate for its own records).
    pub fn meta_raw(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let meta = self.txn.open_table(tables::META)?;
        Ok(meta.get(key)?.map(|v| v.value().to_vec()))
    }
}
