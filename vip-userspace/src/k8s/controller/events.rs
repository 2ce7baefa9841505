//! The controller's side of the writer: the background writer started on first use, and
//! the Events it sends — those a recompute decides on, and the data plane's reports (a
//! service it could not place, another host claiming a VIP) that reach the Services through
//! the cache.
use std::net::IpAddr;

use k8s_openapi::api::core::v1::ObjectReference;

use super::{Controller, Key, Svc};
use crate::k8s::writer::{EventSpec, Write, Writer};

impl Controller {
    fn writer(&mut self) -> &Writer {
        let (client, counters) = (&self.client, &self.counters);
        self.writer
            .get_or_insert_with(|| Writer::start(client.clone(), counters.clone()))
    }

    pub(super) fn write(&mut self, k: &Key, w: Write) {
        let k = k.clone();
        self.writer().send(k, w);
    }

    /// Until every write issued so far is done (written or given up).
    pub async fn flush(&self) {
        if let Some(w) = &self.writer {
            w.flush().await;
        }
    }

    /// Writes queued or in flight.
    pub fn pending_writes(&self) -> usize {
        self.writer.as_ref().map_or(0, Writer::pending)
    }

    pub(super) fn event_spec(
        &self,
        namespace: &str,
        object: ObjectReference,
        type_: &str,
        reason: &str,
        message: &str,
    ) -> EventSpec {
        EventSpec {
            namespace: namespace.to_string(),
            object,
            type_: type_.into(),
            reason: reason.into(),
            message: message.into(),
            reporter: self.cfg.node.clone(),
        }
    }

    pub(super) fn event(&mut self, k: &Key, svc: &Svc, type_: &str, reason: &str, message: &str) {
        let ev = self.event_spec(&k.0, svc.object(k), type_, reason, message);
        self.write(k, Write::Event(ev));
    }

    /// The data plane could not take a service (VIP, port, protocol): a Warning on every
    /// Service with that address and port, naming this node and why.
    pub fn unplaced_event(&mut self, what: crate::reconcile::Unplaced, why: &str) {
        let message = format!("node {} could not serve {what}: {why}", self.cfg.node);
        let hit: Vec<(Key, Svc)> = self
            .svcs
            .iter()
            .filter(|(_, c)| {
                c.svc.status.contains(&what.vip)
                    && c.svc.ports.iter().any(|p| {
                        p.port == i32::from(what.port)
                            && p.protocol
                                .as_deref()
                                .unwrap_or("TCP")
                                .eq_ignore_ascii_case(what.proto.as_str())
                    })
            })
            .map(|(k, c)| (k.clone(), c.svc.clone()))
            .collect();
        for (k, s) in hit {
            self.event(&k, &s, "Warning", "ServiceNotApplied", &message);
        }
    }

    /// Another host claims a VIP this node owns (seen by XDP): a Warning on every Service
    /// with that address, or on this Node for a VIP no Service has (the control plane's).
    pub fn conflict_event(&mut self, vip: IpAddr, mac: [u8; 6]) {
        let mac = mac.map(|b| format!("{b:02x}")).join(":");
        let message = format!(
            "host {mac} claims {vip}, which node {} owns; re-announcing (check for a duplicate address)",
            self.cfg.node
        );
        let on: Vec<(Key, Svc)> = self
            .svcs
            .iter()
            .filter(|(_, c)| c.svc.status.contains(&vip))
            .map(|(k, c)| (k.clone(), c.svc.clone()))
            .collect();
        if on.is_empty() {
            let object = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(self.cfg.node.clone()),
                ..Default::default()
            };
            let ev = self.event_spec("default", object, "Warning", "VIPConflict", &message);
            let k = ("default".to_string(), self.cfg.node.clone());
            self.write(&k, Write::Event(ev));
        }
        for (k, s) in on {
            self.event(&k, &s, "Warning", "VIPConflict", &message);
        }
    }
}
