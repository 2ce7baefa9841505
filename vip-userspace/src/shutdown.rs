//! Waiting for the signal that ends the daemon.
use tokio::signal::unix::{signal, SignalKind};

/// The signal that ended the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Term,
    Int,
    /// SIGUSR2: always a planned restart (hand the data plane over to the next daemon).
    Restart,
}

impl Stop {
    pub fn name(self) -> &'static str {
        match self {
            Stop::Term => "SIGTERM",
            Stop::Int => "SIGINT",
            Stop::Restart => "SIGUSR2",
        }
    }
}

/// Resolves on SIGTERM, SIGINT or SIGUSR2 and says which.
pub async fn wait() -> Stop {
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    let usr2 = signal(SignalKind::user_defined2());
    match (term, int, usr2) {
        (Ok(mut t), Ok(mut i), Ok(mut u)) => {
            tokio::select! {
                _ = t.recv() => Stop::Term,
                _ = i.recv() => Stop::Int,
                _ = u.recv() => Stop::Restart,
            }
        }
        _ => {
            // Without signal handlers the only way out is Ctrl-C through tokio's own hook.
            let _ = tokio::signal::ctrl_c().await;
            Stop::Int
        }
    }
}
