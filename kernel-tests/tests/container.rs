//! The DaemonSet as shipped: the image `cargo xtask image` builds, run by a real OCI runtime
//! (podman with runc) with the container's security context, volumes, env and args read from
//! `vip manifest daemonset`, in the node namespace of a bed standing in for the host network.
//!
//! ```text
//!  ns ct?-client 192.0.2.10 ──┐              ┌── ns ct?-dsr1 192.0.2.21    (VIP on lo)
//!  ns ct?-node   192.0.2.11 ──┤  bridge br0  ├── ns ct?-nat1 198.51.100.21 (via the node)
//!   ├ container: /vip <DaemonSet args> --kubeconfig … --config …   (podman --network ns:)
//!   └ fake API server on 127.0.0.1 (the Lease)
//! ```
//!
//! What the kubelet would add, the test adds, and nothing else: the node's name and address
//! for the downward API, the hostPath (the test's own directory on bpffs instead of all of
//! /sys/fs/bpf), API access (a kubeconfig for the fake API server instead of the service
//! account token), and a config file with a `dsr` and a `nat` service.
//! Run once with the seccomp profile a default kubelet gives a manifest that names none
//! (Unconfined), once with the runtime's default profile (RuntimeDefault).
mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use common::{
    answered_probe, assert_answered_by_xdp, attachment, kubeconfig, last_answer, lb_bed_with,
    longest_silence, metric, metrics_at, replies, start_api_in, wait_ready, Api, VIP,
};
use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{Container, PodSpec, SecurityContext},
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use testbed::{
    addrs, has_xdp, poll, require_root_and_bpf, sh, tcp_request, Bed, LongConn, TcpServer,
};
use vip_userspace::dataplane::maps::StatsReader;

/// `dead_man_ms`'s default (the manifest sets none): how soon ARP stops after a crash.
const DEAD_MAN_MS: u64 = 2000;
/// Where the container sees its config and kubeconfig.
const CONFIG: &str = "/etc/vip/vip.yaml";
const KUBECONFIG: &str = "/etc/vip/kubeconfig";
/// The kubelet's default when a pod names no seccomp profile (`--seccomp-default` off).
const KUBELET_SECCOMP_DEFAULT: &str = "Unconfined";

/// `vip manifest daemonset` for the bed's uplink and VIP, parsed.
fn daemonset() -> DaemonSet {
    let out = sh(Command::new(testkit::daemon::vip_bin()).args([
        "manifest",
        "daemonset",
        "--interface",
        "eth0",
        "--vip",
        VIP,
    ]));
    serde_saphyr::from_str(&String::from_utf8_lossy(&out.stdout))
        .unwrap_or_else(|e| panic!("the generated DaemonSet does not parse: {e}"))
}

/// podman with a store of its own (vfs) in the test's scratch folder: the test sees only its
/// own image and containers, and removes them with the store.
struct Podman {
    dir: PathBuf,
}

impl Podman {
    fn new(dir: PathBuf) -> Podman {
        let p = Podman { dir };
        p.clear();
        p
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .args(["--storage-driver", "vfs"]);
        c
    }

    fn run(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&sh(self.cmd().args(args)).stdout)
            .trim()
            .to_string()
    }

    /// Containers (killed), images and the store, also what an interrupted run left:
    /// `system reset` unmounts what the containers had mounted before it deletes.
    fn clear(&self) {
        if self.dir.exists() {
            let _ = self.cmd().args(["system", "reset", "--force"]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        self.clear();
    }
}

/// A container started with `podman run -d`; removed with the store.
struct Ctr<'a> {
    podman: &'a Podman,
    name: String,
}

impl Ctr<'_> {
    /// What the daemon wrote (podman keeps the container's stdout and stderr).
    fn logs(&self) -> String {
        let out = self
            .podman
            .cmd()
            .args(["logs", &self.name])
            .output()
            .unwrap_or_else(|e| panic!("podman logs: {e}"));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// The exit code once the container stopped; None while it runs.
    fn exited(&self) -> Option<i32> {
        let s = self.podman.run(&[
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}}",
            &self.name,
        ]);
        let (status, code) = s.split_once(' ')?;
        (status != "running" && status != "created" && status != "configured")
            .then(|| code.parse().unwrap_or(-1))
    }

    fn kill(&self, signal: &str) {
        self.podman.run(&["kill", "--signal", signal, &self.name]);
    }

    fn wait_exit(&self) -> i32 {
        poll(Duration::from_secs(10), || self.exited())
            .unwrap_or_else(|| panic!("{} still running 10 s later:\n{}", self.name, self.logs()))
    }
}

/// The test's substitutes for what the kubelet provides.
struct Node<'a> {
    /// The node's network namespace (hostNetwork).
    netns: &'a Path,
    /// The node name and address the downward API gives (the pod's IP too: host network).
    name: &'a str,
    ip: &'a str,
    /// hostPath on the node → the path the test uses for it.
    host_paths: &'a [(&'a str, &'a Path)],
    /// Extra bind mounts (host, container) and arguments: API access and the config.
    mounts: &'a [(&'a Path, &'a str)],
    args: &'a [&'a str],
    /// The seccomp profile type a pod without one gets.
    seccomp_default: &'a str,
}

/// The `podman run` options, image and arguments for the DaemonSet's container, and the
/// address its readiness probe asks: every field the pod spec sets is turned into what the
/// kubelet would ask the runtime for, and a field this does not know fails the test rather
/// than being left out.
fn podman_run_args(spec: &PodSpec, node: &Node) -> (Vec<String>, SocketAddr) {
    assert_eq!(
        spec.host_network,
        Some(true),
        "the DaemonSet uses the host network"
    );
    assert_eq!(spec.containers.len(), 1, "one container");
    assert!(spec.init_containers.is_none(), "no init containers");
    let c: &Container = &spec.containers[0];
    assert_eq!(
        c.image.as_deref(),
        Some(vip_common::image::NAME),
        "the manifest names the image `cargo xtask image` builds"
    );
    assert!(c.command.is_none(), "the image's entrypoint (/vip) runs");
    // The runtime's default rlimits exceed this sandbox's hard limits.
    let mut a: Vec<String> = [
        "--pull",
        "never",
        "--runtime",
        "runc",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ]
    .map(String::from)
    .to_vec();
    a.push(format!("--network=ns:{}", node.netns.display()));

    let mut sc: SecurityContext = c.security_context.clone().unwrap_or_default();
    if sc.privileged.take() == Some(true) {
        a.push("--privileged".into());
    }
    if let Some(caps) = sc.capabilities.take() {
        for d in caps.drop.unwrap_or_default() {
            a.push(format!("--cap-drop={d}"));
        }
        for add in caps.add.unwrap_or_default() {
            a.push(format!("--cap-add={add}"));
        }
    }
    let pod_seccomp = spec
        .security_context
        .as_ref()
        .and_then(|p| p.seccomp_profile.clone());
    let seccomp = sc
        .seccomp_profile
        .take()
        .or(pod_seccomp)
        .map_or(node.seccomp_default.to_string(), |p| p.type_);
    match seccomp.as_str() {
        "Unconfined" => a.push("--security-opt=seccomp=unconfined".into()),
        "RuntimeDefault" => {} // podman's own default profile
        other => panic!("seccomp profile {other} not handled by the test"),
    }
    assert_eq!(
        sc,
        SecurityContext::default(),
        "securityContext fields the test does not apply"
    );

    for m in c.volume_mounts.iter().flatten() {
        let v = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == m.name)
            .unwrap_or_else(|| panic!("volumeMount {} has no volume", m.name));
        let hp = v
            .host_path
            .as_ref()
            .unwrap_or_else(|| panic!("volume {}: only hostPath is handled", v.name));
        let (_, here) = node
            .host_paths
            .iter()
            .find(|(p, _)| *p == hp.path)
            .unwrap_or_else(|| panic!("hostPath {} has no stand-in", hp.path));
        if hp.type_.as_deref() == Some("DirectoryOrCreate") {
            std::fs::create_dir_all(here).unwrap();
        }
        let ro = if m.read_only == Some(true) { ":ro" } else { "" };
        a.push(format!("--volume={}:{}{ro}", here.display(), m.mount_path));
    }
    for (host, inside) in node.mounts {
        a.push(format!("--volume={}:{inside}:ro", host.display()));
    }
    let mut env: Vec<(String, String)> = Vec::new();
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            // `$(NAME)` names a variable defined before it, as the kubelet expands it.
            (Some(v), None) => env.iter().fold(v.clone(), |v, (name, value)| {
                v.replace(&format!("$({name})"), value)
            }),
            (None, Some(from)) => match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                Some("spec.nodeName") => node.name.to_string(),
                Some("status.hostIP" | "status.podIP") => node.ip.to_string(),
                _ => panic!("env {}: {from:?} not handled by the test", e.name),
            },
            other => panic!("env {}: {other:?}", e.name),
        };
        a.push(format!("--env={}={value}", e.name));
        env.push((e.name.clone(), value));
    }
    // The kubelet probes the pod's IP (the node's, with the host network) unless the probe
    // names a host; the test polls the same address.
    let probe = c.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref());
    let probe = probe.expect("an HTTP readiness probe");
    assert_eq!(probe.path.as_deref(), Some("/readyz"));
    let port = match &probe.port {
        IntOrString::Int(p) => *p,
        IntOrString::String(name) => {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("probe port {name} is not a container port"))
                .container_port
        }
    };
    let host = probe.host.as_deref().unwrap_or(node.ip);
    let ready_at: SocketAddr = format!("{host}:{port}").parse().unwrap();
    a.push(c.image.clone().unwrap_or_default());
    a.extend(c.args.iter().flatten().cloned());
    a.extend(node.args.iter().map(|s| s.to_string()));
    (a, ready_at)
}

/// The bed, the API server, the image loaded and the arguments of the DaemonSet's container.
struct Fixture {
    // Dropped after Fixture::drop (containers, image, pins, scratch), in this order.
    podman: Podman,
    _api: Api,
    bed: Bed,
    _tcp: Vec<TcpServer>,
    /// The stand-in for the host's /sys/fs/bpf; the daemon pins under `<root>/vip`.
    bpf_root: PathBuf,
    dir: PathBuf,
    run_args: Vec<String>,
    /// Where the readiness probe asks, and the metrics are.
    metrics: SocketAddr,
}

impl Fixture {
    fn new(tag: &str, seccomp_default: &str) -> Fixture {
        require_root_and_bpf();
        let archive = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(vip_common::image::ARCHIVE);
        assert!(
            archive.exists(),
            "{} missing: build the image with `cargo xtask image`",
            archive.display()
        );
        let prefix = format!("ct{tag}");
        let dir = std::env::temp_dir().join(&prefix);
        let podman = Podman::new(dir.join("podman"));
        let loaded = podman.run(&["load", "--quiet", "--input", archive.to_str().unwrap()]);
        assert!(
            loaded.contains(vip_common::image::NAME),
            "the archive is named {}: {loaded}",
            vip_common::image::NAME
        );

        let (bed, tcp) = lb_bed_with(&prefix, &["dsr1"], &["nat1"]);
        let node = bed.host("node");
        // A node as it comes: no forwarding, the kernel's default arp_ignore. The daemon
        // must set both itself.
        node.ns.sysctl("net.ipv4.conf.eth0.forwarding", "0");
        node.ns.sysctl("net.ipv4.conf.eth0.arp_ignore", "0");
        let (api, url) = start_api_in(&node.ns, "127.0.0.1:0".parse().unwrap());
        std::fs::create_dir_all(&dir).unwrap();
        let kc = kubeconfig(&dir, &url, "node");
        let cfg = dir.join("vip.yaml");
        let (dsr, nat) = (&bed.host("dsr1").addr, &bed.host("nat1").addr);
        std::fs::write(
            &cfg,
            format!(
                "services:\n  - {{vip: {VIP}, port: 8080, mode: dsr, backends: [{{addr: {dsr}}}]}}\n  - {{vip: {VIP}, port: 80, mode: nat, backends: [{{addr: {nat}, port: 8080}}]}}\n"
            ),
        )
        .unwrap();
        let bpf_root = PathBuf::from(format!("/sys/fs/bpf/vip-test-{prefix}"));
        let _ = std::fs::remove_dir_all(&bpf_root);

        let ds = daemonset();
        let spec = ds
            .spec
            .and_then(|s| s.template.spec)
            .expect("a pod template");
        let netns = node.ns.path();
        let (run_args, metrics) = podman_run_args(
            &spec,
            &Node {
                netns: &netns,
                name: "node",
                ip: &node.addr,
                host_paths: &[("/sys/fs/bpf", &bpf_root)],
                mounts: &[(&kc, KUBECONFIG), (&cfg, CONFIG)],
                args: &["--kubeconfig", KUBECONFIG, "--config", CONFIG],
                seccomp_default,
            },
        );
        eprintln!("podman {}", run_args.join(" "));
        Fixture {
            podman,
            _api: api,
            bed,
            _tcp: tcp,
            bpf_root,
            dir,
            run_args,
            metrics,
        }
    }

    fn metrics(&self) -> String {
        metrics_at(&self.bed.host("node").ns, self.metrics)
    }

    fn pins(&self) -> PathBuf {
        self.bpf_root.join("vip")
    }

    /// The DaemonSet's container, started and ready.
    fn start(&self, name: &str) -> Ctr<'_> {
        let mut args = vec!["run", "--detach", "--name", name];
        args.extend(self.run_args.iter().map(String::as_str));
        self.podman.run(&args);
        let c = Ctr {
            podman: &self.podman,
            name: name.to_string(),
        };
        wait_ready(
            &self.bed.host("node").ns,
            self.metrics,
            || c.exited().map(|code| format!("exit code {code}")),
            || c.logs(),
        );
        c
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Containers first: the store lives in `dir`, and a running daemon holds the pins.
        self.podman.clear();
        vip_userspace::dataplane::load::remove_pins(&self.pins());
        let _ = std::fs::remove_dir_all(&self.bpf_root);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn scenario(tag: &str, seccomp_default: &str) {
    let fx = Fixture::new(tag, seccomp_default);
    let bed = &fx.bed;
    let client = bed.host("client");
    let node = bed.host("node");
    let t = Instant::now();
    let c1 = fx.start(&format!("ct{tag}-vip-1"));
    eprintln!("container 1 ready in {:?}", t.elapsed());

    // The data plane came up in XDP and answers ARP from there.
    assert!(has_xdp(&node.ns, "eth0"), "XDP attached:\n{}", c1.logs());
    let m = fx.metrics();
    assert!(
        m.contains("vip_dataplane_info{mode=\"xdp-native\",interface=\"eth0\"} 1"),
        "{m}\n{}",
        c1.logs()
    );
    assert_answered_by_xdp(bed, &fx.pins());
    assert!(
        addrs(&node.ns, "lo").contains(&format!("{VIP}/32")),
        "VIP bound on lo"
    );
    // The fence's second layer: with the VIP on lo, only arp_ignore keeps the kernel from
    // answering for it when XDP is not there.
    assert_eq!(
        node.ns.sysctl_value("net.ipv4.conf.eth0.arp_ignore"),
        "1",
        "arp_ignore applied on the uplink:\n{}",
        c1.logs()
    );

    // Both services forward real TCP through the VIP (bpf_fib_lookup needs forwarding on).
    assert_eq!(
        node.ns.sysctl_value("net.ipv4.conf.eth0.forwarding"),
        "1",
        "forwarding enabled on the uplink:\n{}",
        c1.logs()
    );
    for (port, mode, backend) in [(8080, "dsr", "dsr1"), (80, "nat", "nat1")] {
        let vip: SocketAddr = format!("{VIP}:{port}").parse().unwrap();
        let got = tcp_request(&client.ns, vip)
            .unwrap_or_else(|e| panic!("{mode}: TCP to {vip}: {e}\n{}", c1.logs()));
        assert_eq!(got, format!("{backend}\n"), "{mode}: answered by {backend}");
        let flows = metric(
            &fx.metrics(),
            &format!("vip_service_new_flows_total{{service=\"{VIP}:{port}/tcp\",mode=\"{mode}\"}}"),
        );
        assert!(flows >= 1, "{mode}: the flow went through XDP");
    }

    // Hand-over (SIGUSR2, as an upgrade sends): the next container adopts the pinned data
    // plane; ARP stays answered and a nat connection keeps working across the gap.
    let nat_vip: SocketAddr = format!("{VIP}:80").parse().unwrap();
    let mut long = LongConn::open(&client.ns, nat_vip).expect("nat connection through the VIP");
    let (how, link, prog) = attachment(&fx.metrics());
    assert_eq!(how, "fresh");
    let (cap, prober) = answered_probe(client, Duration::from_millis(5));
    let t0 = Instant::now();
    c1.kill("USR2");
    assert_eq!(c1.wait_exit(), 0, "a hand-over exits 0:\n{}", c1.logs());
    assert!(
        has_xdp(&node.ns, "eth0"),
        "XDP stays attached without a daemon"
    );
    let t_start = Instant::now();
    let c2 = fx.start(&format!("ct{tag}-vip-2"));
    let t_ready = Instant::now();
    assert_eq!(
        attachment(&fx.metrics()),
        ("unchanged".to_string(), link, prog),
        "same link, same program:\n{}",
        c2.logs()
    );
    assert!(
        c2.logs()
            .contains("adopted pinned data plane (program unchanged)"),
        "{}",
        c2.logs()
    );
    assert_eq!(long.echo("across").unwrap(), "across", "nat flow kept");
    let silence = longest_silence(&cap, t0, Instant::now());
    eprintln!(
        "hand-over: no daemon for {:?}, container 2 ready {:?} after its start, longest ARP silence {silence:?}",
        t_start - t0,
        t_ready - t_start
    );
    assert!(
        silence < Duration::from_millis(100),
        "ARP answered across the hand-over (probing every 5 ms); longest silence {silence:?}"
    );

    // SIGKILL: silent by the dead-man, the XDP program dropping the requests itself.
    let reader = StatsReader::open(&fx.pins()).expect("pinned counters readable");
    let fenced_before = reader.totals().unwrap().arp_deadman;
    let killed = Instant::now();
    c2.kill("KILL");
    assert_eq!(c2.wait_exit(), 137, "SIGKILL");
    let last = last_answer(&cap, &prober, Duration::from_millis(300), 20);
    let silent_after = last.saturating_duration_since(killed);
    eprintln!(
        "SIGKILL: last ARP answer {silent_after:?} after the kill (dead-man {DEAD_MAN_MS} ms)"
    );
    assert!(
        silent_after <= Duration::from_millis(DEAD_MAN_MS + 150),
        "fenced by the dead-man: last answer {silent_after:?} after the kill"
    );
    let fenced = reader.totals().unwrap().arp_deadman - fenced_before;
    assert!(fenced > 0, "XDP dropped the requests past the dead-man");
    drop(reader);

    // And the kernel does not answer either: the pins removed (what uninstalling does)
    // detach the program, the VIP is still bound on lo, and the client keeps asking.
    assert!(
        addrs(&node.ns, "lo").contains(&format!("{VIP}/32")),
        "the killed daemon left the VIP on lo"
    );
    vip_userspace::dataplane::load::remove_pins(&fx.pins());
    poll(Duration::from_secs(5), || {
        (!has_xdp(&node.ns, "eth0")).then_some(())
    })
    .expect("XDP detached once its link pin is gone");
    let detached = Instant::now();
    poll(Duration::from_secs(5), || {
        (prober.sent_after(detached) >= 100).then_some(())
    })
    .expect("the client keeps asking");
    let asked = prober.sent_after(detached);
    let answered = replies(&cap)
        .into_iter()
        .filter(|(t, _)| *t > detached)
        .count();
    assert_eq!(
        answered, 0,
        "the kernel answered {answered} of {asked} ARP requests for the VIP on lo without XDP (arp_ignore {} on the uplink)",
        node.ns.sysctl_value("net.ipv4.conf.eth0.arp_ignore")
    );
    eprintln!("without XDP: {asked} requests for the VIP on lo, none answered");
}

#[test]
fn daemonset_in_runc_as_a_default_kubelet_runs_it() {
    scenario("u", KUBELET_SECCOMP_DEFAULT);
}

#[test]
fn daemonset_in_runc_with_the_runtime_default_seccomp_profile() {
    scenario("d", "RuntimeDefault");
}
