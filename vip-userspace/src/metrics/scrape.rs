//! What one scrape reports beyond the registered counters, read once from [`State`] and the
//! pinned maps into plain values. Reading and encoding are apart so that the encoding
//! (`encode`) is a function of these values: a test renders every family, rows included,
//! without a data plane or a daemon.
use std::net::IpAddr;

use super::{Attachment, K8sStats, State};
use crate::dataplane::inspect::{BackendView, ServiceView, Snapshot};

#[derive(Debug, Default)]
pub(super) struct Scrape {
    pub(super) mode: String,
    pub(super) interface: String,
    pub(super) owned: Vec<IpAddr>,
    pub(super) attachment: Option<Attachment>,
    pub(super) k8s: K8sStats,
    pub(super) raft: Option<crate::election::raft::RaftStatus>,
    pub(super) bgp: Vec<crate::bgp::PeerStatus>,
    /// None without a stats reader (kernel mode, or before the data plane is up).
    pub(super) maps: Option<MapsScrape>,
}

#[derive(Debug, Default)]
pub(super) struct MapsScrape {
    pub(super) totals: Option<vip_common::Stats>,
    pub(super) per_vip: Vec<(IpAddr, crate::dataplane::maps::VipRow)>,
    /// From the pin directory, when it is known and readable.
    pub(super) services: Option<Vec<ServiceView>>,
    /// Likewise, and only looked for when the services were read.
    pub(super) backends: Option<Vec<BackendView>>,
    /// Kernel memlock of each pinned map, by map symbol.
    pub(super) map_bytes: Vec<(&'static str, u64)>,
}

impl Scrape {
    /// A poisoned lock reads as its default: a scrape reports what it can rather than fail.
    pub(super) fn read(st: &State) -> Scrape {
        let reader = st.stats.lock().ok();
        let maps = reader.as_ref().and_then(|r| r.as_ref()).map(|reader| {
            let dir = st.pin_dir.read().ok().and_then(|d| d.clone());
            let services = dir
                .as_deref()
                .and_then(|d| Snapshot::read(d, false).ok())
                .map(|s| s.services);
            MapsScrape {
                totals: reader.totals().ok(),
                per_vip: reader.per_vip(),
                backends: services
                    .as_ref()
                    .and(dir.as_deref())
                    .and_then(|d| Snapshot::active_backends(d).ok()),
                services,
                map_bytes: dir
                    .as_deref()
                    .map(crate::dataplane::memory::pinned_bytes)
                    .unwrap_or_default(),
            }
        });
        Scrape {
            mode: st.mode.read().map(|m| m.clone()).unwrap_or_default(),
            interface: st.interface.read().map(|m| m.clone()).unwrap_or_default(),
            owned: st.bus.owned.borrow().clone(),
            attachment: st.attachment.read().ok().and_then(|a| a.clone()),
            k8s: st.k8s.lock().map(|k| k.clone()).unwrap_or_default(),
            raft: st
                .raft
                .read()
                .ok()
                .and_then(|r| r.as_ref().map(|s| s.get())),
            bgp: st.bgp.lock().map(|b| b.clone()).unwrap_or_default(),
            maps,
        }
    }
}
