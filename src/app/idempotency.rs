//! The ticket of a request answered under an `Idempotency-Key`: its first action carries the
//! answer it will give (`Command::Idempotent`), so `apply` records action and answer in one
//! transaction and refuses a second action under the same key. The HTTP layer opens the ticket
//! (`http::idempotency`) and says how answers are rendered; [`AppState::write`] attaches it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use gatehouse_storage::model::IdempotentResponse;
use gatehouse_storage::{Command, Rejection};

use crate::app::AppState;

/// How long an answer is remembered.
pub const KEEP_MS: i64 = 24 * 3600 * 1000;

/// An answer rendered from the command that will produce it.
pub struct RenderedAnswer {
    pub status: u16,
    pub etag: Option<String>,
    /// The JSON body, secrets already removed (empty for none).
    pub body: String,
}

/// Renders the answer an action will give, or `None` when it cannot be told from the command.
pub type Renderer = fn(&AppState, &Command) -> Option<RenderedAnswer>;

/// The request being answered under a key: what its first action must carry.
pub struct Ticket {
    scope: String,
    request_sha256: String,
    now_ms: i64,
    render: Renderer,
    /// Set once the action carried the answer.
    carried: AtomicBool,
    /// Set when `apply` refused the action because the key's answer exists already.
    lost_race: AtomicBool,
}

impl Ticket {
    pub fn new(scope: String, request_sha256: String, now_ms: i64, render: Renderer) -> Arc<Ticket> {
        Arc::new(Ticket {
            scope,
            request_sha256,
            now_ms,
            render,
            carried: AtomicBool::new(false),
            lost_race: AtomicBool::new(false),
        })
    }

    /// Whether the request's action carried its answer (nothing is left to remember).
    pub fn carried(&self) -> bool {
        self.carried.load(Ordering::Acquire)
    }

    /// Whether another request under the key won: its answer is the one to give.
    pub fn lost_race(&self) -> bool {
        self.lost_race.load(Ordering::Acquire)
    }
}

tokio::task_local! {
    static TICKET: Arc<Ticket>;
}

/// Runs `fut` (the request's handling) under `ticket`.
pub async fn under<F: std::future::Future>(ticket: Arc<Ticket>, fut: F) -> F::Output {
    TICKET.scope(ticket, fut).await
}

/// Called for every proposal a request makes: under a ticket, the first command whose answer
/// can be rendered from it is wrapped to remember that answer atomically.
pub(crate) fn carry(app: &AppState, command: Command) -> Command {
    let Ok(ticket) = TICKET.try_with(Arc::clone) else { return command };
    if ticket.carried() {
        return command;
    }
    let Some(answer) = (ticket.render)(app, &command) else { return command };
    ticket.carried.store(true, Ordering::Release);
    let record = IdempotentResponse {
        v: 1,
        scope: ticket.scope.clone(),
        request_sha256: ticket.request_sha256.clone(),
        status: answer.status,
        body: answer.body,
        etag: answer.etag,
        created_at_ms: ticket.now_ms,
        expires_at_ms: ticket.now_ms + KEEP_MS,
    };
    Command::Idempotent { inner: Box::new(command), answer: record }
}

/// Notes `apply`'s refusal of a second action under this request's key.
pub(crate) fn note_refusal(rejection: &Rejection) {
    if matches!(rejection, Rejection::IdempotencyKeyUsed) {
        let _ = TICKET.try_with(|t| t.lost_race.store(true, Ordering::Release));
    }
}
