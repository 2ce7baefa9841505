//! The RBAC objects: least privilege for what the daemon calls, namespaced for the
//! election, cluster-wide for the Service controller. Separate so a new API call and its
//! permission are reviewed in one place.
use k8s_openapi::api::{
    core::v1::ServiceAccount,
    rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{labels, meta, Options, NAME};

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
