//! `vip manifest`: generated copies in manifests/ stay in sync, and every document is a
//! valid Kubernetes object with what the daemon needs (and no more).
use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{Container, Pod, ServiceAccount},
        rbac::v1::{Role, RoleBinding},
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use vip_userspace::manifest::{render, Options, PodMonitor};

fn committed(kind: &str) -> String {
    let p =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../manifests/{kind}.yaml"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn committed_manifests_match_the_generator() {
    for kind in ["daemonset", "pod", "rbac", "podmonitor"] {
        assert_eq!(
            committed(kind),
            render(kind, &Options::default()).unwrap(),
            "manifests/{kind}.yaml drifted: regenerate with `vip manifest {kind} > manifests/{kind}.yaml`"
        );
    }
}

#[test]
fn manifests_parse_into_kubernetes_types() {
    let ds: DaemonSet = serde_saphyr::from_str(&committed("daemonset")).unwrap();
    let spec = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(spec.host_network, Some(true));
    assert_eq!(spec.service_account_name.as_deref(), Some("vip"));
    let c = &spec.containers[0];
    assert_eq!(
        c.image.as_deref(),
        Some(vip_common::image::NAME),
        "the image `cargo xtask image` builds"
    );
    let caps = c
        .security_context
        .as_ref()
        .unwrap()
        .capabilities
        .as_ref()
        .unwrap();
    let mut add = caps.add.clone().unwrap();
    add.sort();
    assert_eq!(
        add,
        [
            "BPF",
            "NET_ADMIN",
            "NET_RAW",
            "PERFMON",
            "SYS_ADMIN",
            "SYS_NICE"
        ]
    );
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert_eq!(c.security_context.as_ref().unwrap().privileged, Some(false));
    assert!(c
        .args
        .as_ref()
        .unwrap()
        .windows(2)
        .any(|w| w == ["--election", "lease"]));
    assert!(spec.volumes.unwrap().iter().any(|v| v
        .host_path
        .as_ref()
        .is_some_and(|h| h.path == "/sys/fs/bpf")));

    let pod: Pod = serde_saphyr::from_str(&committed("pod")).unwrap();
    let ps = pod.spec.unwrap();
    assert_eq!(ps.host_network, Some(true));
    assert!(
        ps.service_account_name.is_none(),
        "a static pod has no service account"
    );
    assert!(ps.containers[0]
        .args
        .as_ref()
        .unwrap()
        .windows(2)
        .any(|w| w == ["--kubeconfig", "/etc/kubernetes/admin.conf"]));

    let rbac = committed("rbac");
    let docs: Vec<&str> = rbac.split("---\n").collect();
    assert_eq!(docs.len(), 3);
    let _sa: ServiceAccount = serde_saphyr::from_str(docs[0]).unwrap();
    let role: Role = serde_saphyr::from_str(docs[1]).unwrap();
    let rules = role.rules.unwrap();
    assert_eq!(rules.len(), 1, "least privilege: one rule");
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["leases".to_string()][..])
    );
    assert_eq!(rules[0].verbs, ["get", "create", "update"]);
    let rb: RoleBinding = serde_saphyr::from_str(docs[2]).unwrap();
    assert_eq!(rb.role_ref.name, "vip");
}

#[test]
fn flags_shape_the_manifest() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vip"))
        .args([
            "manifest",
            "daemonset",
            "--interface",
            "bond0",
            "--vip",
            "198.51.100.7",
            "--image",
            "registry.local/vip:dev",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let ds: DaemonSet = serde_saphyr::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let c = &ds.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(c.image.as_deref(), Some("registry.local/vip:dev"));
    let args = c.args.clone().unwrap();
    assert!(args.windows(2).any(|w| w == ["--interface", "bond0"]));
    assert!(args.windows(2).any(|w| w == ["--vip", "198.51.100.7"]));
}

/// The address the daemon listens on, as the kubelet expands it for a node at `node_ip`.
fn metrics_addr(c: &Container, node_ip: &str) -> std::net::SocketAddr {
    let env = c.env.as_deref().unwrap();
    let pos = |name: &str| env.iter().position(|e| e.name == name);
    let ip = pos("VIP_NODE_IP").expect("VIP_NODE_IP");
    assert_eq!(
        env[ip]
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str()),
        Some("status.hostIP")
    );
    let addr = pos("VIP_METRICS_ADDR").expect("VIP_METRICS_ADDR");
    assert!(ip < addr, "$(VIP_NODE_IP) only expands if defined before");
    let raw = env[addr].value.as_deref().unwrap();
    assert!(
        !c.args
            .as_ref()
            .unwrap()
            .iter()
            .any(|a| a == "--metrics-addr"),
        "a flag would override the environment"
    );
    vip_userspace::config::parse_listen_addr(&raw.replace("$(VIP_NODE_IP)", node_ip)).unwrap()
}

/// Probes and Prometheus reach the daemon on the node's address: a host-network pod's IP,
/// which the kubelet probes when `host` is unset.
#[test]
fn probes_and_metrics_on_the_node_address() {
    let ds: DaemonSet = serde_saphyr::from_str(&committed("daemonset")).unwrap();
    let pod: Pod = serde_saphyr::from_str(&committed("pod")).unwrap();
    for spec in [ds.spec.unwrap().template.spec.unwrap(), pod.spec.unwrap()] {
        assert_eq!(spec.host_network, Some(true));
        let c = &spec.containers[0];
        for node in ["10.0.0.5", "fd00::5"] {
            let a = metrics_addr(c, node);
            assert_eq!(a.ip(), node.parse::<std::net::IpAddr>().unwrap());
            assert_eq!(a.port(), 9472);
        }
        let port = &c.ports.as_deref().unwrap()[0];
        assert_eq!(
            (port.name.as_deref(), port.container_port),
            (Some("metrics"), 9472)
        );
        for (probe, path) in [
            (c.liveness_probe.as_ref(), "/healthz"),
            (c.readiness_probe.as_ref(), "/readyz"),
        ] {
            let get = probe.unwrap().http_get.as_ref().unwrap();
            assert_eq!(get.path.as_deref(), Some(path));
            assert_eq!(get.port, IntOrString::String("metrics".into()));
            assert_eq!(get.host, None, "unset: the pod IP, i.e. the node's");
        }
    }
}

#[test]
fn pod_monitor_selects_the_daemonset_pods_and_port() {
    let pm: PodMonitor = serde_saphyr::from_str(&committed("podmonitor")).unwrap();
    assert_eq!(
        (pm.api_version.as_str(), pm.kind.as_str()),
        ("monitoring.coreos.com/v1", "PodMonitor")
    );
    let ds: DaemonSet = serde_saphyr::from_str(&committed("daemonset")).unwrap();
    assert_eq!(pm.metadata.namespace, ds.metadata.namespace);
    let tmpl = ds.spec.unwrap().template;
    let pod_labels = tmpl.metadata.unwrap().labels.unwrap();
    for (k, v) in pm.spec.selector.match_labels.as_ref().unwrap() {
        assert_eq!(pod_labels.get(k), Some(v), "selector {k}={v}");
    }
    let ports = tmpl.spec.unwrap().containers[0].ports.clone().unwrap();
    for ep in &pm.spec.pod_metrics_endpoints {
        assert!(
            ports
                .iter()
                .any(|p| p.name.as_deref() == Some(ep.port.as_str())),
            "endpoint port {} is not a container port name",
            ep.port
        );
        assert_eq!(ep.path, "/metrics");
    }
}
