//! The cluster a case runs on: the bed (client, two nodes, the API server's host), the fake
//! API server populated with N Services before anything starts, the observers of what the
//! daemons write (statuses, gratuitous ARPs) and the two `vip run` daemons. Apart from the
//! phases so that each phase reads as what it measures, not how the cluster was wired.
use std::{
    collections::HashMap,
    fs::File,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use fake_apiserver::{ApiThread, FakeApiServer};
use serde_json::json;
use testbed::{parse_mac, Bed, Capture, Proc};

use super::{
    case::Case,
    cluster::{config, service, service_name, slice_for, Mode, Settings},
    node::Node,
    observe::{Garps, Statuses},
    NODES, PIN_DIR, POOL,
};
use crate::{die_with_parent, PREFIX};

/// Fields drop in this order on an error: daemons first, the bed last.
pub(super) struct Cluster {
    pub(super) nodes: Vec<Node>,
    pub(super) garps: Garps,
    pub(super) statuses: Statuses,
    pub(super) api: ApiThread,
    pub(super) bed: Bed,
    pub(super) dir: PathBuf,
    /// When the daemons were spawned.
    pub(super) t0: Instant,
}

impl Cluster {
    /// The bed and API server, the store populated (timed into `case.setup`), the observers
    /// started, then both daemons spawned at once.
    pub(super) fn start(
        vip_bin: &Path,
        n: usize,
        mode: Mode,
        settings: &Settings,
        case: &mut Case,
    ) -> Result<Cluster> {
        let prefix = format!("{PREFIX}sc");
        let bed = Bed::new(
            &prefix,
            &[
                ("client", "192.0.2.10/24"),
                ("node1", "192.0.2.11/24"),
                ("node2", "192.0.2.12/24"),
                ("api", "192.0.2.2/24"),
            ],
        );
        let api_ns = &bed.host("api").ns;
        let (api, url) = ApiThread::start(format!("{}:0", bed.host("api").addr).parse()?, |job| {
            api_ns.spawn(job)
        })?;
        let server = api.server();
        let dir = std::env::temp_dir().join("vip-bench-scale");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;

        case.setup = populate(server, n, mode)?;
        eprintln!(
            "  {n} {} services + slices inserted in {:.2} s",
            mode.name(),
            case.setup.as_secs_f64()
        );

        let statuses = Statuses::start(server);
        let garps = Garps {
            cap: Capture::start(bed.host("client"), 0x0806),
            read: 0,
            first: HashMap::new(),
        };
        let t0 = Instant::now();
        let nodes = spawn_nodes(&bed, &dir, &url, settings, vip_bin)?;
        Ok(Cluster {
            nodes,
            garps,
            statuses,
            api,
            bed,
            dir,
            t0,
        })
    }

    pub(super) fn server(&self) -> &FakeApiServer {
        self.api.server()
    }

    /// One note per daemon whose log has warnings or errors: how many, and the first.
    pub(super) fn log_notes(&self, mode: Mode, n: usize) -> Vec<String> {
        let mut notes = Vec::new();
        for nd in self.nodes.iter() {
            let log = std::fs::read_to_string(&nd.log).unwrap_or_default();
            let warn = log.lines().filter(|l| l.contains("WARN")).count();
            let err = log.lines().filter(|l| l.contains("ERROR")).count();
            if warn + err > 0 {
                let first = log
                    .lines()
                    .find(|l| l.contains("ERROR") || l.contains("WARN"))
                    .unwrap_or("");
                notes.push(format!(
                    "{} {} N={n}: {warn} warnings, {err} errors in the log; first: `{}`",
                    mode.name(),
                    nd.token,
                    first
                        .chars()
                        .take(300)
                        .collect::<String>()
                        .replace('|', "/")
                ));
            }
        }
        notes
    }

    /// Daemons stopped, then the observers, the server and the bed, then the work and pin
    /// directories removed (an error on the way leaves those to the bench's own cleanup).
    pub(super) fn finish(self) {
        let Cluster {
            nodes,
            garps,
            statuses,
            api,
            bed,
            dir,
            ..
        } = self;
        drop(nodes);
        drop(statuses);
        drop(api);
        drop(bed);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(PIN_DIR);
        drop(garps);
    }
}

/// Setup: the pool, N Services and their EndpointSlices, straight into the store; how long
/// it took.
fn populate(server: &FakeApiServer, n: usize, mode: Mode) -> Result<Duration> {
    let t = Instant::now();
    server
        .insert(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kubevip", "namespace": "kube-system"},
            "data": {"range-global": POOL}
        }))
        .map_err(anyhow::Error::msg)?;
    for i in 0..n {
        server.insert(slice_for(i)).map_err(anyhow::Error::msg)?;
        server
            .insert(service(&service_name(i), mode))
            .map_err(anyhow::Error::msg)?;
    }
    Ok(t.elapsed())
}

fn spawn_nodes(
    bed: &Bed,
    dir: &Path,
    url: &str,
    settings: &Settings,
    vip_bin: &Path,
) -> Result<Vec<Node>> {
    let mut nodes = Vec::new();
    for (k, name) in NODES.iter().enumerate() {
        let cfg = config(dir, name, url, settings)?;
        let log = dir.join(format!("{name}.log"));
        let mut cmd = bed.host(name).ns.command(vip_bin);
        cmd.arg("run")
            .arg("--config")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::from(File::create(&log)?));
        die_with_parent(&mut cmd);
        nodes.push(Node {
            proc: Proc {
                child: cmd
                    .spawn()
                    .with_context(|| format!("starting {}", vip_bin.display()))?,
            },
            log,
            pins: PathBuf::from(format!("{PIN_DIR}/{name}")),
            token: NODES[k],
            mac: parse_mac(&bed.host(name).mac),
        });
    }
    Ok(nodes)
}
