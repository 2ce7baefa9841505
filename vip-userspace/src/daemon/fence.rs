//! The kernel layer of the fence: with VIPs bound on `lo` (XDP mode), Linux would answer ARP
//! for them on the uplink whenever the XDP program is not there; `arp_ignore=1` keeps it
//! quiet. A node that cannot set it claims nothing (see `wait_fenced`). IPv6 VIPs need no
//! setting: Linux answers a Neighbor Solicitation only for addresses on the interface it
//! came in on (and `proxy_ndp`, off by default), so one on `lo` is never answered on the
//! uplink (kernel-tests `ipv6_kernel_facts`).
use crate::{
    config::{Config, Mode},
    metrics::State,
    shutdown,
};

use super::LINK_CHECK;

/// The fence's kernel layer could not be put in place: this node claims no VIP until it is.
#[derive(Debug, thiserror::Error)]
#[error("arp_ignore must be at least 1 on `{iface}`, or the kernel answers ARP for the VIPs bound on `{local}` whenever the XDP program is not there; this node claims no VIP until it is set")]
pub struct FenceError {
    iface: String,
    local: String,
    #[source]
    source: crate::net::devconf::DevconfError,
}

/// Whether VIPs are bound where the kernel would answer ARP for them on the uplink.
/// XDP mode binds VIPs on the local device (`lo`), and Linux by default answers ARP on any
/// interface for any local address. While XDP runs that never shows (it answers or drops
/// every request for an owned VIP first), but a detached program (pins removed, a kernel
/// without bpf_link XDP, a restart whose program fails to load) would leave the kernel
/// answering for a VIP this node may no longer own. Kernel mode needs it too when BGP may
/// route VIPs here without this node owning them (those are bound on `lo`, owned ones on
/// the uplink, which still answers for its own addresses).
/// `xdp`: the data plane that came up (mode `auto` may have fallen back to the kernel).
pub(super) fn needs_strict_arp(cfg: &Config, xdp: bool) -> bool {
    if xdp {
        cfg.local_device != cfg.interface
    } else {
        cfg.bgp.is_some()
    }
}

/// `arp_ignore=1` on the uplink: the kernel answers only for the uplink's own addresses
/// (what kube-proxy's IPVS mode and MetalLB's strictARP set). Through rtnetlink, so it works
/// where /proc/sys is read-only (any unprivileged container). 2 and above are stricter still;
/// only the default is raised. Left set on exit.
pub(super) async fn strict_arp(
    cfg: &Config,
    handle: &rtnetlink::Handle,
    xdp: bool,
) -> Result<(), FenceError> {
    use crate::net::devconf::{self, Setting};
    if !needs_strict_arp(cfg, xdp) {
        return Ok(());
    }
    let iface = cfg.interface.as_str();
    let raised = match devconf::get(handle, iface, Setting::ArpIgnore).await {
        Ok(v) if v >= 1 => Ok(()),
        Ok(_) => devconf::set(handle, iface, Setting::ArpIgnore, 1)
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    raised.map_err(|source| FenceError {
        iface: cfg.interface.clone(),
        local: cfg.local_device.clone(),
        source,
    })
}

/// Before the election starts: a node that cannot keep the kernel from answering for VIPs
/// must not compete for them. Retried every link check, not ready and `vip_fence_ready 0`
/// meanwhile, the error logged each time it changes. Returns the signal if one came first.
pub(super) async fn wait_fenced(
    cfg: &Config,
    handle: &rtnetlink::Handle,
    state: &State,
    shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = shutdown::Stop>>,
) -> Option<shutdown::Stop> {
    let mut logged = String::new();
    loop {
        match strict_arp(cfg, handle, cfg.mode != Mode::Kernel).await {
            Ok(()) => {
                state.fence_ready.set(1);
                return None;
            }
            Err(e) => {
                state.fence_ready.set(0);
                let msg = crate::Chain(&e).to_string();
                if msg != logged {
                    tracing::error!(error = %msg, "fence not in place; retrying");
                    logged = msg;
                }
            }
        }
        tokio::select! {
            sig = shutdown.as_mut() => return Some(sig),
            _ = tokio::time::sleep(LINK_CHECK) => {}
        }
    }
}
