//! `/admin/v1/tenants/{tenant}/keys` (list, rotate, prune) and `/audit` (the tenant's entries).

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::auth::{authorize, AdminBearer, Permission};
use super::responses::{invalid, page_params, refusal, storage, write_failed, Acted, Fetched, Page};
use super::tenants::visible_tenant;
use super::AdminTag;
use crate::app::AppState;
use crate::http::api::checked::Checked;
use crate::http::problem::Problem;
use crate::idm::keys::{self, KeyView, KeysError};

pub struct KeysApi;

/// A signing key and its state.
#[derive(Debug, Object)]
pub struct SigningKey {
    pub kid: String,
    /// `ES256` or `RS256`.
    pub alg: String,
    /// `published` (in JWKS, not signing yet), `active`, `retiring` (tokens it signed may
    /// still be valid) or `retired` (may be pruned).
    pub state: String,
    pub created_at_ms: i64,
    pub active_from_ms: i64,
}

#[derive(Debug, Object)]
pub struct KeyList {
    pub keys: Vec<SigningKey>,
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct RotateKeys {
    /// Sign with the new keys at once instead of after the publish delay (emergencies only:
    /// verifiers that cached JWKS may reject new tokens until they refetch it).
    #[oai(default)]
    pub now: bool,
}

#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct PruneKeys {
    /// Only list what would be removed.
    #[oai(default)]
    pub dry_run: bool,
}

/// An audit entry.
#[derive(Debug, Object)]
pub struct AuditRecord {
    pub seq: u64,
    pub at_ms: i64,
    pub actor: String,
    pub tenant: String,
    pub action: String,
    pub target: String,
    /// `ok` or `refused:<code>`.
    pub outcome: String,
    /// The id of the request that caused it (its `X-Request-Id`), when a request did.
    #[oai(skip_serializing_if_is_none)]
    pub request_id: Option<String>,
    /// The peer address of that request.
    #[oai(skip_serializing_if_is_none)]
    pub peer: Option<String>,
    /// SHA-256 of the entry in the chain, hex.
    pub hash: String,
}

fn view(k: KeyView) -> SigningKey {
    SigningKey {
        kid: k.kid,
        alg: k.alg,
        state: format!("{:?}", k.state).to_lowercase(),
        created_at_ms: k.created_at_ms,
        active_from_ms: k.active_from_ms,
    }
}

fn problem_of(e: KeysError) -> Problem {
    match e {
        KeysError::UnknownTenant(t) => Problem::not_found(format!("there is no tenant {t:?}")),
        KeysError::Refused(r) => refusal(r),
        KeysError::Write(e) => write_failed(e),
        KeysError::Storage(e) => storage(e),
        other => super::responses::unavailable(other),
    }
}

/// A key list's JSON body, for the answer an idempotent rotation or prune remembers.
pub(crate) fn list_json(keys: Vec<KeyView>) -> String {
    poem_openapi::types::ToJSON::to_json_string(&KeyList { keys: keys.into_iter().map(view).collect() })
}

fn list_of(result: Result<Vec<KeyView>, KeysError>) -> Result<KeyList, Problem> {
    result.map(|keys| KeyList { keys: keys.into_iter().map(view).collect() }).map_err(problem_of)
}

#[OpenApi(tag = "AdminTag::Keys")]
impl KeysApi {
    /// List the tenant's signing keys with their states.
    #[oai(path = "/admin/v1/tenants/:tenant/keys", method = "get", operation_id = "listKeys")]
    async fn list(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
    ) -> Fetched<KeyList> {
        if let Err(p) = authorize(&app, &auth, Some(&tenant), Permission::KeysRead) {
            return Fetched::problem(p);
        }
        match list_of(keys::list(&app, &tenant)) {
            Ok(list) => Fetched::Ok(Json(list), None),
            Err(p) => Fetched::problem(p),
        }
    }

    /// Add a new ES256 and RS256 key: in JWKS at once, signing after the publish delay.
    #[oai(path = "/admin/v1/tenants/:tenant/keys/rotate", method = "post", operation_id = "rotateKeys")]
    async fn rotate(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        /// Makes a retry safe: the first successful answer is remembered for 24 h and replayed.
        #[oai(name = "Idempotency-Key", validator(min_length = 1, max_length = 255, pattern = r"^[\x21-\x7e]+$"))]
        _idempotency_key: Header<Option<String>>,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
        body: Json<Checked<RotateKeys>>,
    ) -> Acted<KeyList> {
        let caller = match authorize(&app, &auth, Some(&tenant), Permission::KeysRotate) {
            Ok(c) => c,
            Err(p) => return Acted::problem(p),
        };
        match list_of(keys::rotate(&app, &caller.actor(), &tenant, body.now).await) {
            Ok(list) => Acted::Ok(Json(list), None),
            Err(p) => Acted::problem(p),
        }
    }

    /// Remove retired keys (every token they signed has expired); never an active key or one
    /// whose tokens may still be valid.
    #[oai(path = "/admin/v1/tenants/:tenant/keys/prune", method = "post", operation_id = "pruneKeys")]
    async fn prune(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        /// Makes a retry safe: the first successful answer is remembered for 24 h and replayed.
        #[oai(name = "Idempotency-Key", validator(min_length = 1, max_length = 255, pattern = r"^[\x21-\x7e]+$"))]
        _idempotency_key: Header<Option<String>>,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
        body: Json<Checked<PruneKeys>>,
    ) -> Acted<KeyList> {
        let caller = match authorize(&app, &auth, Some(&tenant), Permission::KeysRotate) {
            Ok(c) => c,
            Err(p) => return Acted::problem(p),
        };
        match list_of(keys::prune(&app, &caller.actor(), &tenant, body.dry_run).await) {
            Ok(list) => Acted::Ok(Json(list), None),
            Err(p) => Acted::problem(p),
        }
    }

    /// The tenant's audit entries, oldest first, filtered by action when asked.
    #[oai(path = "/admin/v1/tenants/:tenant/audit", method = "get", operation_id = "listAuditEntries")]
    async fn audit(
        &self,
        app: Data<&Arc<AppState>>,
        auth: AdminBearer,
        #[oai(validator(max_length = 63, pattern = r"^[a-z0-9][a-z0-9-]{1,62}$"))] tenant: Path<String>,
        /// Only entries with this action, such as `token.issue` or `client.create`.
        #[oai(validator(max_length = 64))]
        action: Query<Option<String>>,
        /// Page size, 1 to 500 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page (a sequence number).
        #[oai(validator(max_length = 19, pattern = r"^[0-9]{1,19}$"))]
        cursor: Query<Option<String>>,
    ) -> Fetched<Page<AuditRecord>> {
        let result = (|| {
            authorize(&app, &auth, Some(&tenant), Permission::AuditRead)?;
            visible_tenant(&app, &tenant)?;
            let (limit, _) = page_params(limit.0, None)?;
            // The schema admits decimal sequence numbers only, so this parses.
            let from = match cursor.0.as_deref() {
                None => 1,
                Some(c) => c
                    .parse::<u64>()
                    .map_err(|_| invalid(vec![("cursor".into(), "not a sequence number".into())]))?
                    .saturating_add(1),
            };
            // The chain is global; walk it in bounded batches and keep this tenant's entries.
            let reader = app.store.read().map_err(storage)?;
            let mut items = Vec::new();
            let mut next = from;
            let mut last_seen = None;
            'scan: loop {
                let batch = reader.audit_entries(next, 1000).map_err(storage)?;
                if batch.is_empty() {
                    break;
                }
                for e in batch {
                    next = e.seq + 1;
                    last_seen = Some(e.seq);
                    if e.tenant == *tenant && action.0.as_ref().is_none_or(|a| *a == e.action) {
                        items.push(AuditRecord {
                            seq: e.seq,
                            at_ms: e.at_ms,
                            actor: e.actor,
                            tenant: e.tenant,
                            action: e.action,
                            target: e.target,
                            outcome: e.outcome,
                            request_id: Some(e.request_id).filter(|r| !r.is_empty()),
                            peer: Some(e.peer).filter(|p| !p.is_empty()),
                            hash: hex::encode(e.hash),
                        });
                        if items.len() == limit {
                            break 'scan;
                        }
                    }
                }
            }
            let next_cursor = (items.len() == limit).then(|| last_seen.map(|s| s.to_string())).flatten();
            Ok(Page { items, next_cursor })
        })();
        match result {
            Ok(page) => Fetched::Ok(Json(page), None),
            Err(p) => Fetched::problem(p),
        }
    }
}
