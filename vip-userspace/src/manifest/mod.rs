//! `vip manifest daemonset|pod|rbac|podmonitor`: deployment manifests for the control-plane
//! VIP, held by Lease election (kube-vip's main use). Built from k8s-openapi types (the
//! PodMonitor from its own few typed fields), so they are valid objects by construction;
//! `manifests/` holds copies generated with the defaults, and a test fails when they drift.
use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, DaemonSetSpec},
        core::v1::{
            Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
            HostPathVolumeSource, ObjectFieldSelector, Pod, PodSpec, PodTemplateSpec, Probe,
            SecurityContext, ServiceAccount, Toleration, Volume, VolumeMount,
        },
        rbac::v1::{
            ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
        },
    },
    apimachinery::pkg::{
        apis::meta::v1::LabelSelector, apis::meta::v1::ObjectMeta, util::intstr::IntOrString,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("rendering YAML: {0}")]
    Yaml(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub image: String,
    pub interface: String,
    pub vips: Vec<String>,
    pub mode: String,
    pub namespace: String,
    pub lease_name: String,
    /// Static pod only: the node-local admin kubeconfig.
    pub kubeconfig: String,
    /// Serve Services of type LoadBalancer too.
    pub services: bool,
    /// `--service-election` for the daemon (`None`: its default, `shared`). `rendezvous` also
    /// needs leases list, watch and delete.
    pub service_election: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            image: vip_common::image::NAME.into(),
            interface: "eth0".into(),
            vips: vec!["192.0.2.100".into()],
            mode: "auto".into(),
            namespace: "kube-system".into(),
            lease_name: "plndr-cp-lock".into(),
            kubeconfig: "/etc/kubernetes/admin.conf".into(),
            services: false,
            service_election: None,
        }
    }
}

const NAME: &str = "vip";
const METRICS_PORT: i32 = 9472;
/// The container port's name: what the probes and the PodMonitor refer to.
const METRICS_PORT_NAME: &str = "metrics";
/// The node's primary address (`status.hostIP`), which the daemon serves metrics on.
const NODE_IP_ENV: &str = "VIP_NODE_IP";

fn labels() -> BTreeMap<String, String> {
    [("app.kubernetes.io/name".to_string(), NAME.to_string())].into()
}

fn meta(o: &Options) -> ObjectMeta {
    ObjectMeta {
        name: Some(NAME.into()),
        namespace: Some(o.namespace.clone()),
        labels: Some(labels()),
        ..Default::default()
    }
}

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
    let mut mounts = vec![VolumeMount {
        name: "bpffs".into(),
        mount_path: "/sys/fs/bpf".into(),
        ..Default::default()
    }];
    if let Some(k) = kubeconfig {
        args.push("--kubeconfig".into());
        args.push(k.into());
        // The static pod serves the control plane: hold the VIP only while the API server
        // it elects against is ready.
        args.push("--readyz-gate".into());
        mounts.push(VolumeMount {
            name: "kubeconfig".into(),
            mount_path: k.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    Container {
        name: NAME.into(),
        image: Some(o.image.clone()),
        args: Some(args),
        env: Some(vec![
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
        ]),
        ports: Some(vec![ContainerPort {
            name: Some(METRICS_PORT_NAME.into()),
            container_port: METRICS_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        // Exactly what the daemon does: BPF and PERFMON to load the program and maps,
        // NET_ADMIN to attach XDP and manage addresses and neighbours, NET_RAW for
        // gratuitous ARP, SYS_ADMIN to mount bpffs when the node has none, SYS_NICE for
        // the Raft election's real-time threads (`election.raft.realtime_priority`).
        security_context: Some(SecurityContext {
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
        }),
        liveness_probe: Some(probe("/healthz")),
        readiness_probe: Some(probe("/readyz")),
        volume_mounts: Some(mounts),
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

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.into()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    }
}

/// With `--services`: what the Service controller calls, cluster-wide.
pub fn services_rbac(o: &Options) -> (ClusterRole, ClusterRoleBinding) {
    let role = ClusterRole {
        metadata: ObjectMeta {
            name: Some(NAME.into()),
            labels: Some(labels()),
            ..Default::default()
        },
        rules: Some(vec![
            // watch caches, and the holder annotation
            rule("", &["services"], &["list", "watch", "patch"]),
            // status.loadBalancer
            rule("", &["services/status"], &["patch"]),
            rule("discovery.k8s.io", &["endpointslices"], &["list", "watch"]),
            // IPAllocated / AllocationFailed
            rule("", &["events"], &["create"]),
        ]),
        ..Default::default()
    };
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(NAME.into()),
            labels: Some(labels()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: NAME.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: NAME.into(),
            namespace: Some(o.namespace.clone()),
            ..Default::default()
        }]),
    };
    (role, binding)
}

/// Least privilege for what the daemon calls: Leases in one namespace (GET, POST, PUT; with
/// `--service-election rendezvous` also list, watch, DELETE);
/// with `--services` also the pool ConfigMap there (list, watch).
pub fn rbac(o: &Options) -> (ServiceAccount, Role, RoleBinding) {
    let sa = ServiceAccount {
        metadata: meta(o),
        ..Default::default()
    };
    let role = Role {
        metadata: meta(o),
        rules: Some({
            let rendezvous = o.services && o.service_election.as_deref() == Some("rendezvous");
            // Rendezvous: the node and claim leases are watched, and claims of VIPs that no
            // longer exist deleted.
            let verbs: &[&str] = if rendezvous {
                &["get", "create", "update", "list", "watch", "delete"]
            } else {
                &["get", "create", "update"]
            };
            let mut r = vec![rule("coordination.k8s.io", &["leases"], verbs)];
            if o.services {
                r.push(rule("", &["configmaps"], &["list", "watch"]));
            }
            r
        }),
    };
    let binding = RoleBinding {
        metadata: meta(o),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: NAME.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: NAME.into(),
            namespace: Some(o.namespace.clone()),
            ..Default::default()
        }]),
    };
    (sa, role, binding)
}

/// Prometheus Operator's PodMonitor (`monitoring.coreos.com/v1`), which k8s-openapi does not
/// know: only the fields used, typed like the rest.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodMonitor {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: PodMonitorSpec,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodMonitorSpec {
    pub selector: LabelSelector,
    pub pod_metrics_endpoints: Vec<PodMetricsEndpoint>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodMetricsEndpoint {
    /// A container port name.
    pub port: String,
    pub path: String,
    pub relabelings: Vec<Relabeling>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Relabeling {
    pub source_labels: Vec<String>,
    pub target_label: String,
}

/// Scrapes every vip pod, in the pods' namespace (a PodMonitor selects in its own namespace
/// unless told otherwise), on the port the probes use.
pub fn pod_monitor(o: &Options) -> PodMonitor {
    PodMonitor {
        api_version: "monitoring.coreos.com/v1".into(),
        kind: "PodMonitor".into(),
        metadata: meta(o),
        spec: PodMonitorSpec {
            selector: LabelSelector {
                match_labels: Some(labels()),
                ..Default::default()
            },
            pod_metrics_endpoints: vec![PodMetricsEndpoint {
                port: METRICS_PORT_NAME.into(),
                path: "/metrics".into(),
                // A host-network pod's address is the node's; the dashboard names nodes.
                relabelings: vec![Relabeling {
                    source_labels: vec!["__meta_kubernetes_pod_node_name".into()],
                    target_label: "node".into(),
                }],
            }],
        },
    }
}

fn yaml<T: serde::Serialize>(v: &T) -> Result<String, ManifestError> {
    // k8s-openapi fills apiVersion/kind on serialization (PodMonitor carries its own).
    serde_saphyr::to_string(v).map_err(|e| ManifestError::Yaml(crate::Chain(&e).to_string()))
}

/// The manifest as YAML; `rbac` is three documents separated by `---`.
pub fn render(kind: &str, o: &Options) -> Result<String, ManifestError> {
    let header = "# Generated by `vip manifest`; edit the flags, not this file.\n";
    let body = match kind {
        "daemonset" => yaml(&daemonset(o))?,
        "pod" => yaml(&pod(o))?,
        "podmonitor" => yaml(&pod_monitor(o))?,
        "rbac" => {
            let (sa, role, rb) = rbac(o);
            let mut docs = vec![yaml(&sa)?, yaml(&role)?, yaml(&rb)?];
            if o.services {
                let (cr, crb) = services_rbac(o);
                docs.push(yaml(&cr)?);
                docs.push(yaml(&crb)?);
            }
            docs.join("---\n")
        }
        other => return Err(ManifestError::Yaml(format!("unknown manifest `{other}`"))),
    };
    Ok(format!("{header}{body}"))
}
