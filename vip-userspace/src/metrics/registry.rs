//! The registry a scrape renders: the counters and gauges the daemon updates as it goes
//! (fields of [`State`], each named and described once here, where it is registered), and a
//! collector that reads the rest at scrape time ([`Scrape`]).
use std::sync::Arc;

use prometheus_client::{
    collector::Collector,
    encoding::DescriptorEncoder,
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};

use super::{scrape::Scrape, State};

pub fn registry(state: Arc<State>) -> Registry {
    let mut r = registered(&state);
    r.register_collector(Box::new(DataplaneCollector(state)));
    r
}

#[derive(Debug)]
struct DataplaneCollector(Arc<State>);

impl Collector for DataplaneCollector {
    fn encode(&self, enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        Scrape::read(&self.0).encode(enc)
    }
}

/// The counters and gauges the daemon updates as it goes (the rest is read at scrape time).
pub(super) fn registered(state: &State) -> Registry {
    let mut r = Registry::default();
    for (name, help, counter) in COUNTERS {
        r.register(*name, *help, counter(state).clone());
    }
    for (name, help, gauge) in GAUGES {
        r.register(*name, *help, gauge(state).clone());
    }
    r
}

/// A family the tasks update: its name, its help and the field of [`State`] that holds it.
type Row<M> = (&'static str, &'static str, fn(&State) -> &M);

/// The counters the tasks bump, in the order they are served.
const COUNTERS: &[Row<Counter>] = &[
    (
        "vip_garp_sent",
        "Gratuitous ARP frames sent",
        |s| &s.garp_sent,
    ),
    (
        "vip_garp_errors",
        "Gratuitous ARP frames that failed to send",
        |s| &s.garp_errors,
    ),
    (
        "vip_na_sent",
        "Unsolicited Neighbor Advertisements sent (IPv6 VIPs)",
        |s| &s.na_sent,
    ),
    (
        "vip_na_errors",
        "Unsolicited Neighbor Advertisements that failed to send",
        |s| &s.na_errors,
    ),
    (
        "vip_service_failures",
        "Times a service could not be applied (a map or limit full); each fails alone",
        |s| &s.service_failures,
    ),
    (
        "vip_interface_setting_failures",
        "Interface settings forwarding needs (IPv4 forwarding and send_redirects, IPv6 forwarding and accept_ra) that could not be applied",
        |s| &s.setting_failures,
    ),
    (
        "vip_k8s_api_write_failures",
        "Kubernetes API writes (status, holder annotation, Event) that failed; retried with back-off",
        |s| &s.k8s_write_failures,
    ),
    (
        "vip_k8s_api_writes_abandoned",
        "Kubernetes API writes given up after their retries (tried again at the next resync)",
        |s| &s.k8s_writes_abandoned,
    ),
    (
        "vip_dataplane_restarts",
        "Times the data plane was rebuilt after the uplink vanished or was replaced",
        |s| &s.dataplane_restarts,
    ),
    (
        "vip_reconcile_errors",
        "Errors while releasing or acquiring VIPs",
        |s| &s.reconcile_errors,
    ),
    (
        "vip_config_reloads",
        "Configuration reloads applied (SIGHUP)",
        |s| &s.reloads,
    ),
    (
        "vip_config_reload_errors",
        "Configuration reloads rejected or failed",
        |s| &s.reload_errors,
    ),
    (
        "vip_leader_transitions",
        "Leadership changes seen by this node",
        |s| &s.leader_transitions,
    ),
];

/// The gauges the tasks set, in the order they are served.
const GAUGES: &[Row<Gauge>] = &[
    (
        "vip_uplink_present",
        "1 while the configured uplink exists and the data plane is up on it",
        |s| &s.uplink_present,
    ),
    (
        "vip_services_unplaced",
        "Services the data plane does not serve as configured right now (see the log and Events)",
        |s| &s.services_unplaced,
    ),
    (
        "vip_fence_ready",
        "1 while the kernel settings the fence depends on (arp_ignore on the uplink) are applied or not needed; 0: this node claims no VIP",
        |s| &s.fence_ready,
    ),
    (
        "vip_leader",
        "1 while this node owns the VIPs (always 1 without election)",
        |s| &s.leader,
    ),
];
