//! The server on a thread and runtime of its own, for callers that are not async (the
//! namespace tests and the bench), plus the kubeconfig a daemon needs to reach it.
use std::{net::SocketAddr, path::Path, path::PathBuf, thread::JoinHandle, time::Duration};

use crate::FakeApiServer;

/// A job for a thread the caller makes (e.g. one that has entered a network namespace).
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// The server running on its own thread with a one-worker runtime; stopped on drop.
pub struct ApiThread {
    pub server: Option<FakeApiServer>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ApiThread {
    /// Listen on `addr`, on the thread `spawn` starts for the job it is given (for example
    /// `|job| netns.spawn(job)`, so the listener lives inside that namespace); the server
    /// and its URL.
    pub fn start(
        addr: SocketAddr,
        spawn: impl FnOnce(Job) -> JoinHandle<()>,
    ) -> std::io::Result<(ApiThread, String)> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = spawn(Box::new(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                let s = FakeApiServer::start_on(addr).await;
                let ok = s.is_ok();
                let _ = tx.send(s);
                if ok {
                    let _ = tokio::task::spawn_blocking(move || {
                        let _ = stop_rx.recv();
                    })
                    .await;
                }
            });
        }));
        let server = rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(std::io::Error::other)??;
        let url = server.url();
        Ok((
            ApiThread {
                server: Some(server),
                stop: Some(stop_tx),
                thread: Some(thread),
            },
            url,
        ))
    }

    pub fn server(&self) -> &FakeApiServer {
        self.server
            .as_ref()
            .unwrap_or_else(|| unreachable!("the server lives until drop"))
    }
}

impl Drop for ApiThread {
    fn drop(&mut self) {
        drop(self.server.take());
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A cluster CA for the kubeconfigs (self-signed, never used to verify anything: the fake
/// API server speaks plain HTTP). Real kubeconfigs and the in-cluster service account always
/// carry one; without it kube-rs falls back to the system's roots, which an image built from
/// scratch does not have.
const TEST_CA_BASE64: &str = concat!(
    "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJrekNDQVRtZ0F3SUJBZ0lVTjYzcTAxRDBxRXJYNlE1citM",
    "eEpBcXN4NDFNd0NnWUlLb1pJemowRUF3SXcKRmpFVU1CSUdBMVVFQXd3TGRtbHdMWFJsYzNRdFkyRXdJQmNOTWpZ",
    "eE1qQXhNVEF5TlRJNVdoZ1BNakV5TmpFeApNRGN4TURJMU1qbGFNQll4RkRBU0JnTlZCQU1NQzNacGNDMTBaWE4w",
    "TFdOaE1Ga3dFd1lIS29aSXpqMENBUVlJCktvWkl6ajBEQVFjRFFnQUVSaVlFZVhjN3FjUjVITFBFT2ZHR21ndXpv",
    "RVlSdW50eFk0UTZISExJZG43TzhLalMKc1QwUW9WeE5kdVZCMXdySStCU0E2VjMrM3V1RTUwZk1xRSsrd2FOak1H",
    "RXdIUVlEVlIwT0JCWUVGSERqOGV0cgp6bDlQSnJqczA5aUpVNjJzSDMzSU1COEdBMVVkSXdRWU1CYUFGSERqOGV0",
    "cnpsOVBKcmpzMDlpSlU2MnNIMzNJCk1BOEdBMVVkRXdFQi93UUZNQU1CQWY4d0RnWURWUjBQQVFIL0JBUURBZ0lF",
    "TUFvR0NDcUdTTTQ5QkFNQ0EwZ0EKTUVVQ0lRRG5JRkVTWXpzTWVKa2loMFFuSTZ6QWpJMlVlc2VHdG5pTzRZOS82",
    "ZFlGS3dJZ1M3TnhaV3RXYlJldQozdWNVV2ovV0FOVlM4UFBpUkhQWjlSMDBXWjdEdms0PQotLS0tLUVORCBDRVJU",
    "SUZJQ0FURS0tLS0tCg==",
);

/// A kubeconfig in `dir` for the server at `url`, authenticating with bearer `token` (the
/// server keys faults and recorded requests by it).
pub fn kubeconfig(dir: &Path, url: &str, token: &str) -> std::io::Result<PathBuf> {
    let p = dir.join(format!("{token}.kubeconfig"));
    std::fs::write(
        &p,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n    certificate-authority-data: {TEST_CA_BASE64}\nusers:\n- name: {token}\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context:\n    cluster: fake\n    user: {token}\ncurrent-context: c\n"
        ),
    )?;
    Ok(p)
}
