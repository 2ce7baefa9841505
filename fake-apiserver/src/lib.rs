//! An in-process Kubernetes API server for tests, faithful to what kube-runtime relies on:
//! one global, increasing resourceVersion; LIST with limit/continue and label/field
//! selectors; WATCH as NDJSON with bookmarks, `timeoutSeconds`, and `200 + ERROR 410` for an
//! expired version; POST/PUT (409 on a stale resourceVersion)/PATCH (merge, json, apply)/
//! DELETE (finalizers honoured); the `/status` subresource; errors as `Status` objects; and
//! fault injection per client (keyed by its bearer token): hang, dropped streams, black hole,
//! slowness, 403.
//!
//! Objects are kept as JSON: any resource in [`RESOURCES`] works, typed or not.
#![allow(clippy::new_without_default)]

mod http;
mod patch;
mod store;
mod thread;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use store::Store;
pub use store::{Event, Resource};
pub use thread::{kubeconfig, ApiThread, Job};

/// The resources the server knows: (API prefix, plural, kind, namespaced, has /status).
pub const RESOURCES: &[Resource] = &[
    Resource::new("api/v1", "services", "Service", true, true),
    Resource::new("api/v1", "endpoints", "Endpoints", true, false),
    Resource::new("api/v1", "configmaps", "ConfigMap", true, false),
    Resource::new("api/v1", "events", "Event", true, false),
    Resource::new("api/v1", "nodes", "Node", false, true),
    Resource::new("api/v1", "pods", "Pod", true, true),
    Resource::new(
        "apis/discovery.k8s.io/v1",
        "endpointslices",
        "EndpointSlice",
        true,
        false,
    ),
    Resource::new(
        "apis/coordination.k8s.io/v1",
        "leases",
        "Lease",
        true,
        false,
    ),
    Resource::new("apis/events.k8s.io/v1", "events", "Event", true, false),
];

/// What the server does to one client's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer normally.
    None,
    /// Send response headers, then nothing: the body never comes.
    Hang,
    /// Close every open watch stream of the client now, and new ones right after the headers.
    DropStreams,
    /// Read the request and never answer (a partitioned API server).
    BlackHole,
    /// Delay every answer.
    Slow(Duration),
    /// Answer 403 Forbidden.
    Forbidden,
}

pub(crate) struct Shared {
    pub store: Mutex<Store>,
    pub events: tokio::sync::broadcast::Sender<store::Event>,
    /// Faults by client token ("" for requests without a bearer token).
    pub faults: Mutex<HashMap<String, Fault>>,
    /// Bumped on DropStreams so open streams of that client end.
    pub drops: tokio::sync::watch::Sender<u64>,
    pub bookmark_every: Duration,
    /// (client token, "METHOD path?query") of every request.
    pub requests: Mutex<Vec<(String, String)>>,
    /// Clients to which `/readyz` answers 500 (an API server that is up but not ready).
    pub unready: Mutex<std::collections::HashSet<String>>,
}

impl Shared {
    pub fn fault(&self, token: &str) -> Fault {
        self.faults
            .lock()
            .map(|f| f.get(token).copied().unwrap_or(Fault::None))
            .unwrap_or(Fault::None)
    }
}

pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeApiServer {
    /// Listen on an ephemeral loopback port.
    pub async fn start() -> std::io::Result<FakeApiServer> {
        Self::start_on("127.0.0.1:0".parse().map_err(std::io::Error::other)?).await
    }

    /// Listen on `addr` (e.g. an address inside a test network namespace).
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<FakeApiServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (events, _) = tokio::sync::broadcast::channel(4096);
        let (drops, _) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new()),
            events,
            faults: Mutex::new(HashMap::new()),
            drops,
            bookmark_every: Duration::from_millis(500),
            requests: Mutex::new(Vec::new()),
            unready: Mutex::new(Default::default()),
        });
        let task = tokio::spawn(http::serve(listener, shared.clone()));
        Ok(FakeApiServer { addr, shared, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Apply `fault` to requests carrying `Authorization: Bearer <token>`.
    pub fn set_fault(&self, token: &str, fault: Fault) {
        if let Ok(mut f) = self.shared.faults.lock() {
            f.insert(token.to_string(), fault);
        }
        if fault == Fault::DropStreams {
            self.shared.drops.send_modify(|n| *n += 1);
        }
    }

    /// Make `/readyz` fail (500) for the client with `token`, or answer again.
    pub fn set_ready(&self, token: &str, ready: bool) {
        if let Ok(mut u) = self.shared.unready.lock() {
            if ready {
                u.remove(token);
            } else {
                u.insert(token.to_string());
            }
        }
    }

    /// Forget the event history: watches from any version before now get 410 Gone.
    pub fn compact(&self) {
        if let Ok(mut s) = self.shared.store.lock() {
            s.compact();
        }
    }

    /// Every object of a resource (e.g. "services"), as stored.
    pub fn objects(&self, plural: &str) -> Vec<serde_json::Value> {
        self.shared
            .store
            .lock()
            .map(|s| s.all(plural))
            .unwrap_or_default()
    }

    /// Every change from now on, as committed (for tests that time what follows a write).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// Create `obj` (with `apiVersion`, `kind` and `metadata.namespace` if namespaced) in the
    /// store directly, as a POST would, without HTTP: for tests and benches that set up many
    /// objects fast. Watchers see it as any other change.
    pub fn insert(&self, obj: serde_json::Value) -> Result<serde_json::Value, String> {
        self.write(obj, |s, res, ns, _, obj| s.create(res, ns, obj))
    }

    /// Replace `obj` (found by kind, namespace and name) in the store directly, as a PUT
    /// without a resourceVersion would; its status is kept.
    pub fn update(&self, obj: serde_json::Value) -> Result<serde_json::Value, String> {
        self.write(obj, |s, res, ns, name, obj| {
            s.replace(res, ns, name, obj, false)
        })
    }

    fn write(
        &self,
        mut obj: serde_json::Value,
        f: impl FnOnce(
            &mut Store,
            &Resource,
            &str,
            &str,
            serde_json::Value,
        ) -> Result<(serde_json::Value, Event), store::ApiError>,
    ) -> Result<serde_json::Value, String> {
        let (kind, api) = (obj["kind"].as_str(), obj["apiVersion"].as_str());
        let res = RESOURCES
            .iter()
            .find(|r| Some(r.kind) == kind && Some(r.api_version()) == api)
            .ok_or_else(|| format!("no resource for {kind:?} {api:?}"))?;
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        let mut s = self.shared.store.lock().map_err(|e| e.to_string())?;
        let (out, ev) = f(&mut s, res, &ns, &name, obj).map_err(|e| e.message)?;
        // Sent under the lock, as the HTTP path commits: watchers see events in order.
        let _ = self.shared.events.send(ev);
        Ok(out)
    }

    /// "METHOD path?query" of every request so far, for tests that check what a client did.
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .requests
            .lock()
            .map(|r| r.iter().map(|(_, q)| q.clone()).collect())
            .unwrap_or_default()
    }

    /// The requests of the client with bearer token `token`.
    pub fn requests_by(&self, token: &str) -> Vec<String> {
        self.shared
            .requests
            .lock()
            .map(|r| {
                r.iter()
                    .filter(|(t, _)| t == token)
                    .map(|(_, q)| q.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn direct_writes_are_seen_as_changes() {
        let s = FakeApiServer::start().await.unwrap();
        let mut rx = s.subscribe();
        let cm = |v: &str| {
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "a", "namespace": "n"}, "data": {"k": v}})
        };
        s.insert(cm("1")).unwrap();
        assert!(s.insert(cm("1")).is_err(), "a second create conflicts");
        s.update(cm("2")).unwrap();
        let (a, m) = (rx.recv().await.unwrap(), rx.recv().await.unwrap());
        assert_eq!((a.typ, m.typ), ("ADDED", "MODIFIED"));
        assert!(m.rv > a.rv);
        assert_eq!(s.objects("configmaps")[0]["data"]["k"], "2");
        assert!(s
            .insert(serde_json::json!({"apiVersion": "v9", "kind": "Nope"}))
            .is_err());
    }
}
