//! What a case puts in the fake cluster and gives the daemons: the N Services (dsr
//! annotated or not) with one EndpointSlice of 10 endpoints each, their names and
//! addresses, and each daemon's config with its limits raised to what N needs. Pure data,
//! so the table's settings column and the objects cannot drift apart.
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::{json, Value};

use super::{CREATES, ENDPOINTS, NODES, PIN_DIR, PORT, TARGET_PORT};

/// Maglev table of a by-need service of 10 backends (≥ 100 slots per backend).
pub(super) const BY_NEED_10: u32 = 1021;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Local,
    Dsr,
}

impl Mode {
    pub(super) fn name(self) -> &'static str {
        match self {
            Mode::Local => "local",
            Mode::Dsr => "dsr",
        }
    }
}

/// Settings a case gives the daemons, as printed in the table: every limit raised to what
/// N Services (plus the creates) need, rounded up to a multiple of 1,024 and never below
/// the default 4,096.
pub(super) struct Settings {
    pub(super) max_services: u32,
    pub(super) max_vips: u32,
    /// dsr: one backend id per endpoint.
    pub(super) max_backends: Option<u32>,
    pub(super) ring_slots: Option<u32>,
}

pub(super) fn limit(need: u32) -> u32 {
    need.div_ceil(1024).max(4) * 1024
}

impl Settings {
    pub(super) fn new(n: usize, mode: Mode) -> Settings {
        let need = (n + CREATES) as u32;
        let dsr = mode == Mode::Dsr;
        // Two tables per dsr service (one live, one being written).
        let ring_slots = dsr.then(|| (need * 2 * BY_NEED_10).div_ceil(1 << 20) << 20);
        Settings {
            max_services: limit(need),
            max_vips: limit(need),
            max_backends: dsr.then(|| limit(need * ENDPOINTS as u32)),
            ring_slots,
        }
    }

    pub(super) fn yaml(&self) -> String {
        let mut s = format!(
            "max_services: {}\nmax_vips: {}\n",
            self.max_services, self.max_vips
        );
        if let Some(b) = self.max_backends {
            s.push_str(&format!("max_backends: {b}\n"));
        }
        if let Some(r) = self.ring_slots {
            s.push_str(&format!("maglev_sizing: by-need\nring_slots: {r}\n"));
        }
        s
    }

    pub(super) fn describe(&self) -> String {
        let mut d = format!(
            "max_services {}, max_vips {}",
            self.max_services, self.max_vips
        );
        if let Some(b) = self.max_backends {
            d.push_str(&format!(", max_backends {b}"));
        }
        if let Some(r) = self.ring_slots {
            // The kernel charges 8 B a slot (a u32 value rounded up).
            d.push_str(&format!(
                ", maglev_sizing by-need, ring_slots {r} ({} MiB)",
                (r as u64 * 8) >> 20
            ));
        }
        d
    }
}

pub(super) fn service_name(i: usize) -> String {
    format!("s{i:05}")
}

/// The address of endpoint `j` of service `i` (unique, off the bed's subnets).
pub(super) fn endpoint_addr(base: u8, i: usize, j: usize) -> String {
    let k = i * ENDPOINTS + j;
    format!(
        "10.{}.{}.{}",
        base as usize + k / 65536,
        (k / 256) % 256,
        k % 256
    )
}

pub(super) fn service(name: &str, mode: Mode) -> Value {
    let mut s = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Cluster",
                 "ports": [{"name": "http", "port": PORT, "targetPort": TARGET_PORT, "protocol": "TCP"}]}
    });
    if mode == Mode::Dsr {
        s["metadata"]["annotations"] = json!({"vip.dev/forwarding-mode": "dsr"});
    }
    s
}

pub(super) fn slice(svc: &str, addrs: &[String]) -> Value {
    let endpoints: Vec<Value> = addrs
        .iter()
        .enumerate()
        .map(|(j, a)| {
            json!({"addresses": [a], "nodeName": NODES[j % 2], "conditions": {"ready": true}})
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{svc}-x1"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": TARGET_PORT, "protocol": "TCP"}]
    })
}

pub(super) fn slice_for(i: usize) -> Value {
    let addrs: Vec<String> = (0..ENDPOINTS).map(|j| endpoint_addr(100, i, j)).collect();
    slice(&service_name(i), &addrs)
}

pub(super) fn config(dir: &Path, node: &str, url: &str, settings: &Settings) -> Result<PathBuf> {
    let kc = fake_apiserver::kubeconfig(dir, url, node)?;
    let cfg = dir.join(format!("{node}.yaml"));
    std::fs::write(
        &cfg,
        format!(
            "interface: eth0\nmode: xdp\nmetrics_addr: 127.0.0.1:9472\npin_dir: {PIN_DIR}/{node}\n{}election:\n  kubeconfig: {}\n  identity: {node}\n  services: true\n",
            settings.yaml(),
            kc.display()
        ),
    )?;
    Ok(cfg)
}
