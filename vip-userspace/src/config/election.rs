//! `election:` resolved: the shared Lease (with kube-vip's environment variables), Raft
//! (members, timing, priority, keys).
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::paths;

use super::*;

/// kube-vip's names are accepted from the environment for what the file leaves unset:
/// `vip_leasename`, `vip_leaseduration`/`vip_renewdeadline`/`vip_retryperiod` (seconds).
/// Flags (and kube-vip's `vip_leaderelection`) over the file's `election:` section.
pub(super) fn merge_election(file: Option<ElectionFile>, ov: &Overrides) -> Option<ElectionFile> {
    let kube_vip = env_nonempty("vip_leaderelection")
        .filter(|v| v == "true")
        .map(|_| "lease".to_string());
    let mode = ov
        .election
        .clone()
        .or_else(|| file.as_ref().and_then(|f| f.mode.clone()))
        .or(kube_vip);
    if mode.is_none() && file.is_none() {
        return None;
    }
    let mut f = file.unwrap_or_default();
    f.mode = mode;
    f.kubeconfig = ov.kubeconfig.clone().or(f.kubeconfig);
    f.lease_name = ov.lease_name.clone().or(f.lease_name);
    f.namespace = ov.lease_namespace.clone().or(f.namespace);
    f.identity = ov.identity.clone().or(f.identity);
    f.services = ov.services.or(f.services);
    f.readyz_gate = ov.readyz_gate.or(f.readyz_gate);
    f.service_election = ov
        .service_election
        .clone()
        .or(f.service_election)
        .or_else(|| {
            env_nonempty("svc_election")
                .filter(|v| v == "true")
                .map(|_| "per-vip".to_string())
        });
    Some(f)
}

pub(super) fn resolve_election(f: Option<ElectionFile>) -> Result<Election, ConfigError> {
    let Some(f) = f else {
        return Ok(Election::Single);
    };
    let default_mode = if f.raft.is_some() { "raft" } else { "lease" };
    match f.mode.as_deref().unwrap_or(default_mode) {
        "single" => return Ok(Election::Single),
        "lease" => {}
        "raft" => return resolve_raft(f.raft).map(Election::Raft),
        other => {
            return Err(ConfigError::new(
                "election.mode",
                format!("`{other}` is not one of single, lease, raft"),
            ))
        }
    }
    let secs = |k: &str| env_nonempty(k).and_then(|v| kube_vip_secs_to_ms(&v));
    let identity = f
        .identity
        .or_else(|| env_nonempty("NODE_NAME"))
        .or_else(|| env_nonempty("vip_nodename"))
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            ConfigError::new("election.identity", "no identity: set it, or NODE_NAME")
        })?;
    let mut lease = crate::election::lease::LeaseConfig::new(
        f.namespace.as_deref().unwrap_or("kube-system"),
        &f.lease_name
            .or_else(|| env_nonempty("vip_leasename"))
            .unwrap_or_else(|| "plndr-cp-lock".to_string()),
        &identity,
    );
    if let Some(ms) = f.lease_duration_ms.or_else(|| secs("vip_leaseduration")) {
        lease.lease_duration = Duration::from_millis(ms);
    }
    if let Some(ms) = f.renew_deadline_ms.or_else(|| secs("vip_renewdeadline")) {
        lease.renew_deadline = Duration::from_millis(ms);
    }
    if let Some(ms) = f.retry_period_ms.or_else(|| secs("vip_retryperiod")) {
        lease.retry_period = Duration::from_millis(ms);
        lease.api_timeout = lease.api_timeout.min(lease.renew_deadline / 3);
    }
    lease.api_timeout = lease.api_timeout.min(lease.renew_deadline / 3);
    lease.readyz_gate = f.readyz_gate.unwrap_or(false);
    let service_election = match f.service_election.as_deref().unwrap_or("shared") {
        "shared" => ServiceElection::Shared,
        "per-vip" => ServiceElection::PerVip,
        "rendezvous" => ServiceElection::Rendezvous,
        other => {
            return Err(ConfigError::new(
                "election.service_election",
                format!("`{other}` is not one of shared, per-vip, rendezvous"),
            ))
        }
    };
    lease.validate().map_err(|e| match e {
        crate::election::lease::ElectionError::Config { field, message } => {
            ConfigError::new(format!("election.{field}"), message)
        }
        other => ConfigError::new("election", other.to_string()),
    })?;
    Ok(Election::Lease {
        kubeconfig: f.kubeconfig,
        lease,
        services: f.services.unwrap_or(false),
        service_election,
    })
}

/// kube-vip's durations are whole seconds; like a value that is not a number, one too
/// large to be counted in milliseconds is ignored (the default stays).
pub(super) fn kube_vip_secs_to_ms(v: &str) -> Option<u64> {
    v.parse::<u64>().ok()?.checked_mul(1000)
}

pub(super) fn resolve_raft(
    f: Option<RaftFile>,
) -> Result<crate::election::raft::RaftConfig, ConfigError> {
    use crate::election::raft::{self, RaftConfig, RaftError};
    let f = f.ok_or_else(|| {
        ConfigError::new(
            "election.raft",
            "required with mode: raft (id and peers at least)",
        )
    })?;
    let id = f.id.ok_or_else(|| {
        ConfigError::new("election.raft.id", "required (this node's key in peers)")
    })?;
    let auth = resolve_raft_auth(&f)?;
    let priority = raft_priority(&f)?;
    let raw = f.peers.unwrap_or_default();
    let mut peers = std::collections::BTreeMap::new();
    for (k, v) in &raw {
        let addr = v.parse::<SocketAddr>().map_err(|e| {
            ConfigError::new(
                format!("election.raft.peers.{k}"),
                format!("`{v}`: {e} (want ip:port)"),
            )
        })?;
        peers.insert(*k, addr);
    }
    let listen = match &f.listen {
        Some(l) => l.parse::<SocketAddr>().map_err(|e| {
            ConfigError::new("election.raft.listen", format!("`{l}`: {e} (want ip:port)"))
        })?,
        None => {
            let port = peers.get(&id).map_or(0, |a| a.port());
            SocketAddr::from(([0, 0, 0, 0], port))
        }
    };
    let ms = Duration::from_millis;
    let cfg = RaftConfig {
        heartbeat: f.heartbeat_ms.map_or(raft::DEFAULT_HEARTBEAT, ms),
        election_timeout: (
            f.election_timeout_min_ms
                .map_or(raft::DEFAULT_ELECTION_TIMEOUT.0, ms),
            f.election_timeout_max_ms
                .map_or(raft::DEFAULT_ELECTION_TIMEOUT.1, ms),
        ),
        lease: f.lease_ms.map_or(raft::DEFAULT_LEASE, ms),
        priority,
        ..RaftConfig::new(
            id,
            listen,
            peers,
            f.state_dir
                .unwrap_or_else(|| PathBuf::from(paths::DEFAULT_RAFT_STATE_DIR)),
            auth,
        )
    };
    cfg.validate().map_err(|e| match e {
        RaftError::Config { field, reason } => ConfigError::new(field, reason),
        other => ConfigError::new("election.raft", other.to_string()),
    })?;
    Ok(cfg)
}

/// `realtime_priority` and `nice`, in range (see `election::raft::sched`).
pub(super) fn raft_priority(
    f: &RaftFile,
) -> Result<crate::election::raft::sched::Priority, ConfigError> {
    use crate::election::raft::sched::{Priority, DEFAULT_NICE, DEFAULT_REALTIME_PRIORITY};
    let realtime = match f.realtime_priority {
        None => DEFAULT_REALTIME_PRIORITY,
        Some(p) => u8::try_from(p).ok().filter(|p| *p <= 99).ok_or_else(|| {
            ConfigError::new(
                "election.raft.realtime_priority",
                format!("{p} is not a SCHED_FIFO priority (1..99, 0: off)"),
            )
        })?,
    };
    let nice = match f.nice {
        None => DEFAULT_NICE,
        Some(n) => i8::try_from(n)
            .ok()
            .filter(|n| (-20..=19).contains(n))
            .ok_or_else(|| {
                ConfigError::new(
                    "election.raft.nice",
                    format!("{n} is not a nice value (-20..19; 0: leave it)"),
                )
            })?,
    };
    Ok(Priority { realtime, nice })
}

/// `key_file` (+ `previous_key_file`), or an explicit `insecure: true`; never neither.
pub(super) fn resolve_raft_auth(
    f: &RaftFile,
) -> Result<crate::election::raft::RaftAuth, ConfigError> {
    use crate::election::raft::{RaftAuth, RaftKey};
    let load = |field: &str, path: &Path| {
        RaftKey::from_file(path).map_err(|e| {
            let cause = std::error::Error::source(&e)
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            ConfigError::new(field, format!("{e}{cause}"))
        })
    };
    match (&f.key_file, f.insecure.unwrap_or(false)) {
        (Some(_), true) => Err(ConfigError::new(
            "election.raft.insecure",
            "true together with key_file: choose one",
        )),
        (None, true) => {
            if f.previous_key_file.is_some() {
                return Err(ConfigError::new(
                    "election.raft.previous_key_file",
                    "given without key_file",
                ));
            }
            Ok(RaftAuth::Insecure)
        }
        (None, false) => Err(ConfigError::new(
            "election.raft.key_file",
            "required: a file with the cluster's shared key (base64 of at least 32 random bytes: `vip raft-key > FILE`), \
             or `insecure: true` to run unauthenticated on a network nobody else can send to",
        )),
        (Some(path), false) => Ok(RaftAuth::Keys {
            primary: load("election.raft.key_file", path)?,
            previous: f
                .previous_key_file
                .as_deref()
                .map(|p| load("election.raft.previous_key_file", p))
                .transpose()?,
        }),
    }
}
