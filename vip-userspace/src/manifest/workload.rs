//! The daemon's pod: its container (arguments, environment, capabilities, probes, mounts)
//! and the two ways it runs, DaemonSet and static pod. Together because both are the same
//! pod spec and differ only in how the daemon reaches the API server.
use k8s_openapi::api::{
    apps::v1::{DaemonSet, DaemonSetSpec},
    core::v1::{
        Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
        HostPathVolumeSource, ObjectFieldSelector, Pod, PodSpec, PodTemplateSpec, Probe,
        SecurityContext, Toleration, Volume, VolumeMount,
    },
};
use k8s_openapi::apimachinery::pkg::{
    apis::meta::v1::LabelSelector, apis::meta::v1::ObjectMeta, util::intstr::IntOrString,
};

use super::{labels, meta, Options, METRICS_PORT, METRICS_PORT_NAME, NAME, NODE_IP_ENV};

/// The kubelet probes the pod IP when `host` is unset, and a host-network pod's IP is the
/// node's: the address the daemon listens on (`host` cannot name a variable).
fn probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(METRICS_PORT_NAME.into()),
            ..Default::default()
        }),
        period_seconds: Some(5),
        ..Default::default()
    }
}

fn container(o: &Options, kubeconfig: Option<&str>) -> Container {
    Container {
        name: NAME.into(),
        image: Some(o.image.clone()),
        args: Some(args(o, kubeconfig)),
        env: Some(env()),
        ports: Some(vec![ContainerPort {
            name: Some(METRICS_PORT_NAME.into()),
            container_port: METRICS_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        security_context: Some(security_context()),
        liveness_probe: Some(probe("/healthz")),
        readiness_probe: Some(probe("/readyz")),
        volume_mounts: Some(mounts(kubeconfig)),
        ..Default::default()
    }
}

/// `vip run` for the control-plane VIP; with the static pod's `kubeconfig`, also that file
/// and the readiness gate.
fn args(o: &Options, kubeconfig: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "run".to_string(),
        "--interface".into(),
        o.interface.clone(),
        "--mode".into(),
        o.mode.clone(),
        "--election".into(),
        "lease".into(),
        "--lease-name".into(),
        o.lease_name.clone(),
        "--lease-namespace".into(),
        o.namespace.clone(),
    ];
    for v in &o.vips {
        args.push("--vip".into());
        args.push(v.clone());
    }
    if o.services {
        args.push("--services".into());
    }
    if let Some(e) = &o.service_election {
        args.push("--service-election".into());
        args.push(e.clone());
    }
    if let Some(k) = kubeconfig {
        args.push("--kubeconfig".into());
        args.push(k.into());
        // The static pod serves the control plane: hold the VIP only while the API server
        // it elects against is ready.
        args.push("--readyz-gate".into());
    }
    args
}

/// bpffs always; the static pod's kubeconfig read-only where its argument names it.
fn mounts(kubeconfig: Option<&str>) -> Vec<VolumeMount> {
    let mut mounts = vec![VolumeMount {
        name: "bpffs".into(),
        mount_path: "/sys/fs/bpf".into(),
        ..Default::default()
    }];
    if let Some(k) = kubeconfig {
        mounts.push(VolumeMount {
            name: "kubeconfig".into(),
            mount_path: k.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    mounts
}

fn env() -> Vec<EnvVar> {
    vec![
        field_env("NODE_NAME", "spec.nodeName"),
        // The kubelet resolves status.hostIP itself, so this works in the static pod too,
        // before any API server exists. In the environment rather than the arguments so
        // that `vip status` run in the container finds the daemon as well.
        field_env(NODE_IP_ENV, "status.hostIP"),
        EnvVar {
            name: "VIP_METRICS_ADDR".into(),
            // Expanded by the kubelet from the variable above (defined first, as it must be).
            value: Some(format!("$({NODE_IP_ENV}):{METRICS_PORT}")),
            ..Default::default()
        },
    ]
}

/// Exactly what the daemon does: BPF and PERFMON to load the program and maps,
/// NET_ADMIN to attach XDP and manage addresses and neighbours, NET_RAW for
/// gratuitous ARP, SYS_ADMIN to mount bpffs when the node has none, SYS_NICE for
/// the Raft election's real-time threads (`election.raft.realtime_priority`).
fn security_context() -> SecurityContext {
    SecurityContext {
        privileged: Some(false),
        capabilities: Some(Capabilities {
            add: Some(
                [
                    "BPF",
                    "PERFMON",
                    "NET_ADMIN",
                    "NET_RAW",
                    "SYS_ADMIN",
                    "SYS_NICE",
                ]
                .map(String::from)
                .to_vec(),
            ),
            drop: Some(vec!["ALL".into()]),
        }),
        ..Default::default()
    }
}

/// An environment variable from the downward API.
fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn host_path(name: &str, path: &str, kind: &str) -> Volume {
    Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource {
            path: path.into(),
            type_: Some(kind.into()),
        }),
        ..Default::default()
    }
}

fn pod_spec(o: &Options, kubeconfig: Option<&str>) -> PodSpec {
    let mut volumes = vec![host_path("bpffs", "/sys/fs/bpf", "DirectoryOrCreate")];
    if let Some(k) = kubeconfig {
        volumes.push(host_path("kubeconfig", k, "File"));
    }
    PodSpec {
        host_network: Some(true),
        priority_class_name: Some("system-node-critical".into()),
        service_account_name: kubeconfig.is_none().then(|| NAME.to_string()),
        containers: vec![container(o, kubeconfig)],
        volumes: Some(volumes),
        ..Default::default()
    }
}

/// DaemonSet on the control-plane nodes, authenticating as the `vip` ServiceAccount.
pub fn daemonset(o: &Options) -> DaemonSet {
    let mut spec = pod_spec(o, None);
    spec.node_selector = Some(
        [(
            "node-role.kubernetes.io/control-plane".to_string(),
            String::new(),
        )]
        .into(),
    );
    spec.tolerations = Some(vec![Toleration {
        operator: Some("Exists".into()),
        ..Default::default()
    }]);
    DaemonSet {
        metadata: meta(o),
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(labels()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels()),
                    ..Default::default()
                }),
                spec: Some(spec),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Static pod (`/etc/kubernetes/manifests/vip.yaml`): the VIP exists before the API server
/// is reachable through it; it elects against the local API server with the node's admin
/// kubeconfig (on the first kubeadm control-plane node, point it at super-admin.conf
/// during `kubeadm init`, then back to admin.conf).
pub fn pod(o: &Options) -> Pod {
    Pod {
        metadata: meta(o),
        spec: Some(pod_spec(o, Some(&o.kubeconfig))),
        ..Default::default()
    }
}
