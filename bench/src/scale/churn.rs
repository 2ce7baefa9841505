//! Changes with N present, one after another: Service creates (→ status written, → first
//! GARP) and, in dsr, endpoint changes (→ the holder's service entry flipped to a table that
//! holds the new backend). Both phases stop early after 5 misses in a row or their time
//! bound.
use std::{
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::maps::{HashMap as BpfHash, MapData};
use vip_common::{ServiceKey, ServiceValue};

use super::{
    case::{Bounds, Case},
    cluster::{endpoint_addr, service, service_name, slice, slice_for, Mode},
    fixture::Cluster,
    node::{ring_holds, Profile},
    probes::change_costs,
    CHANGES, CREATES, ENDPOINTS, PORT,
};
use crate::stopped;

/// Creates, one after another, N present.
pub(super) fn creates(
    cl: &mut Cluster,
    b: &Bounds,
    h: usize,
    mode: Mode,
    case: &mut Case,
) -> Result<()> {
    let n = case.n;
    let phase = Instant::now();
    let mut misses = 0;
    for k in 0..CREATES {
        if phase.elapsed() > b.phase || misses >= 5 || stopped() {
            break;
        }
        let i = n + k;
        let name = service_name(i);
        let server = cl.api.server();
        if mode == Mode::Dsr {
            server.insert(slice_for(i)).map_err(anyhow::Error::msg)?;
        }
        let c0 = Instant::now();
        server
            .insert(service(&name, mode))
            .map_err(anyhow::Error::msg)?;
        let mac = cl.nodes[h].mac;
        let (garps, statuses) = (&mut cl.garps, &cl.statuses);
        let got = testbed::poll(Duration::from_secs(3), || {
            garps.update();
            statuses.rescan(server);
            let (ts, ip) = statuses.get(&name)?;
            garps.first_of(ip, mac).map(|g| (ts, g))
        });
        match got {
            Some((ts, g)) => {
                misses = 0;
                case.create_status.push(Some(ts - c0));
                case.create_garp.push(Some(g - c0));
            }
            None => {
                misses += 1;
                case.create_status
                    .push(statuses.get(&name).map(|(ts, _)| ts - c0));
                case.create_garp.push(None);
            }
        }
    }
    Ok(())
}

/// A service picked for an endpoint change.
enum Candidate {
    /// No status yet: not counted.
    NoAddress,
    /// Not placed whole (a limit can leave backends out of the table): counted as skipped.
    NotPlaced,
    Whole {
        key: ServiceKey,
        before: ServiceValue,
        addrs: Vec<String>,
    },
}

/// Endpoint changes (dsr): one endpoint of one service replaced; timed to the flip of the
/// service's entry on the holder, then checked to point at a table holding the new one.
pub(super) fn changes(
    cl: &Cluster,
    b: &Bounds,
    h: usize,
    mode: Mode,
    case: &mut Case,
) -> Result<()> {
    let n = case.n;
    let holder = &cl.nodes[h];
    let services_map = holder.services().context("holder's SERVICES map")?;
    let log_at = std::fs::metadata(&holder.log).map_or(0, |m| m.len() as usize);
    let perf = Profile::start("change", n, mode, &cl.nodes[h..=h]);
    let phase = Instant::now();
    let mut misses = 0;
    // Services not placed whole are skipped: try up to 20 candidates per sample.
    for k in 0..CHANGES * 20 {
        if case.change_live.len() >= CHANGES
            || phase.elapsed() > b.phase
            || misses >= 5
            || stopped()
        {
            break;
        }
        // Spread over the services present from the start.
        let i = (k * 7919) % n;
        let (key, before, mut addrs) = match candidate(cl, &services_map, &holder.pins, i)? {
            Candidate::NoAddress => continue,
            Candidate::NotPlaced => {
                case.change_skipped += 1;
                continue;
            }
            Candidate::Whole { key, before, addrs } => (key, before, addrs),
        };
        let fresh: Ipv4Addr = endpoint_addr(120, k, 0).parse()?;
        addrs[0] = fresh.to_string();
        let c0 = Instant::now();
        cl.server()
            .update(slice(&service_name(i), &addrs))
            .map_err(anyhow::Error::msg)?;
        let live = await_live(&services_map, &holder.pins, &key, before, fresh, c0)?;
        if live.is_some() {
            misses = 0;
        } else {
            misses += 1;
        }
        case.change_live.push(live);
    }
    if let Some(p) = perf {
        p.stop();
    }
    let log = std::fs::read_to_string(&holder.log).unwrap_or_default();
    case.change_costs = change_costs(log.get(log_at..).unwrap_or(""));
    Ok(())
}

/// Service `i` as a candidate: its key, its entry now and its endpoints' addresses.
fn candidate(
    cl: &Cluster,
    services_map: &BpfHash<MapData, ServiceKey, ServiceValue>,
    pins: &Path,
    i: usize,
) -> Result<Candidate> {
    let Some((_, ip)) = cl.statuses.get(&service_name(i)) else {
        return Ok(Candidate::NoAddress);
    };
    let key = ServiceKey {
        addr_be: ip.octets(),
        port_be: PORT.to_be_bytes(),
        proto: vip_common::PROTO_TCP,
        _pad: 0,
    };
    let Ok(before) = services_map.get(&key, 0) else {
        return Ok(Candidate::NotPlaced);
    };
    let addrs: Vec<String> = (0..ENDPOINTS).map(|j| endpoint_addr(100, i, j)).collect();
    // Only services placed whole (a limit can leave backends out of the table).
    if !ring_holds(pins, &before, addrs[1].parse()?)? {
        return Ok(Candidate::NotPlaced);
    }
    Ok(Candidate::Whole { key, before, addrs })
}

/// Live = the entry flipped to a table that holds the new backend (checked on each flip, so
/// a flip to a table without it does not count); None after 2 s.
fn await_live(
    services_map: &BpfHash<MapData, ServiceKey, ServiceValue>,
    pins: &Path,
    key: &ServiceKey,
    mut before: ServiceValue,
    fresh: Ipv4Addr,
    c0: Instant,
) -> Result<Option<Duration>> {
    let mut live = None;
    while c0.elapsed() < Duration::from_secs(2) && live.is_none() {
        if let Ok(v) = services_map.get(key, 0) {
            if v != before {
                let t = c0.elapsed();
                if ring_holds(pins, &v, fresh)? {
                    live = Some(t);
                }
                before = v;
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(live)
}
