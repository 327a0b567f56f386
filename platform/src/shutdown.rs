//! One shutdown signal shared by every server of a process.

use tokio_util::sync::CancellationToken;

/// Cloned into every server; `trigger` stops them all, and each drains its in-flight calls.
#[derive(Clone, Debug, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn trigger(&self) {
        self.0.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once `trigger` has been called.
    pub async fn wait(self) {
        self.0.cancelled_owned().await;
    }

    /// Triggers on SIGINT or SIGTERM.
    pub fn trigger_on_signals(&self) {
        let token = self.0.clone();
        tokio::spawn(async move {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            let terminate = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut signal) => {
                        signal.recv().await;
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot listen for SIGTERM");
                        std::future::pending::<()>().await;
                    }
                }
            };
            #[cfg(not(unix))]
            let terminate = std::future::pending::<()>();
            tokio::select! {
                _ = ctrl_c => {}
                _ = terminate => {}
            }
            tracing::info!("shutdown requested, draining");
            token.cancel();
        });
    }
}
