//! Waiting for the signal that ends the daemon.
use tokio::signal::unix::{signal, SignalKind};

/// Resolves on SIGTERM or SIGINT and says which.
pub async fn wait() -> &'static str {
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => "SIGTERM",
                _ = i.recv() => "SIGINT",
            }
        }
        _ => {
            // Without signal handlers the only way out is Ctrl-C through tokio's own hook.
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}
