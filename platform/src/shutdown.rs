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

    /// Triggers on SIGINT or SIGTERM; a second one, while the process drains, ends it at once
    /// (exit code 130), as a person pressing Ctrl-C again means.
    pub fn trigger_on_signals(&self) {
        let token = self.0.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => Some(signal),
                Err(error) => {
                    tracing::error!(%error, "cannot listen for SIGTERM");
                    None
                }
            };
            for signals in 1.. {
                #[cfg(unix)]
                let terminated = async {
                    match terminate.as_mut() {
                        Some(signal) => {
                            signal.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                #[cfg(not(unix))]
                let terminated = std::future::pending::<()>();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    () = terminated => {}
                }
                if signals > 1 {
                    // What is not committed is not answered either: nothing said done is lost.
                    tracing::warn!("second stop signal: stopping now, without waiting for the requests in flight");
                    std::process::exit(130);
                }
                tracing::info!("shutdown requested, draining (a second signal stops at once)");
                token.cancel();
            }
        });
    }
}
