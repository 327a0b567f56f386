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
    /// (exit code 128 + the signal's number: 130 for SIGINT, 143 for SIGTERM), as a person
    /// pressing Ctrl-C again means.
    #[cfg(unix)]
    pub fn trigger_on_signals(&self) {
        use tokio::signal::unix::{Signal, SignalKind, signal};

        let token = self.0.clone();
        tokio::spawn(async move {
            let listen = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(signal) => Some(signal),
                Err(error) => {
                    tracing::error!(%error, "cannot listen for {name}");
                    None
                }
            };
            async fn received(signal: &mut Option<Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            let mut interrupt = listen(SignalKind::interrupt(), "SIGINT");
            let mut terminate = listen(SignalKind::terminate(), "SIGTERM");
            for signals in 1.. {
                let number = tokio::select! {
                    () = received(&mut interrupt) => 2,
                    () = received(&mut terminate) => 15,
                };
                if signals > 1 {
                    // What is not committed is not answered either: nothing said done is lost.
                    tracing::warn!("second stop signal: stopping now, without waiting for the requests in flight");
                    std::process::exit(128 + number);
                }
                tracing::info!("shutdown requested, draining (a second signal stops at once)");
                token.cancel();
            }
        });
    }
}
