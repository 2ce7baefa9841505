//! The Service controller against the in-process API server: allocation, status, Events,
//! sharing, pool exhaustion, restart without reallocation, and the model it produces.
use fake_apiserver::{FakeApiServer, Fault};
use k8s_openapi::api::{
    core::v1::{ConfigMap, Service},
    discovery::v1::EndpointSlice,
};
use kube::{api::PostParams, Api, Client};
use serde_json::json;
use std::{collections::BTreeSet, net::IpAddr};
use vip_userspace::{
    k8s::{
        controller::{status_ips, Controller, ControllerConfig, Kind, HOLDER},
        writer::Counters,
    },
    model::{LbMode, Proto},
};

fn client(s: &FakeApiServer) -> Client {
    Client::try_from(kube::Config::new(s.url().parse().unwrap())).unwrap()
}

async fn setup(s: &FakeApiServer, pool: &str) -> Client {
    let c = client(s);
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "kubevip", "namespace": "kube-system"},
        "data": {"range-global": pool}
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(c.clone(), "kube-system")
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    c
}

async fn service(c: &Client, name: &str, port: i32, annotations: serde_json::Value) {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": port, "protocol": "TCP", "targetPort": 8080}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(c.clone(), "default")
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
}

async fn slice(c: &Client, svc: &str) {
    let es: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": format!("{svc}-1"), "namespace": "default", "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
            {"addresses": ["10.0.0.2"], "conditions": {"ready": false}}
        ]
    }))
    .unwrap();
    Api::<EndpointSlice>::namespaced(c.clone(), "default")
        .create(&PostParams::default(), &es)
        .await
        .unwrap();
}

async fn objects(c: &Client) -> (Vec<Service>, Vec<EndpointSlice>, Option<ConfigMap>) {
    let svcs = Api::<Service>::all(c.clone())
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    let slices = Api::<EndpointSlice>::all(c.clone())
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    let cm = Api::<ConfigMap>::namespaced(c.clone(), "kube-system")
        .get_opt("kubevip")
        .await
        .unwrap();
    (svcs, slices, cm)
}

/// One pass; the leader also holds (has applied) every address already in a status.
async fn pass(
    ctl: &mut Controller,
    c: &Client,
    leader: bool,
) -> (
    Vec<vip_userspace::model::Service>,
    vip_userspace::k8s::controller::PassReport,
) {
    let (s, e, cm) = objects(c).await;
    let held = if leader {
        statuses(&s)
    } else {
        Default::default()
    };
    let (view, rep) = ctl.pass(&s, &e, cm.as_ref(), leader, &held).await;
    // The daemon diffs the view in one walk: it must come sorted, one service per id.
    assert!(
        vip_userspace::model::sorted_unique(&view.services),
        "view not sorted/unique: {:?}",
        view.services
    );
    (view.services.to_vec(), rep)
}

fn statuses(s: &[Service]) -> BTreeSet<IpAddr> {
    s.iter().flat_map(status_ips).collect()
}

fn events(s: &FakeApiServer, reason: &str) -> usize {
    s.objects("events")
        .iter()
        .filter(|e| e["reason"] == reason)
        .count()
}

fn ip_of(svcs: &[Service], name: &str) -> Vec<String> {
    let s = svcs
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(name))
        .unwrap();
    status_ips(s).iter().map(|i| i.to_string()).collect()
}

#[tokio::test]
async fn allocates_writes_status_and_events_and_builds_the_model() {
    let s = FakeApiServer::start().await.unwrap();
    let c = setup(&s, "192.0.2.200-192.0.2.201").await;
    service(&c, "web", 80, json!({"vip.dev/forwarding-mode": "dsr"})).await;
    slice(&c, "web").await;
    let mut ctl = Controller::new(c.clone(), ControllerConfig::new("node-a"));
    let (model, rep) = pass(&mut ctl, &c, true).await;
    assert_eq!(rep.allocated, vec!["default/web"]);
    assert_eq!(rep.pools, vec![("global".to_string(), 2, 1)]);
    let (svcs, _, _) = objects(&c).await;
    assert_eq!(ip_of(&svcs, "web"), vec!["192.0.2.200"]);
    let raw = s.objects("services");
    assert_eq!(
        raw[0]["status"]["loadBalancer"]["ingress"][0]["ipMode"],
        "VIP"
    );
    // The holder annotation follows the data plane: written once the VIP is applied here
    // (the next pass), with no OwnerChanged for a first holder.
    assert!(raw[0]["metadata"]["annotations"][HOLDER].is_null());
    pass(&mut ctl, &c, true).await;
    let raw = s.objects("services");
    assert_eq!(raw[0]["metadata"]["annotations"][HOLDER], "node-a");
    assert_eq!(events(&s, "OwnerChanged"), 0);
    assert_eq!(events(&s, "IPAllocated"), 1);
    // The model: VIP:80/tcp in dsr mode, only the ready endpoint, target port resolved.
    assert_eq!(model.len(), 1);
    let m = &model[0];
    assert_eq!(
        (m.vip.to_string().as_str(), m.port, m.proto, m.mode),
        ("192.0.2.200", 80, Proto::Tcp, LbMode::Dsr)
    );
    assert_eq!(m.backends.len(), 1);
    assert_eq!(
        (m.backends[0].addr.to_string().as_str(), m.backends[0].port),
        ("10.0.0.1", 8080)
    );
    // Idempotent: nothing more on the next pass.
    let (_, rep) = pass(&mut ctl, &c, true).await;
    assert!(rep.allocated.is_empty());
    assert_eq!(events(&s, "IPAllocated"), 1);
}

#[tokio::test]
async fn exhaustion_sharing_restart_and_followers() {
    let s = FakeApiServer::start().await.unwrap();
    let c = setup(&s, "192.0.2.200-192.0.2.201").await;
    service(&c, "a", 80, json!({"vip.dev/sharing-key": "k"})).await;
    service(&c, "b", 443, json!({"vip.dev/sharing-key": "k"})).await;
    service(&c, "c", 80, json!({})).await;
    service(&c, "d", 80, json!({})).await;
    let mut ctl = Controller::new(c.clone(), ControllerConfig::new("node-a"));
    let (_, rep) = pass(&mut ctl, &c, true).await;
    assert_eq!(rep.failed.len(), 1, "{rep:?}");
    let (svcs, _, _) = objects(&c).await;
    assert_eq!(
        ip_of(&svcs, "a"),
        ip_of(&svcs, "b"),
        "same sharing key, disjoint ports: one address"
    );
    assert_ne!(ip_of(&svcs, "a"), ip_of(&svcs, "c"));
    assert!(ip_of(&svcs, "d").is_empty(), "pool exhausted");
    assert_eq!(events(&s, "AllocationFailed"), 1);
    // The failure is not reported again while it lasts.
    pass(&mut ctl, &c, true).await;
    assert_eq!(events(&s, "AllocationFailed"), 1);

    // A restarted controller (or another node taking over) rebuilds from the statuses:
    // nothing is allocated twice, nothing moves.
    let before: Vec<Vec<String>> = ["a", "b", "c"].iter().map(|n| ip_of(&svcs, n)).collect();
    let mut again = Controller::new(c.clone(), ControllerConfig::new("node-b"));
    let (_, rep) = pass(&mut again, &c, true).await;
    assert!(rep.allocated.is_empty(), "{rep:?}");
    // ... and says who holds the VIPs now.
    assert_eq!(rep.owner_changed.len(), 3, "{rep:?}");
    assert_eq!(events(&s, "OwnerChanged"), 3);
    let raw = s.objects("services");
    assert!(raw
        .iter()
        .filter(|o| o["status"]["loadBalancer"]["ingress"][0]["ip"].is_string())
        .all(|o| o["metadata"]["annotations"][HOLDER] == "node-b"));
    let (_, rep) = pass(&mut again, &c, true).await;
    assert!(rep.owner_changed.is_empty(), "reported once");
    let (svcs2, _, _) = objects(&c).await;
    let after: Vec<Vec<String>> = ["a", "b", "c"].iter().map(|n| ip_of(&svcs2, n)).collect();
    assert_eq!(before, after);

    // A follower writes nothing but builds the same model from the statuses.
    let writes = s
        .requests()
        .iter()
        .filter(|r| !r.starts_with("GET"))
        .count();
    let mut follower = Controller::new(c.clone(), ControllerConfig::new("node-c"));
    let (model, _) = pass(&mut follower, &c, false).await;
    assert_eq!(
        s.requests()
            .iter()
            .filter(|r| !r.starts_with("GET"))
            .count(),
        writes
    );
    assert_eq!(model.len(), 3, "a, b and c have addresses");

    // Deleting a Service frees its address for the one that was waiting.
    Api::<Service>::namespaced(c.clone(), "default")
        .delete("c", &Default::default())
        .await
        .unwrap();
    let (_, rep) = pass(&mut again, &c, true).await;
    assert_eq!(rep.released, vec!["default/c"]);
    assert_eq!(rep.allocated, vec!["default/d"]);
}

#[tokio::test]
async fn external_traffic_policy_local_keeps_traffic_and_ownership_on_endpoint_nodes() {
    let s = FakeApiServer::start().await.unwrap();
    let c = setup(&s, "192.0.2.200-192.0.2.201").await;
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "loc", "namespace": "default", "annotations": {"vip.dev/forwarding-mode": "dsr"}},
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(c.clone(), "default")
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    let es: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "loc-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "loc"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.0.0.1"], "nodeName": "node-a", "conditions": {"ready": true}},
            {"addresses": ["10.0.0.2"], "nodeName": "node-b", "conditions": {"ready": true}},
            {"addresses": ["10.0.0.3"], "nodeName": "node-c", "conditions": {"ready": false}}
        ]
    }))
    .unwrap();
    Api::<EndpointSlice>::namespaced(c.clone(), "default")
        .create(&PostParams::default(), &es)
        .await
        .unwrap();
    let vip: IpAddr = "192.0.2.200".parse().unwrap();
    let mut leader = Controller::new(c.clone(), ControllerConfig::new("node-a"));
    pass(&mut leader, &c, true).await;
    for (node, eligible, backends) in [
        ("node-a", true, vec!["10.0.0.1"]),
        ("node-b", true, vec!["10.0.0.2"]),
        ("node-c", false, vec![]),
    ] {
        let (svcs, slices, cm) = objects(&c).await;
        let mut ctl = Controller::new(c.clone(), ControllerConfig::new(node));
        let (view, _) = ctl
            .pass(&svcs, &slices, cm.as_ref(), false, &BTreeSet::new())
            .await;
        assert_eq!(view.local.get(&vip), Some(&eligible), "{node}");
        let got: Vec<String> = view.services[0]
            .backends
            .iter()
            .map(|b| b.addr.to_string())
            .collect();
        assert_eq!(got, backends, "{node}: only its own ready endpoints");
    }
}

#[tokio::test]
async fn a_follower_that_becomes_leader_keeps_the_previous_leaders_allocations() {
    let s = FakeApiServer::start().await.unwrap();
    let c = setup(&s, "192.0.2.200-192.0.2.202").await;
    let mut a = Controller::new(c.clone(), ControllerConfig::new("node-a"));
    let mut b = Controller::new(c.clone(), ControllerConfig::new("node-b"));
    pass(&mut b, &c, false).await; // b's first look: nothing allocated yet
    service(&c, "one", 80, json!({})).await;
    service(&c, "two", 80, json!({})).await;
    pass(&mut a, &c, true).await;
    let (_, rep) = pass(&mut b, &c, false).await;
    assert_eq!(
        rep.pools,
        vec![("global".to_string(), 3, 2)],
        "follower sees usage"
    );
    let (before, _, _) = objects(&c).await;
    // a fails over to b; a third Service arrives.
    service(&c, "three", 80, json!({})).await;
    let (_, rep) = pass(&mut b, &c, true).await;
    assert_eq!(rep.allocated, vec!["default/three"], "{rep:?}");
    let (after, _, _) = objects(&c).await;
    for n in ["one", "two"] {
        assert_eq!(ip_of(&before, n), ip_of(&after, n), "{n} kept its address");
    }
    assert_eq!(ip_of(&after, "three"), vec!["192.0.2.202"]);
}

fn writes(s: &FakeApiServer) -> usize {
    s.requests()
        .iter()
        .filter(|r| !r.starts_with("GET"))
        .count()
}

/// Feeds the controller the server's objects as watch events would (no relist).
async fn feed(ctl: &mut Controller, c: &Client) {
    let (svcs, slices, cm) = objects(c).await;
    for s in &svcs {
        ctl.apply_service(s);
    }
    for e in &slices {
        ctl.apply_slice(e);
    }
    ctl.set_pools(cm.as_ref());
    for k in [Kind::Services, Kind::Slices, Kind::Pools] {
        ctl.init_done(k);
    }
}

#[tokio::test]
async fn one_endpoint_slice_change_recomputes_one_service_and_steady_state_writes_nothing() {
    let s = FakeApiServer::start().await.unwrap();
    let c = setup(&s, "192.0.2.1-192.0.2.100").await;
    for i in 0..20 {
        let name = format!("s{i}");
        service(&c, &name, 80, json!({"vip.dev/forwarding-mode": "dsr"})).await;
        slice(&c, &name).await;
    }
    let mut ctl = Controller::new(c.clone(), ControllerConfig::new("node-a"));
    ctl.set_leader(true);
    feed(&mut ctl, &c).await;
    assert!(ctl.ready());
    let rep = ctl.step();
    assert_eq!(rep.recomputed, 20, "first complete sync: everything");
    assert_eq!(rep.allocated.len(), 20);
    assert_eq!(
        ctl.view().services.len(),
        20,
        "allocations are in the view at once"
    );
    ctl.flush().await;
    assert_eq!(events(&s, "IPAllocated"), 20);
    // The statuses come back (as watch events would bring them): recomputed, nothing written.
    let before = writes(&s);
    feed(&mut ctl, &c).await;
    let rep = ctl.step();
    assert_eq!(rep.recomputed, 20, "each status changed once");
    assert!(rep.allocated.is_empty(), "{rep:?}");
    ctl.flush().await;
    assert_eq!(
        writes(&s),
        before,
        "a status seen back is not written again"
    );

    // One EndpointSlice changes: exactly its Service is recomputed, and its model changes.
    let mut es = Api::<EndpointSlice>::namespaced(c.clone(), "default")
        .get("s7-1")
        .await
        .unwrap();
    es.endpoints[0].addresses = vec!["10.0.0.9".into()];
    let es = Api::<EndpointSlice>::namespaced(c.clone(), "default")
        .replace("s7-1", &PostParams::default(), &es)
        .await
        .unwrap();
    let before = writes(&s);
    ctl.apply_slice(&es);
    let rep = ctl.step();
    assert_eq!(rep.recomputed, 1, "{rep:?}");
    let vip = ip_of(&objects(&c).await.0, "s7")[0]
        .parse::<IpAddr>()
        .unwrap();
    let m = ctl.view().services.iter().find(|m| m.vip == vip).unwrap();
    assert_eq!(m.backends[0].addr.to_string(), "10.0.0.9");
    assert_eq!(ctl.view().services.len(), 20);

    // Nothing changed: no work, and the resync costs nothing either.
    feed(&mut ctl, &c).await;
    assert!(!ctl.has_work());
    ctl.resync();
    assert!(!ctl.has_work(), "resync retries only what failed");
    let rep = ctl.step();
    assert_eq!(rep.recomputed, 0);
    ctl.flush().await;
    assert_eq!(writes(&s), before, "steady state: no API writes");

    // A Service deleted: released, only it recomputed, the view shrinks.
    let gone: Service = Api::<Service>::namespaced(c.clone(), "default")
        .get("s3")
        .await
        .unwrap();
    ctl.delete_service(&gone);
    let rep = ctl.step();
    assert_eq!(rep.released, vec!["default/s3"]);
    assert_eq!(rep.recomputed, 0, "a deletion recomputes nothing else");
    assert_eq!(ctl.view().services.len(), 19);
}

#[tokio::test]
async fn failed_writes_are_retried_counted_and_given_up_ones_tried_again_at_resync() {
    let s = FakeApiServer::start().await.unwrap();
    let c = setup(&s, "192.0.2.200-192.0.2.201").await;
    service(&c, "web", 80, json!({})).await;
    let counters = Counters::default();
    let mut ctl =
        Controller::new(c.clone(), ControllerConfig::new("node-a")).with_counters(counters.clone());
    ctl.set_leader(true);
    feed(&mut ctl, &c).await;
    // The API server refuses writes for a while: the write is retried with back-off.
    s.set_fault("", Fault::Forbidden);
    let rep = ctl.step();
    assert_eq!(rep.allocated, vec!["default/web"]);
    assert_eq!(
        ctl.view().services.len(),
        1,
        "published before the status is written"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while counters.failures.get() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(counters.failures.get() >= 2, "failures counted");
    s.set_fault("", Fault::None);
    ctl.flush().await;
    assert_eq!(ip_of(&objects(&c).await.0, "web"), vec!["192.0.2.200"]);
    assert_eq!(events(&s, "IPAllocated"), 1);
    assert_eq!(counters.abandoned.get(), 0);

    // Refused for longer than the retries: given up, and written at the next resync.
    service(&c, "api", 81, json!({})).await;
    feed(&mut ctl, &c).await;
    s.set_fault("", Fault::Forbidden);
    let rep = ctl.step();
    assert_eq!(rep.allocated, vec!["default/api"], "{rep:?}");
    ctl.flush().await;
    assert_eq!(counters.abandoned.get(), 1);
    s.set_fault("", Fault::None);
    assert!(!ctl.has_work());
    ctl.resync();
    let rep = ctl.step();
    assert_eq!(rep.recomputed, 1, "only the failed one");
    assert_eq!(rep.allocated, vec!["default/api"]);
    ctl.flush().await;
    assert_eq!(ip_of(&objects(&c).await.0, "api"), vec!["192.0.2.201"]);
}
