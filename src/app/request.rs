//! The request being served on a task: its id (also `X-Request-Id` on the answer) and its peer
//! address, so the writes it causes carry them into the audit trail and its log lines too.

/// Who sent the request being served: its id (also `X-Request-Id` on the answer) and the
/// peer address. Set for the whole of a request's task, so the audit entries it causes and the
/// log lines it writes carry both.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub id: String,
    pub peer: Option<std::net::SocketAddr>,
}

tokio::task_local! {
    static REQUEST: RequestContext;
}

/// Runs `fut` as the serving of the request `context` describes.
pub async fn serve<F: std::future::Future>(context: RequestContext, fut: F) -> F::Output {
    REQUEST.scope(context, fut).await
}

/// The request being served on this task, if any.
pub fn current_request() -> Option<RequestContext> {
    REQUEST.try_with(Clone::clone).ok()
}

/// The request being served, as the origin its writes record in the audit trail.
pub fn current_origin() -> Option<gatehouse_storage::command::Origin> {
    current_request().map(|r| gatehouse_storage::command::Origin {
        request_id: r.id,
        peer: r.peer.map(|p| p.to_string()).unwrap_or_default(),
    })
}
