//! What a user with `create Service` (or the pool ConfigMap) controls, through the
//! controller's parsers: the input is lines `key=value`.
//! - `pool.<key>=<value>`: the `kubevip` ConfigMap's data (`cidr-*`, `range-*`,
//!   `allow-share-*`, `bgp-communities-*`, `bgp-local-pref-*`);
//! - `spec.loadBalancerIP`, `spec.ipFamilies` (comma-separated), `spec.ports`
//!   (`80/TCP,53/UDP`), `spec.externalTrafficPolicy`, `endpoint` (a backend address);
//! - anything else: an annotation (`vip.dev/forwarding-mode`, `vip.dev/loadbalancerIPs`,
//!   `kube-vip.io/loadbalancer-ips-sharing-key`, `vip.dev/bgp-communities`, ...).
//!
//! Two Services with these annotations (so sharing is exercised) are allocated addresses,
//! their BGP policy is computed and their model services built, as a controller pass does.
#![no_main]
use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        core::v1::{Service, ServicePort, ServiceSpec},
        discovery::v1::{Endpoint, EndpointPort, EndpointSlice},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use libfuzzer_sys::fuzz_target;
use vip_userspace::k8s::{
    controller::{bgp_annotations, model_services, request},
    ipam::{Ipam, Pools},
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut pool = BTreeMap::new();
    let mut annotations = BTreeMap::new();
    let mut spec = ServiceSpec {
        type_: Some("LoadBalancer".into()),
        ..Default::default()
    };
    let mut ports = Vec::new();
    let mut endpoints = Vec::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if let Some(key) = k.strip_prefix("pool.") {
            pool.insert(key.to_string(), v.to_string());
            continue;
        }
        match k {
            "spec.loadBalancerIP" => spec.load_balancer_ip = Some(v.into()),
            "spec.ipFamilies" => spec.ip_families = Some(v.split(',').map(Into::into).collect()),
            "spec.externalTrafficPolicy" => spec.external_traffic_policy = Some(v.into()),
            "spec.ports" => {
                for p in v.split(',') {
                    let (port, proto) = p.split_once('/').unwrap_or((p, "TCP"));
                    if let Ok(port) = port.parse::<i32>() {
                        ports.push(ServicePort {
                            port,
                            protocol: Some(proto.into()),
                            ..Default::default()
                        });
                    }
                }
            }
            "endpoint" => endpoints.push(Endpoint {
                addresses: vec![v.into()],
                node_name: Some("node1".into()),
                ..Default::default()
            }),
            _ => {
                annotations.insert(k.to_string(), v.to_string());
            }
        }
    }
    let slice_ports = ports
        .iter()
        .map(|p| EndpointPort {
            port: Some(p.port),
            protocol: p.protocol.clone(),
            ..Default::default()
        })
        .collect();
    spec.ports = Some(ports);
    let svc = |name: &str| Service {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some(name.into()),
            annotations: Some(annotations.clone()),
            ..Default::default()
        },
        spec: Some(spec.clone()),
        status: None,
    };
    let services = [svc("a"), svc("b")];
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some("a-1".into()),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/service-name".to_string(),
                "a".to_string(),
            )])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints,
        ports: Some(slice_ports),
    };

    let Ok(pools) = Pools::from_configmap(&pool) else {
        return;
    };
    let mut ipam = Ipam::new(pools);
    for s in &services {
        let _ = bgp_annotations(s);
        let Ok(ips) = ipam.allocate(&request(s)) else {
            continue;
        };
        for ip in &ips {
            let _ = ipam.pools().bgp_policy(*ip);
        }
        // Every allocated address, both families (each takes its own family's backends).
        let _ = model_services(s, std::slice::from_ref(&slice), &ips, "node1");
    }
    let _ = ipam.usage();
    ipam.release("default", "a");
});
