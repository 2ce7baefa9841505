//! The controller's API writes (status patches, holder annotations, Events), off its critical
//! path: queued, run at most [`CONCURRENCY`] at a time, each failure retried with back-off
//! and counted; one given up after [`ATTEMPTS`] is reported back so the controller's next
//! resync tries it again.
use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::{
    api::core::v1::{Event, ObjectReference, Service},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time},
    jiff::Timestamp,
};
use kube::{
    api::{Patch, PatchParams, PostParams},
    Api, Client,
};
use prometheus_client::metrics::counter::Counter;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::controller::HOLDER;

/// Writes in flight at once. More only queue at the API server (its write rate is the
/// bound) and delay what else is asked of it, Lease renewals included: on the scale bench
/// (2 cores, in-process API server, 10,000 Services) a failover took 26 s with 32 and
/// 15 s with 8 (the new holder's 4,096 holder annotations and Events compete with it).
pub const CONCURRENCY: usize = 8;
/// Tries per write before it is given up (until the next resync).
pub const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// (namespace, name) of a Service.
pub type Key = (String, String);

/// An Event to record.
#[derive(Debug, Clone)]
pub struct EventSpec {
    pub namespace: String,
    pub object: ObjectReference,
    pub type_: String,
    pub reason: String,
    pub message: String,
    /// The node recording it (`reportingInstance`).
    pub reporter: String,
}

#[derive(Debug, Clone)]
pub enum Write {
    /// `status.loadBalancer.ingress` of the Service, then (once written) `then`.
    Status {
        ips: Vec<IpAddr>,
        then: Option<EventSpec>,
    },
    /// The holder annotation (this node), then `then`.
    Holder {
        node: String,
        then: Option<EventSpec>,
    },
    Event(EventSpec),
}

impl Write {
    fn what(&self) -> &'static str {
        match self {
            Write::Status { .. } => "status",
            Write::Holder { .. } => "holder annotation",
            Write::Event(_) => "event",
        }
    }
}

/// Counters and the give-ups, shared between the controller and the write task.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub failures: Counter,
    pub abandoned: Counter,
}

pub struct Writer {
    tx: mpsc::UnboundedSender<(Key, Write)>,
    pending: watch::Sender<usize>,
    gave_up: Arc<Mutex<Vec<Key>>>,
}

impl Writer {
    /// Starts the write task (on the current Tokio runtime).
    pub fn start(client: Client, counters: Counters) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = watch::Sender::new(0usize);
        let gave_up = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(run(client, rx, pending.clone(), gave_up.clone(), counters));
        Self {
            tx,
            pending,
            gave_up,
        }
    }

    pub fn send(&self, key: Key, w: Write) {
        self.pending.send_modify(|n| *n += 1);
        if self.tx.send((key, w)).is_err() {
            self.pending.send_modify(|n| *n = n.saturating_sub(1));
        }
    }

    /// Writes queued or in flight.
    pub fn pending(&self) -> usize {
        *self.pending.borrow()
    }

    /// Until every queued write is done (written or given up).
    pub async fn flush(&self) {
        let mut rx = self.pending.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Services whose writes were given up since the last call.
    pub fn take_given_up(&self) -> Vec<Key> {
        self.gave_up
            .lock()
            .map(|mut g| std::mem::take(&mut *g))
            .unwrap_or_default()
    }
}

async fn run(
    client: Client,
    rx: mpsc::UnboundedReceiver<(Key, Write)>,
    pending: watch::Sender<usize>,
    gave_up: Arc<Mutex<Vec<Key>>>,
    counters: Counters,
) {
    let jobs =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|j| (j, rx)) });
    jobs.for_each_concurrent(CONCURRENCY, |(key, w)| {
        let client = client.clone();
        let pending = pending.clone();
        let gave_up = gave_up.clone();
        let counters = counters.clone();
        async move {
            let mut ok = retried(&client, &key, &w, &counters).await;
            let then = match &w {
                Write::Status { then, .. } | Write::Holder { then, .. } => then.clone(),
                Write::Event(_) => None,
            };
            if ok {
                if let Some(ev) = then {
                    ok = retried(&client, &key, &Write::Event(ev), &counters).await;
                }
            }
            if !ok {
                counters.abandoned.inc();
                if let Ok(mut g) = gave_up.lock() {
                    g.push(key);
                }
            }
            pending.send_modify(|n| *n = n.saturating_sub(1));
        }
    })
    .await;
}

/// One write with its retries: true once written (or moot: the Service is gone).
async fn retried(client: &Client, key: &Key, w: &Write, counters: &Counters) -> bool {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        match once(client, key, w).await {
            Ok(()) => return true,
            Err(kube::Error::Api(e)) if e.code == 404 && !matches!(w, Write::Event(_)) => {
                tracing::debug!(service = %format!("{}/{}", key.0, key.1), what = w.what(), "service gone; write dropped");
                return true;
            }
            Err(e) => {
                counters.failures.inc();
                tracing::warn!(service = %format!("{}/{}", key.0, key.1), what = w.what(), attempt, error = %crate::Chain(&e), "API write failed");
                if attempt < ATTEMPTS {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
    tracing::warn!(service = %format!("{}/{}", key.0, key.1), what = w.what(), "API write given up; retried at the next resync");
    false
}

async fn once(client: &Client, (ns, name): &Key, w: &Write) -> Result<(), kube::Error> {
    match w {
        Write::Status { ips, .. } => {
            let api: Api<Service> = Api::namespaced(client.clone(), ns);
            let ingress: Vec<_> = ips
                .iter()
                .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
                .collect();
            let status = json!({"status": {"loadBalancer": {"ingress": ingress}}});
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .map(|_| ())
        }
        Write::Holder { node, .. } => {
            let api: Api<Service> = Api::namespaced(client.clone(), ns);
            let holder = json!({"metadata": {"annotations": {HOLDER: node}}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&holder))
                .await
                .map(|_| ())
        }
        Write::Event(ev) => {
            let now = Timestamp::now();
            let oname = ev.object.name.clone().unwrap_or_default();
            let e = Event {
                metadata: ObjectMeta {
                    generate_name: Some(format!("{oname}.")),
                    namespace: Some(ev.namespace.clone()),
                    ..Default::default()
                },
                involved_object: ev.object.clone(),
                reason: Some(ev.reason.clone()),
                message: Some(ev.message.clone()),
                type_: Some(ev.type_.clone()),
                first_timestamp: Some(Time(now)),
                last_timestamp: Some(Time(now)),
                event_time: Some(MicroTime(now)),
                reporting_component: Some("vip".into()),
                reporting_instance: Some(ev.reporter.clone()),
                action: Some(ev.reason.clone()),
                count: Some(1),
                ..Default::default()
            };
            let api: Api<Event> = Api::namespaced(client.clone(), &ev.namespace);
            api.create(&PostParams::default(), &e).await.map(|_| ())
        }
    }
}
