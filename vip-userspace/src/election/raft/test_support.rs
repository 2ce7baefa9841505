//! Helpers shared by the tests of several files of the election.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use super::{RaftAuth, RaftConfig, RaftKey};

/// Three members on localhost at test timings (20 ms heartbeats), this node 1.
pub(super) fn cfg(dir: &std::path::Path) -> RaftConfig {
    let peers = (1..=3)
        .map(|i| (i, SocketAddr::from(([127, 0, 0, 1], 17000 + i as u16))))
        .collect();
    RaftConfig {
        heartbeat: Duration::from_millis(20),
        election_timeout: (Duration::from_millis(100), Duration::from_millis(200)),
        lease: Duration::from_millis(80),
        ..RaftConfig::new(
            1,
            "127.0.0.1:17001".parse().unwrap(),
            peers,
            dir.to_path_buf(),
            RaftAuth::keyed(RaftKey::from_bytes(&[1; 32])),
        )
    }
}

pub(super) fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vip-raft-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}
