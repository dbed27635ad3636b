//! The cluster port's lifetime: closed until the node is a cluster member (`cluster::open_port`
//! opens it), closed again at shutdown.

use tokio::sync::{watch, Mutex};

/// The cluster port of this node: closed until the node is a cluster member.
pub struct ClusterPort {
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Default for ClusterPort {
    fn default() -> Self {
        ClusterPort { stop: watch::channel(false).0, task: Mutex::new(None) }
    }
}

impl ClusterPort {
    /// Stops serving the port (at shutdown).
    pub async fn close(&self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}
