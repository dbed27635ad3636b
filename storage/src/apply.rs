//! `apply`: the deterministic state transition of one command.
//!
//! Every command is checked first and written second, so a refusal writes nothing but its
//! audit entry and a command never half-applies. Callers may apply many commands in one write
//! transaction (group commit); a [`StoreError`] aborts that whole transaction.

use redb::{ReadableTable, Table, WriteTransaction};

use crate::audit::{self, AuditDraft};
use crate::command::{Applied, Command, IssuedToken, NewTenant, Outcome, Proposal, Rejection};
use crate::model::binding::{binding_key, role_key};
use crate::model::client::client_key;
use crate::model::tenant::{is_valid_tenant_id, RESERVED_TENANT_IDS};
use crate::model::user::{membership_key, organization_key, user_key, username_key};
use crate::model::{
    key_states, BindingRecord, ClientRecord, ClientStatus, IdempotentResponse, KeyState, MembershipRecord,
    SigningKeyRecord, TenantRecord, TenantStatus, UserRecord, ROLE_TEMPLATES,
};
use crate::{codec, tables, StoreError};

struct Tables<'t> {
    meta: Table<'t, &'static str, &'static [u8]>,
    tenants: Table<'t, &'static str, &'static [u8]>,
    signing_keys: Table<'t, &'static str, &'static [u8]>,
    data_keys: Table<'t, &'static str, &'static [u8]>,
    clients: Table<'t, &'static str, &'static [u8]>,
    bindings: Table<'t, &'static str, &'static [u8]>,
    revoked: Table<'t, &'static str, &'static [u8]>,
    users: Table<'t, &'static str, &'static [u8]>,
    usernames: Table<'t, &'static str, &'static [u8]>,
    organizations: Table<'t, &'static str, &'static [u8]>,
    memberships: Table<'t, &'static str, &'static [u8]>,
    idempotency: Table<'t, &'static str, &'static [u8]>,
    used_assertions: Table<'t, &'static str, &'static [u8]>,
    roles: Table<'t, &'static str, &'static [u8]>,
    audit: Table<'t, u64, &'static [u8]>,
}

/// Applies one proposal and appends its audit entry, inside `txn`.
pub fn apply(txn: &WriteTransaction, proposal: &Proposal) -> Result<Outcome, StoreError> {
    let mut t = Tables {
        meta: txn.open_table(tables::META)?,
        tenants: txn.open_table(tables::TENANTS)?,
        signing_keys: txn.open_table(tables::SIGNING_KEYS)?,
        data_keys: txn.open_table(tables::DATA_KEYS)?,
        clients: txn.open_table(tables::CLIENTS)?,
        bindings: txn.open_table(tables::BINDINGS)?,
        revoked: txn.open_table(tables::REVOKED_TOKENS)?,
        users: txn.open_table(tables::USERS)?,
        usernames: txn.open_table(tables::USERNAMES)?,
        organizations: txn.open_table(tables::ORGANIZATIONS)?,
        memberships: txn.open_table(tables::MEMBERSHIPS)?,
        idempotency: txn.open_table(tables::IDEMPOTENCY)?,
        used_assertions: txn.open_table(tables::USED_ASSERTIONS)?,
        roles: txn.open_table(tables::ROLES)?,
        audit: txn.open_table(tables::AUDIT)?,
    };
    if let Command::IssueTokens(batch) = &proposal.command {
        return issue_tokens(&mut t, proposal.at_ms, batch);
    }
    if let Command::RecordAuthFailures(failures) = &proposal.command {
        return record_failures(&mut t, proposal.at_ms, failures);
    }
    let (tenant, target) = audit_subject(&proposal.command);
    let outcome = match check(&t, &proposal.command, proposal.at_ms)? {
        Err(rejection) => Outcome::Refused(rejection),
        Ok(()) => Outcome::Applied(write(&mut t, &proposal.command, proposal.at_ms)?),
    };
    let outcome_text = match &outcome {
        Outcome::Applied(_) => "ok".to_string(),
        Outcome::Refused(r) => format!("refused:{}", r.code()),
    };
    audit::append(
        &mut t.meta,
        &mut t.audit,
        AuditDraft {
            at_ms: proposal.at_ms,
            actor: proposal.actor.clone(),
            tenant,
            action: proposal.command.action().to_string(),
            target,
            outcome: outcome_text,
            origin: proposal.origin.clone(),
        },
    )?;
    Ok(outcome)
}

/// Each token of the batch is checked and audited on its own (actor: its client).
fn issue_tokens(t: &mut Tables<'_>, at_ms: i64, batch: &[IssuedToken]) -> Result<Outcome, StoreError> {
    let mut refused = Vec::with_capacity(batch.len());
    for issued in batch {
        let single = Command::IssueToken(issued.clone());
        let result = check(t, &single, at_ms)?;
        let (tenant, target) = audit_subject(&single);
        let actor = match &issued.client_id {
            Some(c) => format!("client:{c}"),
            None => issued.subject.clone(),
        };
        let outcome = match &result {
            Ok(()) => "ok".to_string(),
            Err(r) => format!("refused:{}", r.code()),
        };
        let action = single.action().to_string();
        let draft = AuditDraft { at_ms, actor, tenant, action, target, outcome, origin: issued.origin.clone() };
        audit::append(&mut t.meta, &mut t.audit, draft)?;
        refused.push(result.err());
    }
    Ok(Outcome::Applied(Applied::TokensIssued { refused }))
}

/// One audit entry per coalesced failure, with its count and first and last time.
fn record_failures(t: &mut Tables<'_>, at_ms: i64, failures: &[crate::AuthFailures]) -> Result<Outcome, StoreError> {
    for f in failures {
        // The client id is the caller's string: quoted and escaped, so it cannot pose as
        // another field or break a log line.
        let target = format!(
            "{} client:{:?} from {} count={} first_ms={} last_ms={}",
            f.endpoint, f.client_id, f.source, f.count, f.first_ms, f.last_ms
        );
        let draft = AuditDraft {
            at_ms,
            actor: "anonymous".into(),
            tenant: f.tenant.clone(),
            action: "authentication.failed".into(),
            target,
            outcome: format!("refused:{}", f.reason),
            origin: None,
        };
        audit::append(&mut t.meta, &mut t.audit, draft)?;
    }
    Ok(Outcome::Applied(Applied::FailuresRecorded { entries: failures.len() }))
}

fn audit_subject(command: &Command) -> (String, String) {
    match command {
        Command::Bootstrap { cluster, .. } => ("system".into(), format!("cluster:{}", cluster.cluster_id)),
        Command::CreateTenant(n) => (n.tenant.id.clone(), format!("tenant:{}", n.tenant.id)),
        Command::AddSigningKeys { tenant, keys } => {
            let kids: Vec<&str> = keys.iter().map(|k| k.kid.as_str()).collect();
            (tenant.clone(), format!("signing_keys:{}", kids.join(",")))
        }
        Command::PruneSigningKeys { tenant, kids, .. } => (tenant.clone(), format!("signing_keys:{}", kids.join(","))),
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
        Command::Idempotent { inner, .. } => audit_subject(inner),
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
        Command::AddMember(m) => (m.tenant.clone(), format!("organization:{} user:{}", m.organization_id, m.user_id)),
        Command::RemoveMember { tenant, organization_id, user_id } => {
            (tenant.clone(), format!("organization:{organization_id} user:{user_id}"))
        }
        Command::RememberResponse(r) => ("system".into(), format!("idempotency:{} status={}", r.scope, r.status)),
        Command::PruneIdempotency => ("system".into(), "idempotency".into()),
    }
}

fn check(t: &Tables<'_>, command: &Command, now_ms: i64) -> Result<Result<(), Rejection>, StoreError> {
    let bootstrapped = t.meta.get(tables::meta_keys::CLUSTER)?.is_some();
    match command {
        Command::Bootstrap { tenants, .. } => {
            if bootstrapped {
                return Ok(Err(Rejection::AlreadyBootstrapped));
            }
            let mut ids = std::collections::HashSet::new();
            let mut data_keys = std::collections::HashSet::new();
            for n in tenants {
                if !ids.insert(n.tenant.id.as_str()) {
                    return Ok(Err(Rejection::TenantExists { id: n.tenant.id.clone() }));
                }
                if !data_keys.insert(n.data_key.id.as_str()) {
                    return Ok(Err(Rejection::DataKeyExists { id: n.data_key.id.clone() }));
                }
                if let Err(r) = check_new_tenant(t, n, true)? {
                    return Ok(Err(r));
                }
            }
            Ok(Ok(()))
        }
        Command::CreateTenant(n) => {
            if !bootstrapped {
                return Ok(Err(Rejection::NotBootstrapped));
            }
            check_new_tenant(t, n, false)
        }
        Command::AddSigningKeys { tenant, keys } => {
            let record: TenantRecord = match t.tenants.get(tenant.as_str())? {
                Some(v) => codec::decode("tenants", tenant, v.value())?,
                None => return Ok(Err(Rejection::UnknownTenant { id: tenant.clone() })),
            };
            let mut kids = std::collections::HashSet::new();
            for k in keys {
                if k.tenant != *tenant || k.private.key_id != record.data_key_id {
                    let what = format!("signing key {} is not sealed under tenant {tenant}'s data key", k.kid);
                    return Ok(Err(Rejection::Inconsistent { what }));
                }
                if !kids.insert(k.kid.as_str()) {
                    return Ok(Err(Rejection::SigningKeyExists { tenant: tenant.clone(), kid: k.kid.clone() }));
                }
                if let Err(r) = check_signing_key(t, k)? {
                    return Ok(Err(r));
                }
            }
            Ok(Ok(()))
        }
        Command::PruneSigningKeys { tenant, kids, max_token_lifetime_ms } => {
            check_prune(t, tenant, kids, *max_token_lifetime_ms, now_ms)
        }
        Command::CreateClient(c) => {
            if let Err(r) = check_active_tenant(t, &c.tenant)? {
                return Ok(Err(r));
            }
            if t.clients.get(c.table_key().as_str())?.is_some() {
                return Ok(Err(Rejection::ClientExists { tenant: c.tenant.clone(), client_id: c.client_id.clone() }));
            }
            Ok(Ok(()))
        }
        Command::UpdateClient { client, expected_revision } => {
            let stored = match read_client(t, &client.tenant, &client.client_id)? {
                Ok(c) => c,
                Err(r) => return Ok(Err(r)),
            };
            if stored.revision != *expected_revision || client.revision != stored.revision + 1 {
                return Ok(Err(Rejection::RevisionMismatch { current: stored.revision }));
            }
            if stored.secret_sha256 != client.secret_sha256 || stored.kind != client.kind {
                let what = "an update cannot change a client's kind or secret".to_string();
                return Ok(Err(Rejection::Inconsistent { what }));
            }
            if client.status != ClientStatus::Active && stored.status == ClientStatus::Active {
                let subject = format!("client:{}", client.client_id);
                return keeps_an_owner(t, &client.tenant, |b| b.subject == subject);
            }
            Ok(Ok(()))
        }
        Command::DeleteClient { tenant, client_id } => {
            if let Err(r) = read_client(t, tenant, client_id)? {
                return Ok(Err(r));
            }
            let subject = format!("client:{client_id}");
            keeps_an_owner(t, tenant, |b| b.subject == subject)
        }
        Command::CreateRole(r) => {
            if let Err(rej) = check_active_tenant(t, &r.tenant)? {
                return Ok(Err(rej));
            }
            if !ROLE_TEMPLATES.contains(&r.template.as_str()) {
                return Ok(Err(Rejection::UnknownRole { role: r.template.clone() }));
            }
            if ROLE_TEMPLATES.contains(&r.name.as_str())
                || t.roles.get(role_key(&r.tenant, &r.name).as_str())?.is_some()
            {
                return Ok(Err(Rejection::AlreadyExists { what: "role".into(), id: r.name.clone() }));
            }
            Ok(Ok(()))
        }
        Command::DeleteRole { tenant, name } => {
            if t.roles.get(role_key(tenant, name).as_str())?.is_none() {
                return Ok(Err(Rejection::UnknownRole { role: name.clone() }));
            }
            let bound =
                matching_keys(&t.bindings, "bindings", &format!("{tenant}/"), |b: &BindingRecord| b.role == *name)?;
            if !bound.is_empty() {
                return Ok(Err(Rejection::RoleInUse { name: name.clone() }));
            }
            Ok(Ok(()))
        }
        Command::CreateBinding(b) => {
            if let Err(r) = check_active_tenant(t, &b.tenant)? {
                return Ok(Err(r));
            }
            let tenant_role = t.roles.get(role_key(&b.tenant, &b.role).as_str())?.is_some();
            if !ROLE_TEMPLATES.contains(&b.role.as_str()) && !tenant_role {
                return Ok(Err(Rejection::UnknownRole { role: b.role.clone() }));
            }
            if t.bindings.get(b.table_key().as_str())?.is_some() {
                return Ok(Err(Rejection::BindingExists { id: b.id.clone() }));
            }
            if let Some(org) = b.scope.as_deref().and_then(|s| s.strip_prefix("org:")) {
                if let Err(r) = check_organization(t, &b.tenant, org)? {
                    return Ok(Err(r));
                }
            }
            if let Some(client_id) = b.subject.strip_prefix("client:") {
                read_client(t, &b.tenant, client_id).map(|r| r.map(|_| ()))
            } else if let Some(user_id) = b.subject.strip_prefix("user:") {
                read_user(t, &b.tenant, user_id).map(|r| r.map(|_| ()))
            } else {
                Ok(Err(Rejection::Inconsistent { what: format!("unknown subject kind {:?}", b.subject) }))
            }
        }
        Command::DeleteBinding { tenant, id } => {
            if t.bindings.get(binding_key(tenant, id).as_str())?.is_none() {
                return Ok(Err(Rejection::UnknownBinding { tenant: tenant.clone(), id: id.clone() }));
            }
            keeps_an_owner(t, tenant, |b| b.id == *id)
        }
        Command::IssueToken(issued) => {
            if let Err(r) = check_active_tenant(t, &issued.tenant)? {
                return Ok(Err(r));
            }
            if let Some(client_id) = &issued.client_id {
                match read_client(t, &issued.tenant, client_id)? {
                    Err(r) => return Ok(Err(r)),
                    Ok(c) if c.status != ClientStatus::Active => {
                        return Ok(Err(Rejection::ClientDisabled { client_id: client_id.clone() }))
                    }
                    Ok(_) => {}
                }
            }
            Ok(Ok(()))
        }
        Command::ClientAuthenticationFailed { .. } => Ok(Err(Rejection::ClientAuthenticationFailed)),
        Command::RecordAuthFailures(_) => Ok(Ok(())),
        Command::IssueTokens(_) => Ok(Ok(())), // handled by `issue_tokens`
        Command::RevokeToken { tenant, .. } => {
            if t.tenants.get(tenant.as_str())?.is_none() {
                return Ok(Err(Rejection::UnknownTenant { id: tenant.clone() }));
            }
            Ok(Ok(()))
        }
        Command::PruneRevocations => Ok(Ok(())),
        Command::ConsumeAssertion { tenant, client_id, jti, .. } => {
            if let Err(r) = check_active_tenant(t, tenant)? {
                return Ok(Err(r));
            }
            if t.used_assertions.get(format!("{tenant}/{client_id}/{jti}").as_str())?.is_some() {
                return Ok(Err(Rejection::AssertionReplayed));
            }
            Ok(Ok(()))
        }
        Command::UpdateTenant { id, .. } => {
            if t.tenants.get(id.as_str())?.is_none() {
                return Ok(Err(Rejection::UnknownTenant { id: id.clone() }));
            }
            Ok(Ok(()))
        }
        Command::DeleteTenant { id } => {
            if id == "system" || id == "default" {
                return Ok(Err(Rejection::TenantProtected { id: id.clone() }));
            }
            if t.tenants.get(id.as_str())?.is_none() {
                return Ok(Err(Rejection::UnknownTenant { id: id.clone() }));
            }
            Ok(Ok(()))
        }
        Command::CreateUser(u) => {
            if let Err(r) = check_active_tenant(t, &u.tenant)? {
                return Ok(Err(r));
            }
            if t.users.get(user_key(&u.tenant, &u.id).as_str())?.is_some() {
                return Ok(Err(Rejection::AlreadyExists { what: "user".into(), id: u.id.clone() }));
            }
            if t.usernames.get(username_key(&u.tenant, &u.username).as_str())?.is_some() {
                return Ok(Err(Rejection::UsernameTaken { tenant: u.tenant.clone(), username: u.username.clone() }));
            }
            Ok(Ok(()))
        }
        Command::UpdateUser { user, expected_revision } => {
            let stored = match read_user(t, &user.tenant, &user.id)? {
                Ok(u) => u,
                Err(r) => return Ok(Err(r)),
            };
            if stored.revision != *expected_revision || user.revision != stored.revision + 1 {
                return Ok(Err(Rejection::RevisionMismatch { current: stored.revision }));
            }
            let new_key = username_key(&user.tenant, &user.username);
            if new_key != username_key(&stored.tenant, &stored.username) && t.usernames.get(new_key.as_str())?.is_some()
            {
                return Ok(Err(Rejection::UsernameTaken {
                    tenant: user.tenant.clone(),
                    username: user.username.clone(),
                }));
            }
            if user.status != crate::model::UserStatus::Active && stored.status == crate::model::UserStatus::Active {
                let subject = format!("user:{}", user.id);
                return keeps_an_owner(t, &user.tenant, |b| b.subject == subject);
            }
            Ok(Ok(()))
        }
        Command::SetPassword { tenant, user_id, .. } => read_user(t, tenant, user_id).map(|r| r.map(|_| ())),
        Command::DeleteUser { tenant, user_id } => {
            if let Err(r) = read_user(t, tenant, user_id)? {
                return Ok(Err(r));
            }
            let subject = format!("user:{user_id}");
            keeps_an_owner(t, tenant, |b| b.subject == subject)
        }
        Command::CreateOrganization(o) => {
            if let Err(r) = check_active_tenant(t, &o.tenant)? {
                return Ok(Err(r));
            }
            if t.organizations.get(organization_key(&o.tenant, &o.id).as_str())?.is_some() {
                return Ok(Err(Rejection::AlreadyExists { what: "organization".into(), id: o.id.clone() }));
            }
            Ok(Ok(()))
        }
        Command::DeleteOrganization { tenant, id } => check_organization(t, tenant, id),
        Command::AddMember(m) => {
            if let Err(r) = check_organization(t, &m.tenant, &m.organization_id)? {
                return Ok(Err(r));
            }
            if let Err(r) = read_user(t, &m.tenant, &m.user_id)? {
                return Ok(Err(r));
            }
            if t.memberships.get(m.table_key().as_str())?.is_some() {
                let id = format!("{}/{}", m.organization_id, m.user_id);
                return Ok(Err(Rejection::AlreadyExists { what: "membership".into(), id }));
            }
            Ok(Ok(()))
        }
        Command::Idempotent { inner, answer } => {
            // An answer past its 24 h is gone for readers, so it no longer holds the key.
            if let Some(v) = t.idempotency.get(answer.scope.as_str())? {
                let kept: IdempotentResponse = codec::decode("idempotency", &answer.scope, v.value())?;
                if kept.expires_at_ms >= now_ms {
                    return Ok(Err(Rejection::IdempotencyKeyUsed));
                }
            }
            if matches!(**inner, Command::Idempotent { .. } | Command::IssueTokens(_) | Command::RecordAuthFailures(_))
            {
                let what = "only a single action can be answered under an Idempotency-Key".to_string();
                return Ok(Err(Rejection::Inconsistent { what }));
            }
            check(t, inner, now_ms)
        }
        Command::RememberResponse(r) => {
            if t.idempotency.get(r.scope.as_str())?.is_some() {
                return Ok(Err(Rejection::AlreadyExists { what: "idempotency record".into(), id: r.scope.clone() }));
            }
            Ok(Ok(()))
        }
        Command::PruneIdempotency => Ok(Ok(())),
        Command::RemoveMember { tenant, organization_id, user_id } => {
            if t.memberships.get(membership_key(tenant, organization_id, user_id).as_str())?.is_none() {
                return Ok(Err(Rejection::NotAMember {
                    organization_id: organization_id.clone(),
                    user_id: user_id.clone(),
                }));
            }
            Ok(Ok(()))
        }
    }
}

fn check_prune(
    t: &Tables<'_>,
    tenant: &str,
    kids: &[String],
    max_token_lifetime_ms: i64,
    now_ms: i64,
) -> Result<Result<(), Rejection>, StoreError> {
    if t.tenants.get(tenant)?.is_none() {
        return Ok(Err(Rejection::UnknownTenant { id: tenant.to_string() }));
    }
    let keys = tenant_keys(t, tenant)?;
    let states = key_states(&keys, now_ms, max_token_lifetime_ms);
    for kid in kids {
        match states.iter().find(|(k, _)| k == kid) {
            None => return Ok(Err(Rejection::UnknownSigningKey { tenant: tenant.to_string(), kid: kid.clone() })),
            Some((_, KeyState::Retired)) => {}
            Some((_, state)) => {
                let state = format!("{state:?}").to_lowercase();
                return Ok(Err(Rejection::SigningKeyStillNeeded { kid: kid.clone(), state }));
            }
        }
    }
    Ok(Ok(()))
}

fn check_active_tenant(t: &Tables<'_>, tenant: &str) -> Result<Result<(), Rejection>, StoreError> {
    let record: TenantRecord = match t.tenants.get(tenant)? {
        Some(v) => codec::decode("tenants", tenant, v.value())?,
        None => return Ok(Err(Rejection::UnknownTenant { id: tenant.to_string() })),
    };
    if record.status != TenantStatus::Active {
        return Ok(Err(Rejection::TenantDisabled { id: tenant.to_string() }));
    }
    Ok(Ok(()))
}

fn read_client(t: &Tables<'_>, tenant: &str, client_id: &str) -> Result<Result<ClientRecord, Rejection>, StoreError> {
    let key = client_key(tenant, client_id);
    match t.clients.get(key.as_str())? {
        Some(v) => Ok(Ok(codec::decode("clients", &key, v.value())?)),
        None => Ok(Err(Rejection::UnknownClient { tenant: tenant.to_string(), client_id: client_id.to_string() })),
    }
}

fn read_user(t: &Tables<'_>, tenant: &str, id: &str) -> Result<Result<UserRecord, Rejection>, StoreError> {
    let key = user_key(tenant, id);
    match t.users.get(key.as_str())? {
        Some(v) => Ok(Ok(codec::decode("users", &key, v.value())?)),
        None => Ok(Err(Rejection::UnknownUser { tenant: tenant.to_string(), id: id.to_string() })),
    }
}

fn check_organization(t: &Tables<'_>, tenant: &str, id: &str) -> Result<Result<(), Rejection>, StoreError> {
    if t.organizations.get(organization_key(tenant, id).as_str())?.is_none() {
        return Ok(Err(Rejection::UnknownOrganization { tenant: tenant.to_string(), id: id.to_string() }));
    }
    Ok(Ok(()))
}

/// Keys of the rows of a `{tenant}/…` table whose record matches.
/// Refuses a change that takes away every usable owner of a tenant: removing (or disabling the
/// subject of) the bindings `removed` picks, when they are all of the tenant's whole-tenant
/// owner bindings whose subject is active. A tenant that has an owner keeps one.
fn keeps_an_owner(
    t: &Tables<'_>,
    tenant: &str,
    removed: impl Fn(&BindingRecord) -> bool,
) -> Result<Result<(), Rejection>, StoreError> {
    let (start, end) = prefix_range(tenant);
    let (mut owners, mut removed_owners) = (0usize, 0usize);
    for item in t.bindings.range(start.as_str()..end.as_str())? {
        let (k, v) = item?;
        let b: BindingRecord = codec::decode("bindings", k.value(), v.value())?;
        if b.role != "owner" || b.scope.is_some() || !subject_is_active(t, tenant, &b.subject)? {
            continue;
        }
        owners += 1;
        if removed(&b) {
            removed_owners += 1;
        }
    }
    if owners > 0 && removed_owners == owners {
        return Ok(Err(Rejection::LastOwner { tenant: tenant.to_string() }));
    }
    Ok(Ok(()))
}

/// Whether a binding's subject (`client:{id}` or `user:{id}`) exists and is not disabled.
fn subject_is_active(t: &Tables<'_>, tenant: &str, subject: &str) -> Result<bool, StoreError> {
    if let Some(id) = subject.strip_prefix("client:") {
        return Ok(read_client(t, tenant, id)?.is_ok_and(|c| c.status == ClientStatus::Active));
    }
    if let Some(id) = subject.strip_prefix("user:") {
        return Ok(read_user(t, tenant, id)?.is_ok_and(|u| u.status == crate::model::UserStatus::Active));
    }
    Ok(false)
}

fn matching_keys<T: serde::de::DeserializeOwned>(
    table: &Table<'_, &'static str, &'static [u8]>,
    name: &'static str,
    prefix: &str,
    keep: impl Fn(&T) -> bool,
) -> Result<Vec<String>, StoreError> {
    let end = format!("{}\u{10FFFF}", prefix);
    let mut out = Vec::new();
    for item in table.range(prefix..end.as_str())? {
        let (k, v) = item?;
        let record: T = codec::decode(name, k.value(), v.value())?;
        if keep(&record) {
            out.push(k.value().to_string());
        }
    }
    Ok(out)
}

fn remove_all(table: &mut Table<'_, &'static str, &'static [u8]>, keys: &[String]) -> Result<(), StoreError> {
    for key in keys {
        table.remove(key.as_str())?;
    }
    Ok(())
}

fn tenant_keys(t: &Tables<'_>, tenant: &str) -> Result<Vec<SigningKeyRecord>, StoreError> {
    let (start, end) = (format!("{tenant}/"), format!("{tenant}0"));
    let mut keys = Vec::new();
    for item in t.signing_keys.range(start.as_str()..end.as_str())? {
        let (k, v) = item?;
        keys.push(codec::decode("signing_keys", k.value(), v.value())?);
    }
    Ok(keys)
}

fn check_new_tenant(t: &Tables<'_>, n: &NewTenant, allow_reserved: bool) -> Result<Result<(), Rejection>, StoreError> {
    let id = &n.tenant.id;
    if n.tenant.data_key_id != n.data_key.id {
        return Ok(Err(Rejection::Inconsistent { what: format!("tenant {id} names a data key it does not carry") }));
    }
    let mut kids = std::collections::HashSet::new();
    for k in &n.signing_keys {
        if k.tenant != *id || k.private.key_id != n.data_key.id {
            return Ok(Err(Rejection::Inconsistent {
                what: format!("signing key {} does not belong to tenant {id}", k.kid),
            }));
        }
        if !kids.insert(k.kid.as_str()) {
            return Ok(Err(Rejection::SigningKeyExists { tenant: id.clone(), kid: k.kid.clone() }));
        }
    }
    if !is_valid_tenant_id(id) {
        return Ok(Err(Rejection::InvalidTenantId { id: id.clone() }));
    }
    if !allow_reserved && RESERVED_TENANT_IDS.contains(&id.as_str()) {
        return Ok(Err(Rejection::ReservedTenantId { id: id.clone() }));
    }
    if t.tenants.get(id.as_str())?.is_some() {
        return Ok(Err(Rejection::TenantExists { id: id.clone() }));
    }
    if t.data_keys.get(n.data_key.id.as_str())?.is_some() {
        return Ok(Err(Rejection::DataKeyExists { id: n.data_key.id.clone() }));
    }
    for k in &n.signing_keys {
        if let Err(r) = check_signing_key(t, k)? {
            return Ok(Err(r));
        }
    }
    Ok(Ok(()))
}

fn check_signing_key(t: &Tables<'_>, k: &SigningKeyRecord) -> Result<Result<(), Rejection>, StoreError> {
    if t.signing_keys.get(k.table_key().as_str())?.is_some() {
        return Ok(Err(Rejection::SigningKeyExists { tenant: k.tenant.clone(), kid: k.kid.clone() }));
    }
    Ok(Ok(()))
}

fn write(t: &mut Tables<'_>, command: &Command, now_ms: i64) -> Result<Applied, StoreError> {
    match command {
        Command::Bootstrap { cluster, tenants } => {
            t.meta.insert(tables::meta_keys::CLUSTER, codec::encode(cluster).as_slice())?;
            for n in tenants {
                write_new_tenant(t, n)?;
            }
            Ok(Applied::Bootstrapped { cluster_id: cluster.cluster_id.clone() })
        }
        Command::CreateTenant(n) => {
            write_new_tenant(t, n)?;
            Ok(Applied::TenantCreated { id: n.tenant.id.clone() })
        }
        Command::AddSigningKeys { tenant, keys } => {
            for k in keys {
                t.signing_keys.insert(k.table_key().as_str(), codec::encode(k).as_slice())?;
            }
            Ok(Applied::SigningKeysAdded { tenant: tenant.clone(), kids: keys.iter().map(|k| k.kid.clone()).collect() })
        }
        Command::PruneSigningKeys { tenant, kids, .. } => {
            for kid in kids {
                t.signing_keys.remove(crate::model::signing_key::signing_key_id(tenant, kid).as_str())?;
            }
            Ok(Applied::SigningKeysPruned { tenant: tenant.clone(), kids: kids.clone() })
        }
        Command::CreateClient(c) => {
            t.clients.insert(c.table_key().as_str(), codec::encode(c).as_slice())?;
            Ok(Applied::ClientCreated { client_id: c.client_id.clone() })
        }
        Command::UpdateClient { client, .. } => {
            t.clients.insert(client.table_key().as_str(), codec::encode(client).as_slice())?;
            Ok(Applied::ClientUpdated { client_id: client.client_id.clone(), revision: client.revision })
        }
        Command::DeleteClient { tenant, client_id } => {
            t.clients.remove(client_key(tenant, client_id).as_str())?;
            // Bindings of a deleted client go with it, so a new client can never inherit them.
            let subject = format!("client:{client_id}");
            let mut doomed = Vec::new();
            let (start, end) = prefix_range(tenant);
            for item in t.bindings.range(start.as_str()..end.as_str())? {
                let (k, v) = item?;
                let b: BindingRecord = codec::decode("bindings", k.value(), v.value())?;
                if b.subject == subject {
                    doomed.push(k.value().to_string());
                }
            }
            for key in doomed {
                t.bindings.remove(key.as_str())?;
            }
            Ok(Applied::ClientDeleted { client_id: client_id.clone() })
        }
        Command::CreateRole(r) => {
            t.roles.insert(role_key(&r.tenant, &r.name).as_str(), codec::encode(r).as_slice())?;
            Ok(Applied::RoleCreated { name: r.name.clone() })
        }
        Command::DeleteRole { tenant, name } => {
            t.roles.remove(role_key(tenant, name).as_str())?;
            Ok(Applied::RoleDeleted { name: name.clone() })
        }
        Command::CreateBinding(b) => {
            t.bindings.insert(b.table_key().as_str(), codec::encode(b).as_slice())?;
            Ok(Applied::BindingCreated { id: b.id.clone() })
        }
        Command::DeleteBinding { tenant, id } => {
            t.bindings.remove(binding_key(tenant, id).as_str())?;
            Ok(Applied::BindingDeleted { id: id.clone() })
        }
        Command::IssueToken(issued) => Ok(Applied::TokenIssued { jti: issued.jti.clone() }),
        Command::IssueTokens(_) => Ok(Applied::TokensIssued { refused: Vec::new() }),
        Command::RecordAuthFailures(f) => Ok(Applied::FailuresRecorded { entries: f.len() }),
        Command::ClientAuthenticationFailed { .. } => {
            Err(StoreError::Database("a failed authentication is always refused".into()))
        }
        Command::RevokeToken { tenant, jti, exp_ms } => {
            let key = format!("{tenant}/{jti}");
            t.revoked.insert(key.as_str(), exp_ms.to_be_bytes().as_slice())?;
            Ok(Applied::TokenRevoked { jti: jti.clone() })
        }
        Command::PruneRevocations => {
            let mut expired = Vec::new();
            for item in t.revoked.iter()? {
                let (k, v) = item?;
                let exp = <[u8; 8]>::try_from(v.value()).map(i64::from_be_bytes).unwrap_or(i64::MAX);
                if exp < now_ms {
                    expired.push(k.value().to_string());
                }
            }
            for key in &expired {
                t.revoked.remove(key.as_str())?;
            }
            let mut used = Vec::new();
            for item in t.used_assertions.iter()? {
                let (k, v) = item?;
                let exp = <[u8; 8]>::try_from(v.value()).map(i64::from_be_bytes).unwrap_or(i64::MAX);
                if exp < now_ms {
                    used.push(k.value().to_string());
                }
            }
            remove_all(&mut t.used_assertions, &used)?;
            Ok(Applied::RevocationsPruned { count: (expired.len() + used.len()) as u64 })
        }
        Command::UpdateTenant { id, display_name, status, self_registration } => {
            let mut record: TenantRecord = match t.tenants.get(id.as_str())? {
                Some(v) => codec::decode("tenants", id, v.value())?,
                None => return Err(StoreError::Database(format!("tenant {id} vanished between check and write"))),
            };
            record.display_name = display_name.clone();
            record.status = *status;
            record.self_registration = *self_registration;
            t.tenants.insert(id.as_str(), codec::encode(&record).as_slice())?;
            Ok(Applied::TenantUpdated { id: id.clone() })
        }
        Command::DeleteTenant { id } => {
            let record: TenantRecord = match t.tenants.get(id.as_str())? {
                Some(v) => codec::decode("tenants", id, v.value())?,
                None => return Err(StoreError::Database(format!("tenant {id} vanished between check and write"))),
            };
            t.tenants.remove(id.as_str())?;
            t.data_keys.remove(record.data_key_id.as_str())?;
            let prefix = format!("{id}/");
            for table in [
                &mut t.signing_keys,
                &mut t.clients,
                &mut t.bindings,
                &mut t.revoked,
                &mut t.users,
                &mut t.usernames,
                &mut t.organizations,
                &mut t.memberships,
                &mut t.used_assertions,
                &mut t.roles,
            ] {
                let end = format!("{id}0"); // '0' sorts right after '/'
                let mut keys = Vec::new();
                for item in table.range(prefix.as_str()..end.as_str())? {
                    keys.push(item?.0.value().to_string());
                }
                remove_all(table, &keys)?;
            }
            Ok(Applied::TenantDeleted { id: id.clone() })
        }
        Command::CreateUser(u) => {
            t.users.insert(user_key(&u.tenant, &u.id).as_str(), codec::encode(u).as_slice())?;
            t.usernames.insert(username_key(&u.tenant, &u.username).as_str(), u.id.as_bytes())?;
            Ok(Applied::UserCreated { id: u.id.clone() })
        }
        Command::UpdateUser { user, .. } => {
            let key = user_key(&user.tenant, &user.id);
            let stored: UserRecord = match t.users.get(key.as_str())? {
                Some(v) => codec::decode("users", &key, v.value())?,
                None => return Err(StoreError::Database(format!("user {key} vanished between check and write"))),
            };
            let record = UserRecord { password_hash: stored.password_hash.clone(), ..user.clone() };
            t.usernames.remove(username_key(&stored.tenant, &stored.username).as_str())?;
            t.usernames.insert(username_key(&user.tenant, &user.username).as_str(), user.id.as_bytes())?;
            t.users.insert(key.as_str(), codec::encode(&record).as_slice())?;
            Ok(Applied::UserUpdated { id: user.id.clone(), revision: user.revision })
        }
        Command::SetPassword { tenant, user_id, password_hash } => {
            let key = user_key(tenant, user_id);
            let mut record: UserRecord = match t.users.get(key.as_str())? {
                Some(v) => codec::decode("users", &key, v.value())?,
                None => return Err(StoreError::Database(format!("user {key} vanished between check and write"))),
            };
            record.password_hash = Some(password_hash.clone());
            t.users.insert(key.as_str(), codec::encode(&record).as_slice())?;
            Ok(Applied::PasswordSet { user_id: user_id.clone() })
        }
        Command::DeleteUser { tenant, user_id } => {
            let key = user_key(tenant, user_id);
            let stored: Option<UserRecord> =
                t.users.get(key.as_str())?.map(|v| codec::decode("users", &key, v.value())).transpose()?;
            if let Some(u) = stored {
                t.usernames.remove(username_key(tenant, &u.username).as_str())?;
            }
            t.users.remove(key.as_str())?;
            let subject = format!("user:{user_id}");
            let prefix = format!("{tenant}/");
            let bindings = matching_keys(&t.bindings, "bindings", &prefix, |b: &BindingRecord| b.subject == subject)?;
            remove_all(&mut t.bindings, &bindings)?;
            let members =
                matching_keys(&t.memberships, "memberships", &prefix, |m: &MembershipRecord| m.user_id == *user_id)?;
            remove_all(&mut t.memberships, &members)?;
            Ok(Applied::UserDeleted { id: user_id.clone() })
        }
        Command::CreateOrganization(o) => {
            t.organizations.insert(organization_key(&o.tenant, &o.id).as_str(), codec::encode(o).as_slice())?;
            Ok(Applied::OrganizationCreated { id: o.id.clone() })
        }
        Command::DeleteOrganization { tenant, id } => {
            t.organizations.remove(organization_key(tenant, id).as_str())?;
            let members =
                matching_keys(&t.memberships, "memberships", &format!("{tenant}/{id}/"), |_: &MembershipRecord| true)?;
            remove_all(&mut t.memberships, &members)?;
            let scope = format!("org:{id}");
            let bindings = matching_keys(&t.bindings, "bindings", &format!("{tenant}/"), |b: &BindingRecord| {
                b.scope.as_deref() == Some(scope.as_str())
            })?;
            remove_all(&mut t.bindings, &bindings)?;
            Ok(Applied::OrganizationDeleted { id: id.clone() })
        }
        Command::AddMember(m) => {
            t.memberships.insert(m.table_key().as_str(), codec::encode(m).as_slice())?;
            Ok(Applied::MemberAdded { organization_id: m.organization_id.clone(), user_id: m.user_id.clone() })
        }
        Command::ConsumeAssertion { tenant, client_id, jti, exp_ms } => {
            let key = format!("{tenant}/{client_id}/{jti}");
            t.used_assertions.insert(key.as_str(), exp_ms.to_be_bytes().as_slice())?;
            Ok(Applied::AssertionConsumed)
        }
        Command::Idempotent { inner, answer } => {
            let applied = write(t, inner, now_ms)?;
            t.idempotency.insert(answer.scope.as_str(), codec::encode(answer).as_slice())?;
            Ok(applied)
        }
        Command::RememberResponse(r) => {
            t.idempotency.insert(r.scope.as_str(), codec::encode(r).as_slice())?;
            Ok(Applied::ResponseRemembered)
        }
        Command::PruneIdempotency => {
            let expired =
                matching_keys(&t.idempotency, "idempotency", "", |r: &IdempotentResponse| r.expires_at_ms < now_ms)?;
            remove_all(&mut t.idempotency, &expired)?;
            Ok(Applied::IdempotencyPruned { count: expired.len() as u64 })
        }
        Command::RemoveMember { tenant, organization_id, user_id } => {
            t.memberships.remove(membership_key(tenant, organization_id, user_id).as_str())?;
            Ok(Applied::MemberRemoved { organization_id: organization_id.clone(), user_id: user_id.clone() })
        }
    }
}

/// The key range of one tenant's rows in a `{tenant}/…` table.
fn prefix_range(tenant: &str) -> (String, String) {
    (format!("{tenant}/"), format!("{tenant}0")) // '0' sorts right after '/'
}

fn write_new_tenant(t: &mut Tables<'_>, n: &NewTenant) -> Result<(), StoreError> {
    t.tenants.insert(n.tenant.id.as_str(), codec::encode(&n.tenant).as_slice())?;
    t.data_keys.insert(n.data_key.id.as_str(), codec::encode(&n.data_key).as_slice())?;
    for k in &n.signing_keys {
        t.signing_keys.insert(k.table_key().as_str(), codec::encode(k).as_slice())?;
    }
    Ok(())
}
