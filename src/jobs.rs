//! The node's background jobs, in one place: each runs on every node until shutdown, and those
//! that write act only while their node leads.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::app::AppState;

/// Starts every job; the handle ends when all of them have stopped.
pub fn spawn(app: Arc<AppState>, stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    let rotation = crate::idm::keys::rotation_job(app.clone(), stop.clone());
    let pruning = crate::idm::tokens::revocation_pruning_job(app.clone(), stop.clone());
    let token_audit = crate::app::token_audit::token_audit_job(app.clone(), stop.clone());
    let window = Duration::from_secs(app.config.rate_limits.failure_audit_window_secs);
    let failures = crate::app::auth_failures::flush_job(app.clone(), window, stop.clone());
    let lockout = crate::app::lockout::flush_job(app.clone(), stop.clone());
    let email_requests = crate::idm::email::request_job(app.clone(), stop.clone());
    let delivery = crate::idm::email::delivery_job(app.clone(), stop.clone());
    let limits = forget_idle_limits(app, stop);
    tokio::spawn(async move {
        tokio::join!(rotation, pruning, token_audit, failures, lockout, email_requests, delivery, limits);
    })
}

/// Every minute, the rate limiter forgets sources and clients whose budgets are full again.
async fn forget_idle_limits(app: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_secs(60)) => app.limits.forget_idle(),
        }
    }
}
