//! The queue of email requests (sign-in codes and links, resets, address checks): a request is
//! answered at once, the same way whether its address names an account or not (S41), and the
//! message is made later by `idm::email::request_job`. The queue is bounded by
//! `email.queue`; past it, requests get 503.

use std::sync::Mutex;

use gatehouse_storage::model::EmailPurpose;
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub struct EmailRequest {
    pub tenant: String,
    /// Normalized.
    pub email: String,
    pub purpose: EmailPurpose,
}

pub struct MailQueue {
    tx: mpsc::Sender<EmailRequest>,
    rx: Mutex<Option<mpsc::Receiver<EmailRequest>>>,
    /// Wakes the delivery job when a message was written.
    pub written: tokio::sync::Notify,
}

impl MailQueue {
    pub fn new(capacity: usize) -> MailQueue {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        MailQueue { tx, rx: Mutex::new(Some(rx)), written: tokio::sync::Notify::new() }
    }

    /// Queues a request; false when the queue is full.
    pub fn offer(&self, request: EmailRequest) -> bool {
        self.tx.try_send(request).is_ok()
    }

    /// Queues the address check of a new account (no source budget: registration has its own).
    pub fn request_verification(&self, tenant: &str, email: &str) {
        let purpose = EmailPurpose::VerifyEmail;
        if !self.offer(EmailRequest { tenant: tenant.into(), email: email.into(), purpose }) {
            tracing::warn!("the email queue is full: no address check was sent to a new account of {tenant}");
        }
    }

    /// The receiving end, once (for the job that handles the requests).
    pub fn take_receiver(&self) -> Option<mpsc::Receiver<EmailRequest>> {
        self.rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}
