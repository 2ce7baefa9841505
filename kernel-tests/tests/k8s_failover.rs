//! Control-plane VIP held by Lease election: two real daemons (XDP) on a namespace bed, the
//! in-process API server on its own host. The owner's API access is black-holed: it goes
//! silent by the renew deadline, the other node answers only after the lease expired.
mod common;

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use common::{garps, kubeconfig, replies, start_api, Api, Daemon, Prober, VIP};
use fake_apiserver::{FakeApiServer, Fault};
use testbed::{parse_mac, poll, require_root_and_bpf, Bed, Capture};

/// The bed every test here uses: client, node1, node2 and the API server's host (plus
/// `extra` hosts), the API server running, and a scratch folder for configs.
struct Cluster {
    // Dropped in this order: the API server's thread leaves its namespace before the bed goes.
    api: Api,
    bed: Bed,
    url: String,
    dir: PathBuf,
}

impl Cluster {
    fn new(prefix: &str, extra: &[(&str, &str)]) -> Cluster {
        require_root_and_bpf();
        let mut hosts = vec![
            ("client", "192.0.2.10/24"),
            ("node1", "192.0.2.11/24"),
            ("node2", "192.0.2.12/24"),
            ("api", "192.0.2.2/24"),
        ];
        hosts.extend_from_slice(extra);
        let bed = Bed::new(prefix, &hosts);
        let (api, url) = start_api(bed.host("api"));
        let dir = std::env::temp_dir().join(prefix);
        std::fs::create_dir_all(&dir).unwrap();
        Cluster { api, bed, url, dir }
    }

    fn server(&self) -> &FakeApiServer {
        self.api.server.as_ref().unwrap()
    }

    /// `vip run` on `node` (XDP, its own pins): the file's `top` lines, then an `election:`
    /// section with this node's kubeconfig and identity, the `election` lines, and the
    /// timings every test uses (lease 2 s, renew 1 s, retry 0.1 s).
    fn daemon(&self, node: &str, top: &str, election: &str) -> Daemon {
        let kc = kubeconfig(&self.dir, &self.url, node);
        let cfg = self.dir.join(format!("{node}.yaml"));
        Daemon::start_with_config(&self.bed, node, &cfg, &format!(
                "interface: eth0\nmode: xdp\npin_dir: /sys/fs/bpf/vip-test-{}-{node}\n{top}election:\n  kubeconfig: {}\n  identity: {node}\n{election}  lease_duration_ms: 2000\n  renew_deadline_ms: 1000\n  retry_period_ms: 100\n",
                self.bed.prefix,
                kc.display()
            ))
    }

    /// Run `f` with an API client on a runtime in the client's namespace.
    fn kube<F>(&self, f: impl FnOnce(kube::Client) -> F + Send + 'static)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let url = self.url.clone();
        self.bed.host("client").ns.run(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let c =
                        kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
                    f(c).await
                })
        })
    }

    /// Create objects (ConfigMap, Service, EndpointSlice as JSON with `kind`) through the API.
    fn create(&self, objects: Vec<serde_json::Value>) {
        self.kube(move |c| async move {
            use kube::{api::PostParams, core::DynamicObject};
            for o in objects {
                let ar = resource(o["kind"].as_str().unwrap());
                let ns = o["metadata"]["namespace"].as_str().unwrap().to_string();
                let obj: DynamicObject = serde_json::from_value(o).unwrap();
                kube::Api::<DynamicObject>::namespaced_with(c.clone(), &ns, &ar)
                    .create(&PostParams::default(), &obj)
                    .await
                    .unwrap();
            }
        });
    }

    fn remove_dir(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn resource(kind: &str) -> kube::core::ApiResource {
    use k8s_openapi::api::{
        core::v1::{ConfigMap, Service},
        discovery::v1::EndpointSlice,
    };
    use kube::core::ApiResource;
    match kind {
        "ConfigMap" => ApiResource::erase::<ConfigMap>(&()),
        "Service" => ApiResource::erase::<Service>(&()),
        "EndpointSlice" => ApiResource::erase::<EndpointSlice>(&()),
        other => panic!("no resource for {other}"),
    }
}

/// kube-vip's pool ConfigMap with one global range.
fn pool(range: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kubevip", "namespace": "kube-system"},
        "data": {"range-global": range}
    })
}

/// A LoadBalancer Service in `default` with one TCP port named `http`.
fn lb_service(name: &str, port: u16, policy: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": policy,
                 "ports": [{"name": "http", "port": port, "protocol": "TCP"}]}
    })
}

#[test]
fn lease_owner_partitioned_goes_silent_then_other_node_takes_over() {
    let cl = Cluster::new("vkf", &[]);
    let bed = &cl.bed;
    let daemons: Vec<Daemon> = ["node1", "node2"]
        .iter()
        .map(|n| cl.daemon(n, &format!("vips: [{VIP}]\n"), ""))
        .collect();
    let client = bed.host("client");
    let cap = Capture::start(client, 0x0806);
    let _probe = Prober::start(client);
    let macs = [
        parse_mac(&bed.host("node1").mac),
        parse_mac(&bed.host("node2").mac),
    ];
    let first = poll(Duration::from_secs(10), || {
        replies(&cap).first().map(|r| r.1)
    })
    .expect("one node answers for the VIP");
    let leader = macs.iter().position(|m| *m == first).expect("a node's MAC");
    let other = 1 - leader;
    // Stable: only the leader answers.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        replies(&cap).iter().all(|r| r.1 == macs[leader]),
        "one owner only"
    );

    let leader_name = ["node1", "node2"][leader];
    let other_name = ["node1", "node2"][other];
    // When the API server commits the other node's claim: the start of its takeover path.
    let mut events = cl.server().subscribe();
    let other_id = other_name.to_string();
    let claimed = std::thread::spawn(move || loop {
        match events.blocking_recv() {
            Ok(e)
                if e.res.ends_with("leases")
                    && e.obj["spec"]["holderIdentity"].as_str() == Some(other_id.as_str()) =>
            {
                return Some(Instant::now());
            }
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        }
    });
    cl.server().set_fault(leader_name, Fault::BlackHole);
    let cut = Instant::now();
    let took = poll(Duration::from_secs(8), || {
        replies(&cap)
            .iter()
            .find(|r| r.1 == macs[other])
            .map(|r| r.0)
    })
    .expect("the other node takes over");
    let all = replies(&cap);
    let last_old = all
        .iter()
        .filter(|r| r.1 == macs[leader])
        .map(|r| r.0)
        .max()
        .unwrap();
    let silent_after = last_old.saturating_duration_since(cut);
    let took_after = took.saturating_duration_since(cut);
    println!(
        "old owner's last answer {silent_after:?} after the cut, new owner's first {took_after:?}"
    );
    assert!(
        silent_after <= Duration::from_millis(1000 + 150),
        "fenced by the renew deadline: {silent_after:?}"
    );
    assert!(
        took > last_old,
        "never two owners: old last {silent_after:?}, new first {took_after:?}"
    );
    assert!(
        took_after <= Duration::from_secs(4),
        "takeover soon after expiry: {took_after:?}"
    );
    // The fast path: from the committed claim to the first gratuitous ARP on the wire.
    let claimed = claimed
        .join()
        .unwrap()
        .expect("the other node's claim was committed");
    let garp = poll(Duration::from_secs(2), || {
        garps(&cap)
            .into_iter()
            .find(|g| g.1 == macs[other] && g.0 >= claimed)
    })
    .expect("the new owner announces the VIP");
    let first_garp = garp.0 - claimed;
    println!("lease committed → first gratuitous ARP from the new owner: {first_garp:?}");
    assert!(
        first_garp < Duration::from_millis(10),
        "first GARP {first_garp:?} after the claim was committed (goal < 10 ms)"
    );
    for mut d in daemons {
        assert!(d.stop().success(), "{}", d.logs());
    }
    cl.remove_dir();
}

#[test]
fn kubernetes_service_gets_an_address_and_one_node_serves_it() {
    let cl = Cluster::new("vks", &[]);
    let bed = &cl.bed;
    // A pool and a Service, created through the API from the client's namespace.
    cl.create(vec![
        pool("192.0.2.200-192.0.2.201"),
        lb_service("web", 80, "Cluster"),
    ]);
    let mut servers = Vec::new();
    let mut daemons = Vec::new();
    for n in ["node1", "node2"] {
        servers.push(testbed::TcpServer::start(
            &bed.host(n).ns,
            "0.0.0.0:80".parse().unwrap(),
            &format!("{n}\n"),
        ));
        daemons.push(cl.daemon(n, "", "  services: true\n"));
    }
    let server = cl.server();
    let ip = poll(Duration::from_secs(15), || {
        server.objects("services")[0]["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .map(str::to_string)
    })
    .unwrap_or_else(|| {
        panic!(
            "status written:\n{}\n{}",
            daemons[0].logs(),
            daemons[1].logs()
        )
    });
    assert_eq!(ip, "192.0.2.200", "lowest address of the pool");
    let svc = &server.objects("services")[0];
    let holder = svc["metadata"]["annotations"]["vip.dev/holder"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(server
        .objects("events")
        .iter()
        .any(|e| e["reason"] == "IPAllocated"));
    // Exactly the holder answers for the address, and serves it (local mode: its own stack).
    let client = bed.host("client");
    let mac = poll(Duration::from_secs(10), || testbed::arping(client, &ip)).expect("ARP answered");
    assert_eq!(mac, bed.host(&holder).mac, "the holder answers");
    let got = testbed::tcp_request(&client.ns, format!("{ip}:80").parse().unwrap()).unwrap();
    assert_eq!(got, format!("{holder}\n"));
    let m = common::metrics_of(bed, &holder);
    assert!(
        m.contains(&format!("vip_vip_owner{{vip=\"{ip}\"}} 1")),
        "{m}"
    );
    assert!(m.contains("vip_k8s_addresses_allocated 1"), "{m}");
    assert!(
        m.contains("vip_k8s_pool_addresses{pool=\"global\"} 2"),
        "{m}"
    );
    assert!(m.contains("vip_k8s_pool_used{pool=\"global\"} 1"), "{m}");
    // Another host claims the address: the holder records a Warning on the Service.
    common::claim(client, ip.parse().unwrap());
    let conflict = poll(Duration::from_secs(5), || {
        server
            .objects("events")
            .into_iter()
            .find(|e| e["reason"] == "VIPConflict")
    })
    .unwrap_or_else(|| panic!("conflict Event recorded:\n{}", daemons[0].logs()));
    assert_eq!(conflict["type"], "Warning");
    assert_eq!(conflict["involvedObject"]["kind"], "Service");
    assert_eq!(conflict["involvedObject"]["name"], "web");
    let msg = conflict["message"].as_str().unwrap();
    assert!(msg.contains(&client.mac) && msg.contains(&holder), "{msg}");
    for mut d in daemons {
        assert!(d.stop().success(), "{}", d.logs());
    }
    // Least privilege: every call the daemons made is allowed by `vip manifest rbac
    // --services`, and every permission it grants was used.
    let daemon_requests: Vec<String> = ["node1", "node2"]
        .iter()
        .flat_map(|n| server.requests_by(n))
        .collect();
    let used = calls(&daemon_requests);
    let granted = granted_by_manifest();
    for u in &used {
        assert!(
            granted.contains(u),
            "{u:?} is used but not granted by the manifest"
        );
    }
    for g in &granted {
        assert!(used.contains(g), "{g:?} is granted but never used");
    }
    drop(servers);
    cl.remove_dir();
}

/// (verb, API group, resource) of each request, as RBAC sees it.
fn calls(requests: &[String]) -> std::collections::BTreeSet<(String, String, String)> {
    requests
        .iter()
        .filter_map(|r| {
            let (method, rest) = r.split_once(' ')?;
            let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
            let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            let (group, tail) = match segs.as_slice() {
                ["api", "v1", tail @ ..] => (String::new(), tail),
                ["apis", g, _v, tail @ ..] => (g.to_string(), tail),
                _ => return None,
            };
            let tail: Vec<&str> = match tail {
                ["namespaces", _ns, t @ ..] => t.to_vec(),
                t => t.to_vec(),
            };
            let (resource, named) = match tail.as_slice() {
                [r] => (r.to_string(), false),
                [r, _name] => (r.to_string(), true),
                [r, _name, sub] => (format!("{r}/{sub}"), true),
                _ => return None,
            };
            let verb = match method {
                "GET" if query.contains("watch=true") => "watch",
                "GET" if named => "get",
                "GET" => "list",
                "POST" => "create",
                "PUT" => "update",
                "PATCH" => "patch",
                "DELETE" => "delete",
                _ => return None,
            };
            Some((verb.to_string(), group, resource))
        })
        .collect()
}

fn granted_by_manifest() -> std::collections::BTreeSet<(String, String, String)> {
    use k8s_openapi::api::rbac::v1::PolicyRule;
    let o = vip_userspace::manifest::Options {
        services: true,
        ..Default::default()
    };
    let (_, role, _) = vip_userspace::manifest::rbac(&o);
    let (cr, _) = vip_userspace::manifest::services_rbac(&o);
    let rules: Vec<PolicyRule> = role
        .rules
        .unwrap()
        .into_iter()
        .chain(cr.rules.unwrap())
        .collect();
    let mut out = std::collections::BTreeSet::new();
    for r in rules {
        for g in r.api_groups.unwrap_or_default() {
            for res in r.resources.clone().unwrap_or_default() {
                for v in &r.verbs {
                    out.insert((v.clone(), g.clone(), res.clone()));
                }
            }
        }
    }
    out
}

/// The holder annotation of Service `name`, once written.
fn holder_of(server: &FakeApiServer, name: &str) -> Option<String> {
    server
        .objects("services")
        .into_iter()
        .find(|s| s["metadata"]["name"] == name)?["metadata"]["annotations"]["vip.dev/holder"]
        .as_str()
        .map(str::to_string)
}

fn status_ip(server: &FakeApiServer, name: &str) -> Option<String> {
    server
        .objects("services")
        .into_iter()
        .find(|s| s["metadata"]["name"] == name)?["status"]["loadBalancer"]["ingress"][0]["ip"]
        .as_str()
        .map(str::to_string)
}

fn lease_holder(server: &FakeApiServer, name: &str) -> Option<String> {
    server
        .objects("leases")
        .into_iter()
        .find(|l| l["metadata"]["name"] == name)?["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_string)
}

#[test]
fn per_vip_leases_spread_vips_and_local_policy_follows_the_endpoints() {
    let cl = Cluster::new("vpv", &[]);
    let bed = &cl.bed;
    let daemons: Vec<Daemon> = ["node1", "node2"]
        .iter()
        .map(|n| cl.daemon(n, "", "  services: true\n  service_election: per-vip\n"))
        .collect();
    // Once both nodes run: two Cluster Services and one Local Service whose only endpoint
    // runs on node2. (VIPs spread as they appear; one already held is not moved to a node
    // that joins later.)
    cl.create(vec![
        pool("192.0.2.200-192.0.2.202"),
        lb_service("a", 80, "Cluster"),
        lb_service("b", 81, "Cluster"),
        lb_service("loc", 82, "Local"),
        serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "loc-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "loc"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.0.0.2"], "nodeName": "node2", "conditions": {"ready": true}}]
        }),
    ]);
    let server = cl.server();
    let logs = |d: &[Daemon]| format!("{}\n{}", d[0].logs(), d[1].logs());
    let holders = poll(Duration::from_secs(20), || {
        let h: Vec<String> = ["a", "b", "loc"]
            .iter()
            .map(|n| holder_of(server, n))
            .collect::<Option<_>>()?;
        Some(h)
    })
    .unwrap_or_else(|| panic!("holders written:\n{}", logs(&daemons)));
    let ips: Vec<String> = ["a", "b", "loc"]
        .iter()
        .map(|n| status_ip(server, n).unwrap())
        .collect();
    // Each VIP has its own lease, held by the node its Services name as holder.
    for (ip, holder) in ips.iter().zip(&holders) {
        let lease = format!("vip-{}", ip.replace('.', "-"));
        assert_eq!(
            lease_holder(server, &lease).as_ref(),
            Some(holder),
            "{lease}"
        );
    }
    // Spread: the three VIPs are split 2/1 (which way depends on who wins the race).
    let on1 = holders.iter().filter(|h| *h == "node1").count();
    assert!(
        (1..=2).contains(&on1),
        "VIPs spread over the nodes: {holders:?}"
    );
    assert_eq!(
        holders[2], "node2",
        "Local: only the node with the endpoint"
    );
    // Exactly the holder answers ARP for each.
    let client = bed.host("client");
    for (ip, holder) in ips.iter().zip(&holders) {
        let mac = poll(Duration::from_secs(10), || testbed::arping(client, ip))
            .unwrap_or_else(|| panic!("ARP for {ip}:\n{}", logs(&daemons)));
        assert_eq!(mac, bed.host(holder).mac, "{ip} answered by {holder}");
    }

    // The endpoint moves to node1: node2 goes silent, hands the lease on, node1 takes it.
    cl.kube(|c| async move {
        use k8s_openapi::api::discovery::v1::EndpointSlice;
        use kube::api::{Patch, PatchParams};
        let p = serde_json::json!({"endpoints": [{"addresses": ["10.0.0.1"], "nodeName": "node1", "conditions": {"ready": true}}]});
        kube::Api::<EndpointSlice>::namespaced(c, "default")
            .patch("loc-1", &PatchParams::default(), &Patch::Merge(&p))
            .await
            .unwrap();
    });
    let moved = poll(Duration::from_secs(10), || {
        (holder_of(server, "loc").as_deref() == Some("node1")).then_some(())
    });
    assert!(
        moved.is_some(),
        "holder moved to node1:\n{}",
        logs(&daemons)
    );
    let mac = poll(Duration::from_secs(5), || {
        testbed::arping(client, &ips[2]).filter(|m| *m == bed.host("node1").mac)
    });
    assert!(
        mac.is_some(),
        "node1 answers for the Local VIP:\n{}",
        logs(&daemons)
    );
    assert!(server
        .objects("events")
        .iter()
        .any(|e| e["reason"] == "OwnerChanged" && e["involvedObject"]["name"] == "loc"));
    for mut d in daemons {
        assert!(d.stop().success(), "{}", d.logs());
    }
    // Shutdown hands every per-VIP lease on.
    for ip in &ips {
        let lease = format!("vip-{}", ip.replace('.', "-"));
        assert_eq!(lease_holder(server, &lease), None, "{lease} released");
    }
    cl.remove_dir();
}

/// Every node has the same rings and seed, so a flow that arrives at a new owner without a
/// conntrack entry is placed on the backend the old owner chose: in dsr mode an established
/// TCP connection through the VIP keeps going when the owner changes.
#[test]
fn dsr_connection_survives_owner_change() {
    let cl = Cluster::new("vdf", &[("be1", "192.0.2.21/24"), ("be2", "192.0.2.22/24")]);
    let bed = &cl.bed;
    let mut servers = Vec::new();
    for b in ["be1", "be2"] {
        testbed::make_dsr_backend(bed.host(b), VIP);
        servers.push(testbed::TcpServer::start(
            &bed.host(b).ns,
            "0.0.0.0:8080".parse().unwrap(),
            &format!("{b}\n"),
        ));
    }
    let services = format!("services:\n  - vip: {VIP}\n    port: 8080\n    mode: dsr\n    backends: [{{addr: 192.0.2.21}}, {{addr: 192.0.2.22}}]\n");
    let start = |n: &str| cl.daemon(n, &services, "");
    let client = bed.host("client");
    let mut d1 = start("node1");
    let owner = poll(Duration::from_secs(10), || testbed::arping(client, VIP));
    assert_eq!(
        owner.as_deref(),
        Some(bed.host("node1").mac.as_str()),
        "{}",
        d1.logs()
    );
    let d2 = start("node2");
    let vip: SocketAddr = format!("{VIP}:8080").parse().unwrap();
    let mut conn = testbed::LongConn::open(&client.ns, vip).expect("connection through node1");
    let backend = conn.greeting.trim().to_string();
    assert_eq!(conn.echo("through node1").unwrap(), "through node1");

    // node1 hands over (SIGTERM: silent, lease released); node2 takes the VIP and announces.
    assert!(d1.stop().success(), "{}", d1.logs());
    let moved = poll(Duration::from_secs(10), || {
        (testbed::neighbour(client, VIP).as_deref() == Some(bed.host("node2").mac.as_str()))
            .then_some(())
    });
    assert!(
        moved.is_some(),
        "client learns node2 for the VIP:\n{}",
        d2.logs()
    );
    // Same stream, same backend: node2 had no conntrack entry and placed the flow by Maglev.
    assert_eq!(conn.echo("through node2").unwrap(), "through node2");
    assert_eq!(conn.echo("still").unwrap(), "still");
    let m = common::metrics_of(bed, "node2");
    assert!(
        common::metric(&m, "vip_lb_forwarded_packets_total") >= 2,
        "the stream went through node2's XDP:\n{m}"
    );
    eprintln!("dsr stream to {backend} survived the owner change");
    let mut d2 = d2;
    assert!(d2.stop().success(), "{}", d2.logs());
    drop(servers);
    cl.remove_dir();
}

/// More Services than the data plane has slots for (`max_services: 4`, six dsr Services):
/// the daemon stays up and serves the four that fit; the other two fail alone — a
/// `ServiceNotApplied` Warning on each, `vip_services_unplaced 2`, a log line naming each —
/// and are applied as soon as slots are freed. (Before, a 65th service at start made the
/// daemon exit, and one added later stopped every later pass before it applied VIPs.)
#[test]
fn services_beyond_the_data_plane_limit_fail_alone() {
    let cl = Cluster::new("vksl", &[]);
    let mut objects = vec![pool("192.0.2.200-192.0.2.205")];
    for i in 0..6 {
        let mut s = lb_service(&format!("s{i}"), 80, "Cluster");
        s["metadata"]["annotations"] = serde_json::json!({"vip.dev/forwarding-mode": "dsr"});
        objects.push(s);
    }
    cl.create(objects);
    let mut d = cl.daemon("node1", "max_services: 4\n", "  services: true\n");
    let server = cl.server();
    let metric = |name: &str| common::metric(&common::metrics_of(&cl.bed, "node1"), name);
    let two = poll(Duration::from_secs(15), || {
        (metric("vip_services_unplaced") == 2).then_some(())
    });
    assert!(two.is_some(), "two services unplaced:\n{}", d.logs());
    let warned = poll(Duration::from_secs(5), || {
        let evs: Vec<_> = server
            .objects("events")
            .into_iter()
            .filter(|e| e["reason"] == "ServiceNotApplied")
            .collect();
        (evs.len() == 2).then_some(evs)
    })
    .unwrap_or_else(|| panic!("two ServiceNotApplied Events:\n{}", d.logs()));
    let unplaced: Vec<String> = warned
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "Warning");
            assert!(
                e["message"].as_str().unwrap().contains("max_services"),
                "{e}"
            );
            e["involvedObject"]["name"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        d.logs().matches("service not applied").count(),
        2,
        "{}",
        d.logs()
    );
    assert!(metric("vip_service_failures_total") >= 2);
    // The ones that fit are served: the owner answers ARP for all six addresses (the VIP
    // claims were applied although two services failed).
    let client = cl.bed.host("client");
    for i in 0..6 {
        let ip = format!("192.0.2.20{i}");
        let mac = poll(Duration::from_secs(5), || testbed::arping(client, &ip));
        assert_eq!(
            mac.as_deref(),
            Some(cl.bed.host("node1").mac.as_str()),
            "{ip}"
        );
    }
    // Two placed Services go: the two that failed take their slots.
    let placed: Vec<String> = (0..6)
        .map(|i| format!("s{i}"))
        .filter(|n| !unplaced.contains(n))
        .take(2)
        .collect();
    cl.kube(move |c| async move {
        let api = kube::Api::<k8s_openapi::api::core::v1::Service>::namespaced(c, "default");
        for n in placed {
            api.delete(&n, &Default::default()).await.unwrap();
        }
    });
    let none = poll(Duration::from_secs(10), || {
        (metric("vip_services_unplaced") == 0).then_some(())
    });
    assert!(
        none.is_some(),
        "all placed after slots were freed:\n{}",
        d.logs()
    );
    assert_eq!(
        d.logs()
            .matches("service applied after an earlier failure")
            .count(),
        2,
        "{}",
        d.logs()
    );
    assert!(d.stop().success(), "{}", d.logs());
    cl.remove_dir();
}

#[test]
fn dual_stack_service_is_answered_on_both_families_and_its_ipv6_vip_moves_on_failover() {
    let cl = Cluster::new("vds", &[]);
    let bed = &cl.bed;
    // The bed gives every host an IPv6 address in 2001:db8:1::/64 too.
    let mut svc = lb_service("web", 80, "Cluster");
    // What the API server fills in for `ipFamilyPolicy: RequireDualStack`.
    svc["spec"]["ipFamilyPolicy"] = "RequireDualStack".into();
    svc["spec"]["ipFamilies"] = serde_json::json!(["IPv4", "IPv6"]);
    cl.create(vec![
        pool("192.0.2.200-192.0.2.201,2001:db8:1::200-2001:db8:1::201"),
        svc,
    ]);
    let mut servers = Vec::new();
    let mut daemons = std::collections::BTreeMap::new();
    for n in ["node1", "node2"] {
        // `[::]` takes IPv4 too (v4-mapped): one listener serves both families.
        servers.push(testbed::TcpServer::start(
            &bed.host(n).ns,
            "[::]:80".parse().unwrap(),
            &format!("{n}\n"),
        ));
        daemons.insert(n, cl.daemon(n, "", "  services: true\n"));
    }
    let server = cl.server();
    let ips = poll(Duration::from_secs(15), || {
        let ingress = server.objects("services")[0]["status"]["loadBalancer"]["ingress"].clone();
        let ips: Vec<String> = ingress
            .as_array()?
            .iter()
            .filter_map(|i| i["ip"].as_str().map(str::to_string))
            .collect();
        (ips.len() == 2).then_some(ips)
    })
    .unwrap_or_else(|| {
        panic!(
            "both addresses in the status:\n{:?}\n{}",
            server.objects("services")[0]["status"],
            daemons["node1"].logs()
        )
    });
    assert_eq!(
        ips,
        vec!["192.0.2.200", "2001:db8:1::200"],
        "one per family, lowest first"
    );
    let (v4, v6) = (ips[0].clone(), ips[1].clone());
    let holder = poll(Duration::from_secs(10), || {
        server.objects("services")[0]["metadata"]["annotations"]["vip.dev/holder"]
            .as_str()
            .map(str::to_string)
    })
    .expect("holder annotated");
    let other = if holder == "node1" { "node2" } else { "node1" };
    let client = bed.host("client");
    // The holder answers both families and serves both (local mode: its own stack).
    let mac = poll(Duration::from_secs(10), || testbed::arping(client, &v4)).expect("ARP");
    assert_eq!(mac, bed.host(&holder).mac);
    assert_eq!(
        testbed::ndisc6(client, &v6, Duration::from_millis(500)),
        Some(parse_mac(&bed.host(&holder).mac)),
        "NDP answered by the holder"
    );
    let v6_addr: SocketAddr = format!("[{v6}]:80").parse().unwrap();
    assert_eq!(
        testbed::tcp_request(&client.ns, v6_addr).unwrap(),
        format!("{holder}\n")
    );
    let m = common::metrics_of(bed, &holder);
    assert!(
        m.contains(&format!("vip_vip_owner{{vip=\"{v6}\"}} 1")),
        "{m}"
    );
    let neigh6_mac = |ip: &str| testbed::neighbour6(client, ip).and_then(|n| n.lladdr);
    assert_eq!(neigh6_mac(&v6), Some(parse_mac(&bed.host(&holder).mac)));

    // The holder stops: the other node takes over, and its unsolicited NA moves the
    // client's cached entry (no new solicitation needed: the entry is still fresh).
    let mut old = daemons.remove(holder.as_str()).unwrap();
    assert!(old.stop().success(), "{}", old.logs());
    let moved = poll(Duration::from_secs(10), || {
        (neigh6_mac(&v6) == Some(parse_mac(&bed.host(other).mac))).then_some(())
    });
    assert!(
        moved.is_some(),
        "client's entry for {v6} still {:?}:\n{}",
        neigh6_mac(&v6),
        daemons[other].logs()
    );
    assert_eq!(
        testbed::tcp_request(&client.ns, v6_addr).unwrap(),
        format!("{other}\n")
    );
    let m = common::metrics_of(bed, other);
    assert!(common::metric(&m, "vip_na_sent_total") >= 1, "{m}");
    for (_, mut d) in daemons {
        assert!(d.stop().success(), "{}", d.logs());
    }
    drop(servers);
    cl.remove_dir();
}
