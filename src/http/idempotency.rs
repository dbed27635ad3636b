//! `Idempotency-Key` on admin API POSTs: the first successful answer is remembered for 24 h,
//! replicated through raft, scoped to the caller (the verified token's tenant and subject),
//! the route and the key. A replay gets that answer again with every secret removed and
//! `Idempotent-Replayed: true`; the same key with another body gets 422. Concurrent requests
//! with one key on this node wait for each other.
//!
//! The answer travels in the action's own command (`Command::Idempotent`), rendered from the
//! command before it is proposed (`admin::remembered_answer`), so `apply` records the action
//! and its answer in one transaction and refuses a second action under the same scope: a
//! crash or a retry at any point never creates twice. Actions whose answer cannot be rendered
//! from their command (key rotation and pruning) are remembered after they complete.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use gatehouse_storage::model::IdempotentResponse;
use gatehouse_storage::{Command, Proposal};
use poem::http::{Method, StatusCode};
use poem::{Endpoint, IntoResponse, Request, Response};

use crate::app::idempotency::{RenderedAnswer, Ticket};
use crate::app::AppState;
use crate::http::api::admin::Caller;
use crate::http::problem::{FieldError, Problem};

pub const HEADER: &str = "Idempotency-Key";
pub use crate::app::idempotency::KEEP_MS;
/// Members removed from remembered answers: a secret is shown once.
const SECRET_MEMBERS: [&str; 4] = ["client_secret", "password", "access_token", "refresh_token"];

static IN_FLIGHT: LazyLock<Mutex<HashMap<String, std::sync::Weak<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(Default::default);

/// The per-key lock of a scope. The map holds only weak references, so a lock lives exactly as
/// long as a request holds or waits on it, however that request ends (a client that
/// disconnects mid-request drops its reference with its future); dead entries are swept as new
/// keys arrive, so the map stays as small as the requests in flight.
fn lock_for(scope: &str) -> Arc<tokio::sync::Mutex<()>> {
    let mut map = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(live) = map.get(scope).and_then(std::sync::Weak::upgrade) {
        return live;
    }
    if map.len() >= 64 {
        map.retain(|_, lock| lock.strong_count() > 0);
    }
    let lock = Arc::new(tokio::sync::Mutex::new(()));
    map.insert(scope.to_string(), Arc::downgrade(&lock));
    lock
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    hex::encode(ctx.finish())
}

/// `tenant/sub` of the caller the admin gate authenticated, or `None` (the handler then
/// answers 401).
fn caller(req: &Request) -> Option<String> {
    let caller = req.extensions().get::<Arc<Caller>>()?;
    Some(format!("{}/{}", caller.claims.tenant, caller.claims.sub))
}

fn key_problem(detail: &str) -> Response {
    let mut p = Problem::new(StatusCode::BAD_REQUEST, "invalid_request", detail);
    p.errors = Some(vec![FieldError { field: HEADER.into(), message: detail.into() }]);
    p.into_response()
}

/// The admin API's rendering of an action's answer, with its secrets removed.
fn render_redacted(app: &AppState, command: &Command) -> Option<RenderedAnswer> {
    let mut answer = crate::http::api::admin::remembered_answer(app, command)?;
    answer.body = redact(answer.body.as_bytes());
    Some(answer)
}

/// Removes secret members anywhere in a JSON document.
fn redact(body: &[u8]) -> String {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                for name in SECRET_MEMBERS {
                    map.remove(name);
                }
                map.values_mut().for_each(walk);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(mut v) => {
            walk(&mut v);
            v.to_string()
        }
        Err(_) => String::new(),
    }
}

fn reused_key() -> Response {
    let detail = "this Idempotency-Key was used with a different request body";
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused", detail).into_response()
}

fn replay(r: &IdempotentResponse) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
    let mut b = Response::builder().status(status).header("Idempotent-Replayed", "true");
    if let Some(etag) = &r.etag {
        b = b.header("ETag", etag.as_str());
    }
    if r.body.is_empty() {
        b.finish()
    } else {
        b.content_type("application/json; charset=utf-8").body(r.body.clone())
    }
}

pub async fn idempotent<E: Endpoint>(ep: &E, mut req: Request, app: Arc<AppState>) -> poem::Result<Response> {
    let applies = req.method() == Method::POST && req.uri().path().starts_with("/admin/v1/");
    let key = req.headers().get(HEADER).map(|v| v.to_str().map(str::to_string));
    let (true, Some(key)) = (applies, key) else {
        return ep.call(req).await.map(IntoResponse::into_response);
    };
    let Ok(key) = key else {
        return Ok(key_problem("the Idempotency-Key must be visible ASCII"));
    };
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Ok(key_problem("the Idempotency-Key must be 1 to 255 visible ASCII characters"));
    }
    let Some(caller) = caller(&req) else {
        return ep.call(req).await.map(IntoResponse::into_response);
    };
    let body = req.take_body().into_bytes().await?;
    req.set_body(body.clone());
    let route = req.uri().path().to_string();
    let scope = sha256_hex(&[caller.as_bytes(), b"POST", route.as_bytes(), key.as_bytes()]);
    // Keyed: a body may hold a password, and the digest is replicated and kept for a day.
    let request_sha256 = app.cipher.keyed_digest("idempotency-request", &body);

    let lock = lock_for(&scope);
    let _one_at_a_time = lock.lock().await;
    answer_once(ep, req, &app, &scope, request_sha256).await
}

/// Replays the remembered answer, refuses a changed body, or runs the request and remembers
/// a successful answer.
async fn answer_once<E: Endpoint>(
    ep: &E,
    req: Request,
    app: &AppState,
    scope: &str,
    request_sha256: String,
) -> poem::Result<Response> {
    let now_ms = app.clock.now_ms();
    let remembered = match app.store.read().and_then(|r| r.idempotent_response(scope, now_ms)) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("reading idempotency records: {e}");
            let p =
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "this node cannot serve the request now");
            return Ok(p.into_response());
        }
    };
    Ok(match remembered {
        Some(r) if r.request_sha256 == request_sha256 => replay(&r),
        Some(_) => reused_key(),
        None => {
            let ticket = Ticket::new(scope.to_string(), request_sha256.clone(), now_ms, render_redacted);
            let resp = crate::app::idempotency::under(ticket.clone(), ep.call(req)).await?.into_response();
            let carried = ticket.carried();
            if ticket.lost_race() || !resp.status().is_success() {
                // Another request under this key may have won the race (on another node, say),
                // so that this one was refused by apply or, earlier, by a use case's check of
                // the state the winner changed ("username taken"): the winner's answer is the
                // one to give.
                return Ok(match app.store.read().and_then(|r| r.idempotent_response(scope, now_ms)) {
                    Ok(Some(r)) if r.request_sha256 == request_sha256 => replay(&r),
                    Ok(Some(_)) => reused_key(),
                    _ => resp,
                });
            }
            if resp.status().is_success() && !carried {
                remember(app, resp, scope.to_string(), request_sha256, now_ms).await
            } else {
                resp
            }
        }
    })
}

/// Stores the answer (redacted) through raft and returns it unchanged to this caller.
async fn remember(app: &AppState, resp: Response, scope: String, request_sha256: String, now_ms: i64) -> Response {
    let (parts, body) = resp.into_parts();
    let bytes = body.into_bytes().await.unwrap_or_default();
    let record = IdempotentResponse {
        v: 1,
        scope,
        request_sha256,
        status: parts.status.as_u16(),
        body: redact(&bytes),
        etag: parts.headers.get("ETag").and_then(|v| v.to_str().ok()).map(str::to_string),
        created_at_ms: now_ms,
        expires_at_ms: now_ms + KEEP_MS,
    };
    let proposal = Proposal {
        origin: None,
        at_ms: now_ms,
        actor: "idempotency".into(),
        command: Command::RememberResponse(record),
    };
    if let Err(e) = app.write(proposal).await {
        // The action itself is done; only a later replay would miss it.
        tracing::warn!("could not remember an idempotent answer: {e}");
    }
    Response::from_parts(parts, poem::Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_lock_lives_only_while_a_request_holds_it() {
        let held: Vec<_> = (0..100).map(|i| lock_for(&format!("test-scope-{i}"))).collect();
        assert!(Arc::ptr_eq(&held[7], &lock_for("test-scope-7")), "one lock per scope while held");
        drop(held);
        let _next = lock_for("test-scope-next");
        let live = IN_FLIGHT.lock().unwrap().values().filter(|l| l.strong_count() > 0).count();
        let kept = IN_FLIGHT.lock().unwrap().keys().filter(|k| k.starts_with("test-scope-")).count();
        assert!(kept <= 1 && live >= 1, "dropped locks are swept: {kept} kept");
    }
}
