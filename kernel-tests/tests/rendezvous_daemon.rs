//! `service_election: rendezvous` with real daemons (XDP) on a namespace bed, against the
//! in-process API server in the bed's `api` host. The electors alone, without daemons or
//! root, are in vip-userspace/tests/rendezvous_election.rs.
//!
//! Root required; run with `--test-threads=1`.
mod common;

use std::time::{Duration, Instant};

use fake_apiserver::FakeApiServer;

fn lease_holder(server: &FakeApiServer, name: &str) -> Option<String> {
    server
        .objects("leases")
        .into_iter()
        .find(|l| l["metadata"]["name"] == name)?["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_string)
}

fn service_field(
    server: &FakeApiServer,
    name: &str,
    f: fn(&serde_json::Value) -> &serde_json::Value,
) -> Option<String> {
    let svc = server
        .objects("services")
        .into_iter()
        .find(|s| s["metadata"]["name"] == name)?;
    f(&svc).as_str().map(str::to_string)
}

/// Two real daemons (XDP) with `service_election: rendezvous`: two Services sharing an
/// address (sharing key, disjoint ports) and two on their own. Each address has one owner —
/// the holder of its claim, named by every Service on it, the only node answering ARP — and
/// the shared one is never split. The owner of the shared address stops: the other node
/// takes it over at once (claim released), both Services move together.
#[test]
fn daemons_place_service_vips_and_never_split_a_shared_address() {
    use common::{kubeconfig, start_api, Daemon};
    testbed::require_root_and_bpf();
    let bed = testbed::Bed::new(
        "vrdv",
        &[
            ("client", "192.0.2.10/24"),
            ("node1", "192.0.2.11/24"),
            ("node2", "192.0.2.12/24"),
            ("api", "192.0.2.2/24"),
        ],
    );
    let (api, url) = start_api(bed.host("api"));
    let server = api.server.as_ref().unwrap();
    let dir = std::env::temp_dir().join(format!("{}-rdv", bed.prefix));
    std::fs::create_dir_all(&dir).unwrap();
    let daemon = |node: &str| {
        let kc = kubeconfig(&dir, &url, node);
        let cfg = dir.join(format!("{node}.yaml"));
        Daemon::start_with_config(&bed, node, &cfg, &format!(
                "interface: eth0\nmode: xdp\npin_dir: /sys/fs/bpf/vip-test-{}-{node}\nelection:\n  kubeconfig: {}\n  identity: {node}\n  services: true\n  service_election: rendezvous\n  lease_duration_ms: 2000\n  renew_deadline_ms: 1000\n  retry_period_ms: 100\n",
                bed.prefix,
                kc.display()
            ))
    };
    let mut daemons = vec![daemon("node1"), daemon("node2")];
    let logs = |d: &[Daemon]| d.iter().map(Daemon::logs).collect::<Vec<_>>().join("\n");
    // Both nodes live first, then the Services (as when Services are created on a running
    // cluster).
    let live = testbed::poll(Duration::from_secs(10), || {
        ["node1", "node2"]
            .iter()
            .all(|n| lease_holder(server, &format!("vip-node-{n}")).as_deref() == Some(n))
            .then_some(())
    });
    assert!(live.is_some(), "node leases held:\n{}", logs(&daemons));
    std::thread::sleep(Duration::from_millis(300));
    let svc = |name: &str, port: u16, key: Option<&str>| {
        let mut s = serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Cluster",
                     "ports": [{"name": "http", "port": port, "protocol": "TCP"}]}
        });
        if let Some(k) = key {
            s["metadata"]["annotations"] = serde_json::json!({"vip.dev/sharing-key": k});
        }
        s
    };
    for o in [
        serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kubevip", "namespace": "kube-system"},
            "data": {"range-global": "192.0.2.200-192.0.2.203"}
        }),
        svc("a", 80, Some("k")),
        svc("b", 81, Some("k")),
        svc("c", 80, None),
        svc("d", 80, None),
    ] {
        server.insert(o).unwrap();
    }
    let names = ["a", "b", "c", "d"];
    let ip_of = |n: &str| {
        service_field(server, n, |s| {
            &s["status"]["loadBalancer"]["ingress"][0]["ip"]
        })
    };
    let holder_of = |n: &str| {
        service_field(server, n, |s| {
            &s["metadata"]["annotations"]["vip.dev/holder"]
        })
    };
    let settled = testbed::poll(Duration::from_secs(20), || {
        let ips: Vec<String> = names.iter().map(|n| ip_of(n)).collect::<Option<_>>()?;
        let holders: Vec<String> = names.iter().map(|n| holder_of(n)).collect::<Option<_>>()?;
        Some((ips, holders))
    });
    let (ips, holders) =
        settled.unwrap_or_else(|| panic!("addresses and holders written:\n{}", logs(&daemons)));
    assert_eq!(ips[0], ips[1], "a and b share an address");
    assert_eq!(holders[0], holders[1], "the shared address is never split");
    let client = bed.host("client");
    for (ip, holder) in ips.iter().zip(&holders) {
        let claim = format!("vip-claim-{}", ip.replace('.', "-"));
        assert_eq!(
            lease_holder(server, &claim).as_ref(),
            Some(holder),
            "{claim}"
        );
        let mac = testbed::poll(Duration::from_secs(10), || testbed::arping(client, ip))
            .unwrap_or_else(|| panic!("ARP for {ip}:\n{}", logs(&daemons)));
        assert_eq!(
            mac,
            bed.host(holder).mac,
            "{ip} answered by its claim's holder {holder}"
        );
    }
    // The shared address's owner stops: the other node takes it (and both Services) at once.
    let owner = ["node1", "node2"]
        .iter()
        .position(|n| *n == holders[0])
        .unwrap();
    let other = ["node1", "node2"][1 - owner];
    let t0 = Instant::now();
    assert!(daemons[owner].stop().success(), "{}", daemons[owner].logs());
    let moved = testbed::poll(Duration::from_secs(5), || {
        testbed::arping(client, &ips[0]).filter(|m| *m == bed.host(other).mac)
    });
    assert!(
        moved.is_some(),
        "{other} answers for the shared address:\n{}",
        logs(&daemons)
    );
    println!(
        "shared address answered by {other} {:?} after the owner's stop began",
        t0.elapsed()
    );
    let both = testbed::poll(Duration::from_secs(5), || {
        (holder_of("a").as_deref() == Some(other) && holder_of("b").as_deref() == Some(other))
            .then_some(())
    });
    assert!(
        both.is_some(),
        "both Services name {other}:\n{}",
        logs(&daemons)
    );
    for mut d in daemons {
        let _ = d.stop();
    }
    drop(api);
    let _ = std::fs::remove_dir_all(&dir);
}
