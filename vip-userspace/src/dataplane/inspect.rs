//! A read-only view of the pinned maps, for `vip status` and per-service metrics. Works
//! while the daemon runs and after it stopped with `--keep-pinned`.
use std::{collections::BTreeMap, net::IpAddr, path::Path};

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use vip_common::STAT_STRIPES_MAX;
use vip_common::{
    pin_names, Backend6Value, BackendValue, Config, LbStats, Service6Key, ServiceKey, ServiceValue,
    Stats, Vip6Key, VipKey, VipValue, BACKEND_F_ACTIVE, RING_EMPTY, VIP_F_OWNED,
};

use super::maps::VipRow;
use super::DataplaneError;
use crate::counters::{Counter, PER_BACKEND, PER_SERVICE, PER_VIP, PER_VIP6, TOTALS};

#[derive(Debug, Clone)]
pub struct VipView {
    pub addr: IpAddr,
    pub owned: bool,
    pub ifindex: u32,
    pub stats: VipRow,
}

#[derive(Debug, Clone)]
pub struct BackendView {
    pub id: u32,
    pub addr: IpAddr,
    pub port: u16,
    pub active: bool,
    /// Share of the service's live ring, in slots.
    pub slots: u32,
    pub stats: LbStats,
}

#[derive(Debug, Clone)]
pub struct ServiceView {
    pub vip: IpAddr,
    pub port: u16,
    pub proto: &'static str,
    pub mode: &'static str,
    pub id: u32,
    /// Slots of its live Maglev table (0: none, e.g. `local`).
    pub table: u32,
    pub stats: LbStats,
    pub backends: Vec<BackendView>,
}

impl ServiceView {
    /// `192.0.2.100:80/tcp`, `[2001:db8::100]:80/tcp`.
    pub fn name(&self) -> String {
        format!(
            "{}/{}",
            std::net::SocketAddr::new(self.vip, self.port),
            self.proto
        )
    }
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub config: Config,
    pub totals: Stats,
    pub vips: Vec<VipView>,
    pub services: Vec<ServiceView>,
}

fn open(dir: &Path, name: &str) -> Result<MapData, DataplaneError> {
    Ok(MapData::from_pin(dir.join(name))?)
}

/// Striped counters (`SVC_STATS`, `BACKEND_STATS`): `stripes` copies of `entries` each.
struct Striped {
    map: Array<MapData, LbStats>,
    entries: u32,
    stripes: u32,
}

impl Striped {
    /// `entries`: the size of the map the ids index (SERVICES, BACKENDS).
    fn open(dir: &Path, name: &str, entries: u32) -> Result<Striped, DataplaneError> {
        let map: Array<_, LbStats> = Array::try_from(Map::Array(open(dir, name)?))?;
        let entries = entries.max(1);
        let stripes = (map.len() / entries).clamp(1, STAT_STRIPES_MAX);
        Ok(Striped {
            map,
            entries,
            stripes,
        })
    }

    fn sum(&self, id: u32) -> LbStats {
        let mut t = LbStats::default();
        if id >= self.entries {
            return t;
        }
        for s in 0..self.stripes {
            if let Ok(v) = self.map.get(&(s * self.entries + id), 0) {
                t.add(&v);
            }
        }
        t
    }
}

fn max_entries(m: &MapData) -> u32 {
    m.info().map_or(0, |i| i.max_entries())
}

pub fn mode_name(m: u8) -> &'static str {
    crate::model::LbMode::from_code(m).map_or("unknown", |m| m.as_str())
}

fn proto_name(p: u8) -> &'static str {
    crate::model::Proto::from_number(p).map_or("other", |p| p.as_str())
}

/// `word value` for every counter of `table`, values padded to `width` (not the last).
fn pairs<S>(table: &[Counter<S>], s: &S, width: usize) -> String {
    let mut out = String::new();
    for (i, c) in table.iter().enumerate() {
        let v = (c.get)(s);
        if i + 1 == table.len() {
            out += &format!("{} {v}", c.status);
        } else if width > 0 {
            out += &format!("{} {v:<width$} ", c.status);
        } else {
            out += &format!("{} {v}  ", c.status);
        }
    }
    out
}

impl Snapshot {
    /// Read everything; `rings` also counts each backend's share of its service's live ring
    /// (one map read per slot, so leave it off for frequent scrapes).
    pub fn read(dir: &Path, rings: bool) -> Result<Snapshot, DataplaneError> {
        let config: Array<_, Config> = Array::try_from(Map::Array(open(dir, pin_names::CONFIG)?))?;
        let config = config.get(&0, 0)?;
        let totals = read_totals(dir)?;
        let vips = read_vips(dir)?;
        let services = read_services(dir, rings)?;
        Ok(Snapshot {
            config,
            totals,
            vips,
            services,
        })
    }

    /// Every active backend of both families with its counters (no ring walk needed).
    pub fn active_backends(dir: &Path) -> Result<Vec<BackendView>, DataplaneError> {
        let backends = Backends::open(dir)?;
        let be_stats = Striped::open(dir, pin_names::BACKEND_STATS, backends.v4.len())?;
        let mut out = Vec::new();
        for id in 0..backends.v4.len() {
            for (addr, port, flags) in backends.get(id) {
                if flags & BACKEND_F_ACTIVE == 0 {
                    continue;
                }
                out.push(BackendView {
                    id,
                    addr,
                    port,
                    active: true,
                    slots: 0,
                    stats: be_stats.sum(id),
                });
            }
        }
        Ok(out)
    }

    /// Human-readable report for `vip status`.
    pub fn render(&self, dir: &Path) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let t = &self.totals;
        let _ = writeln!(o, "pins        {}", dir.display());
        let _ = writeln!(
            o,
            "maglev      tables sized by need, at most M={} seed={:#010x}",
            self.config.ring_size, self.config.hash_seed
        );
        // One line per group of totals (`xdp`, `arp`, `lb`), in the table's order.
        let mut lines: Vec<(&str, Vec<String>)> = Vec::new();
        for c in TOTALS {
            let pair = format!("{} {}", c.status, (c.get)(t));
            match lines.iter_mut().find(|(l, _)| *l == c.line) {
                Some((_, pairs)) => pairs.push(pair),
                None => lines.push((c.line, vec![pair])),
            }
        }
        for (line, pairs) in lines {
            let _ = writeln!(o, "{line:<11} {}", pairs.join("  "));
        }
        let _ = writeln!(o, "\nVIPS");
        for v in &self.vips {
            let _ = writeln!(
                o,
                "  {:<16} {:<8} ifindex {:<3} {}",
                v.addr,
                // Without the owned flag the VIP is served but silent: routed here by BGP.
                match (v.owned, v.addr.is_ipv4()) {
                    (true, _) => "owned",
                    (false, true) => "no-arp",
                    (false, false) => "no-ndp",
                },
                v.ifindex,
                match &v.stats {
                    VipRow::V4(s) => pairs(PER_VIP, s, 8),
                    VipRow::V6(s) => pairs(PER_VIP6, s, 8),
                }
            );
        }
        let _ = writeln!(o, "\nSERVICES");
        for s in &self.services {
            let _ = writeln!(
                o,
                "  {:<24} {:<5} id {:<3} table {:<6} {}",
                s.name(),
                s.mode,
                s.id,
                s.table,
                pairs(PER_SERVICE, &s.stats, 0)
            );
            let total: u32 = s.backends.iter().map(|b| b.slots).sum();
            for b in &s.backends {
                let share = if total > 0 {
                    100.0 * b.slots as f64 / total as f64
                } else {
                    0.0
                };
                let _ = writeln!(
                    o,
                    "      -> {:<21} id {:<4} {:<8} {:>5.1}% of ring  {}",
                    std::net::SocketAddr::new(b.addr, b.port).to_string(),
                    b.id,
                    if b.active { "active" } else { "inactive" },
                    share,
                    pairs(PER_BACKEND, &b.stats, 0)
                );
            }
        }
        o
    }
}

/// The global counters, summed over the CPUs.
fn read_totals(dir: &Path) -> Result<Stats, DataplaneError> {
    let stats: PerCpuArray<_, Stats> =
        PerCpuArray::try_from(Map::PerCpuArray(open(dir, pin_names::STATS)?))?;
    let mut totals = Stats::default();
    for s in stats.get(&0, 0)?.iter() {
        totals.add(s);
    }
    Ok(totals)
}

/// Every VIP in the maps with its counters, IPv4 then IPv6, by address. A pin directory
/// from before IPv6 (no `vips6` pin) has IPv4 VIPs only.
fn read_vips(dir: &Path) -> Result<Vec<VipView>, DataplaneError> {
    let mut out = read_vips4(dir)?;
    if dir.join(pin_names::VIPS6).exists() {
        out.extend(read_vips6(dir)?);
    }
    Ok(out)
}

fn read_vips6(dir: &Path) -> Result<Vec<VipView>, DataplaneError> {
    read_family(
        dir,
        (pin_names::VIPS6, pin_names::VIP6_STATS),
        |k: &Vip6Key| IpAddr::from(k.addr_be),
        VipRow::V6,
    )
}

fn read_vips4(dir: &Path) -> Result<Vec<VipView>, DataplaneError> {
    read_family(
        dir,
        (pin_names::VIPS, pin_names::VIP_STATS),
        |k: &VipKey| IpAddr::from(k.addr_be),
        VipRow::V4,
    )
}

/// One family's VIPs (`pins`: the VIP map's and its counters'), by address.
fn read_family<K: aya::Pod, S: aya::Pod + Default>(
    dir: &Path,
    pins: (&str, &str),
    addr: impl Fn(&K) -> IpAddr,
    row: impl Fn(S) -> VipRow,
) -> Result<Vec<VipView>, DataplaneError> {
    let vips: HashMap<_, K, VipValue> = HashMap::try_from(Map::HashMap(open(dir, pins.0)?))?;
    let vip_stats: HashMap<_, K, S> = HashMap::try_from(Map::HashMap(open(dir, pins.1)?))?;
    let mut vip_views = Vec::new();
    for e in vips.iter() {
        let (k, v) = e?;
        let st = vip_stats.get(&k, 0).unwrap_or_default();
        vip_views.push(VipView {
            addr: addr(&k),
            owned: v.flags & VIP_F_OWNED != 0,
            ifindex: v.ifindex,
            stats: row(st),
        });
    }
    vip_views.sort_by_key(|v| v.addr);
    Ok(vip_views)
}

/// Both families' backend maps (`BACKENDS6` absent in a pin directory from a build before
/// IPv6 services).
struct Backends {
    v4: Array<MapData, BackendValue>,
    v6: Option<Array<MapData, Backend6Value>>,
}

impl Backends {
    fn open(dir: &Path) -> Result<Self, DataplaneError> {
        let v4 = Array::try_from(Map::Array(open(dir, pin_names::BACKENDS)?))?;
        let v6 = if dir.join(pin_names::BACKENDS6).exists() {
            Some(Array::try_from(Map::Array(open(
                dir,
                pin_names::BACKENDS6,
            )?))?)
        } else {
            None
        };
        Ok(Self { v4, v6 })
    }

    /// Backend `id` as (address, port, flags) in each map that has it in use (an id is in
    /// one family's map at a time; a retired one may linger inactive in the other).
    fn get(&self, id: u32) -> Vec<(IpAddr, u16, u32)> {
        let mut out = Vec::new();
        if let Ok(b) = self.v4.get(&id, 0) {
            if b.gen != 0 || b.flags != 0 {
                out.push((
                    IpAddr::from(b.addr_be),
                    u16::from_be_bytes(b.port_be),
                    b.flags,
                ));
            }
        }
        if let Some(Ok(b)) = self.v6.as_ref().map(|m| m.get(&id, 0)) {
            if b.gen != 0 || b.flags != 0 {
                out.push((
                    IpAddr::from(b.addr_be),
                    u16::from_be_bytes(b.port_be),
                    b.flags,
                ));
            }
        }
        out
    }

    /// Backend `id` of the family of `vip`'s service.
    fn of(&self, vip: IpAddr, id: u32) -> Option<(IpAddr, u16, u32)> {
        self.get(id)
            .into_iter()
            .find(|(a, _, _)| a.is_ipv4() == vip.is_ipv4())
    }
}

/// The maps a service's view is read from, opened once for all services.
struct ServiceMaps {
    backends: Backends,
    rings: Array<MapData, u32>,
    svc_stats: Striped,
    be_stats: Striped,
}

/// Every service of both families with its counters (and with `rings`, its backends by
/// ring share), by VIP, port and protocol (IPv4 first).
fn read_services(dir: &Path, rings: bool) -> Result<Vec<ServiceView>, DataplaneError> {
    let services = open(dir, pin_names::SERVICES)?;
    let svc_stats = Striped::open(dir, pin_names::SVC_STATS, max_entries(&services))?;
    let services: HashMap<_, ServiceKey, ServiceValue> = HashMap::try_from(Map::HashMap(services))?;
    let backends = Backends::open(dir)?;
    let ring_map: Array<_, u32> = Array::try_from(Map::Array(open(dir, pin_names::RINGS)?))?;
    let be_stats = Striped::open(dir, pin_names::BACKEND_STATS, backends.v4.len())?;
    let maps = ServiceMaps {
        backends,
        rings: ring_map,
        svc_stats,
        be_stats,
    };
    let mut svc_views = Vec::new();
    for e in services.iter() {
        let (k, v) = e?;
        let vip = IpAddr::from(k.addr_be);
        svc_views.push(maps.service(vip, k.port_be, k.proto, &v, rings));
    }
    if dir.join(pin_names::SERVICES6).exists() {
        let services6: HashMap<_, Service6Key, ServiceValue> =
            HashMap::try_from(Map::HashMap(open(dir, pin_names::SERVICES6)?))?;
        for e in services6.iter() {
            let (k, v) = e?;
            let vip = IpAddr::from(k.addr_be);
            svc_views.push(maps.service(vip, k.port_be, k.proto, &v, rings));
        }
    }
    svc_views.sort_by_key(|s| (s.vip, s.port, s.proto));
    Ok(svc_views)
}

impl ServiceMaps {
    fn service(
        &self,
        vip: IpAddr,
        port_be: [u8; 2],
        proto: u8,
        v: &ServiceValue,
        rings: bool,
    ) -> ServiceView {
        // Which backends the live ring points at, and how many slots each holds.
        let shares = if rings {
            self.ring_shares(v)
        } else {
            BTreeMap::new()
        };
        let mut bviews = Vec::new();
        for (id, slots) in shares {
            if let Some((addr, port, flags)) = self.backends.of(vip, id) {
                bviews.push(BackendView {
                    id,
                    addr,
                    port,
                    active: flags & BACKEND_F_ACTIVE != 0,
                    slots,
                    stats: self.be_stats.sum(id),
                });
            }
        }
        ServiceView {
            vip,
            port: u16::from_be_bytes(port_be),
            proto: proto_name(proto),
            mode: mode_name(v.mode),
            id: v.id,
            table: v.ring_size,
            stats: self.svc_stats.sum(v.id),
            backends: bviews,
        }
    }

    /// Slots per backend id in the service's live ring (one map read per slot).
    fn ring_shares(&self, v: &ServiceValue) -> BTreeMap<u32, u32> {
        let mut shares: BTreeMap<u32, u32> = BTreeMap::new();
        for s in 0..v.ring_size {
            if let Ok(id) = self.rings.get(&(v.ring_off + s), 0) {
                if id != RING_EMPTY {
                    *shares.entry(id).or_insert(0) += 1;
                }
            }
        }
        shares
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::numbered;
    use std::net::Ipv4Addr;

    /// Every counter of the tables is on `vip status`, next to its word, with its own
    /// field's value (each field holds a different number).
    #[test]
    fn status_shows_every_counter() {
        let backend = BackendView {
            id: 0,
            addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 11)),
            port: 8080,
            active: true,
            slots: 1,
            stats: numbered(PER_BACKEND),
        };
        let snap = Snapshot {
            config: Config::default(),
            totals: numbered(TOTALS),
            vips: vec![
                VipView {
                    addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100)),
                    owned: true,
                    ifindex: 2,
                    stats: VipRow::V4(numbered(PER_VIP)),
                },
                VipView {
                    addr: "2001:db8::100".parse().unwrap(),
                    owned: true,
                    ifindex: 2,
                    stats: VipRow::V6(numbered(PER_VIP6)),
                },
            ],
            services: vec![ServiceView {
                vip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100)),
                port: 80,
                proto: "tcp",
                mode: "nat",
                id: 0,
                table: 251,
                stats: numbered(PER_SERVICE),
                backends: vec![backend],
            }],
        };
        let out = snap.render(Path::new("/sys/fs/bpf/vip"));
        let line = |start: &str| {
            out.lines()
                .find(|l| l.trim_start().starts_with(start))
                .unwrap_or_else(|| panic!("no line `{start}` in\n{out}"))
                .to_string()
        };
        for (i, c) in TOTALS.iter().enumerate() {
            let l = line(&format!("{} ", c.line));
            let pair = format!(" {} {}", c.status, i + 1);
            assert!(
                l.contains(&format!("{pair} ")) || l.ends_with(&pair),
                "{}: no `{pair}` in `{l}`",
                c.field
            );
        }
        for (table, start) in [
            (
                PER_VIP.iter().map(|c| c.status).collect::<Vec<_>>(),
                "192.0.2.100 ",
            ),
            (
                PER_VIP6.iter().map(|c| c.status).collect(),
                "2001:db8::100 ",
            ),
            (
                PER_SERVICE.iter().map(|c| c.status).collect(),
                "192.0.2.100:80/tcp",
            ),
            (
                PER_BACKEND.iter().map(|c| c.status).collect(),
                "-> 10.0.0.11:8080",
            ),
        ] {
            let l = line(start);
            for (i, status) in table.iter().enumerate() {
                let pair = format!(" {status} {}", i + 1);
                assert!(
                    l.contains(&format!("{pair} ")) || l.ends_with(&pair),
                    "no `{pair}` in `{l}`"
                );
            }
        }
        // The lines of earlier releases keep their words.
        assert!(line("xdp ").starts_with("xdp         rx 1  pass 2  drop 3  tx 4"));
        assert!(line("192.0.2.100 ").contains("ifindex 2   arp replies 1        arp drops 2"));
    }
}
