//! `vip manifest`: generated copies in manifests/ stay in sync, and every document is a
//! valid Kubernetes object with what the daemon needs (and no more).
use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{Pod, ServiceAccount},
    rbac::v1::{Role, RoleBinding},
};
use vip_userspace::manifest::{render, Options};

fn committed(kind: &str) -> String {
    let p =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../manifests/{kind}.yaml"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn committed_manifests_match_the_generator() {
    for kind in ["daemonset", "pod", "rbac"] {
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
    assert_eq!(add, ["BPF", "NET_ADMIN", "NET_RAW", "PERFMON", "SYS_ADMIN"]);
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
