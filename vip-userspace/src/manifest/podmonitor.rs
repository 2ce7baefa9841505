//! The Prometheus Operator's PodMonitor: its few typed fields (k8s-openapi does not know
//! the kind) and the one this daemon's metrics are scraped with.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::{labels, meta, Options, METRICS_PORT_NAME};

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
