//! `services:` resolved: each service and its backends, checked against the VIPs.

use super::*;

pub(super) fn resolve_services(
    files: Vec<ServiceFile>,
    maglev_size: u32,
    max_services: u32,
) -> Result<Vec<Service>, ConfigError> {
    if files.len() > max_services as usize {
        return Err(ConfigError::new(
            "services",
            format!(
                "{} services, more than max_services ({max_services})",
                files.len()
            ),
        ));
    }
    let mut out: Vec<Service> = Vec::new();
    for (i, f) in files.into_iter().enumerate() {
        let s = resolve_service(i, f, &out, maglev_size)?;
        out.push(s);
    }
    Ok(out)
}

/// `services[i]`, checked against the services before it (`earlier`).
fn resolve_service(
    i: usize,
    f: ServiceFile,
    earlier: &[Service],
    maglev_size: u32,
) -> Result<Service, ConfigError> {
    let at = |k: &str| format!("services[{i}].{k}");
    let vip = parse_vip(
        f.vip
            .as_deref()
            .ok_or_else(|| ConfigError::new(at("vip"), "required"))?,
    )
    .map_err(|m| ConfigError::new(at("vip"), m))?;
    let port = f
        .port
        .ok_or_else(|| ConfigError::new(at("port"), "required"))?;
    if port == 0 {
        return Err(ConfigError::new(at("port"), "must be 1-65535"));
    }
    let proto = match f.protocol.as_deref() {
        None => Proto::Tcp,
        Some(o) => Proto::parse(o).ok_or_else(|| {
            ConfigError::new(at("protocol"), format!("`{o}` is not {}", Proto::choices()))
        })?,
    };
    let mode = match f.mode.as_deref() {
        None => LbMode::Dsr,
        Some(o) => LbMode::parse(o).ok_or_else(|| {
            ConfigError::new(
                at("mode"),
                format!("`{o}` is not one of {}", LbMode::choices()),
            )
        })?,
    };
    if earlier
        .iter()
        .any(|s| s.vip == vip && s.port == port && s.proto == proto)
    {
        return Err(ConfigError::new(
            at("port"),
            format!("{vip}:{port}/{} is defined twice", proto.as_str()),
        ));
    }
    let mut backends: Vec<Backend> = Vec::new();
    for (j, b) in f.backends.into_iter().enumerate() {
        let backend = resolve_backend(
            &format!("services[{i}].backends[{j}]"),
            b,
            vip,
            port,
            mode,
            &backends,
        )?;
        backends.push(backend);
    }
    if backends.len() > maglev_size as usize {
        return Err(ConfigError::new(
            at("backends"),
            "more backends than maglev_size slots",
        ));
    }
    Ok(Service {
        vip,
        port,
        proto,
        mode,
        backends: backends.into(),
    })
}

/// One backend (at `path`) of a service on `port` in `mode`, checked against the
/// service's backends before it (`earlier`).
fn resolve_backend(
    path: &str,
    b: BackendFile,
    vip: std::net::IpAddr,
    port: u16,
    mode: LbMode,
    earlier: &[Backend],
) -> Result<Backend, ConfigError> {
    let bat = |k: &str| format!("{path}.{k}");
    let raw = b
        .addr
        .ok_or_else(|| ConfigError::new(bat("addr"), "required"))?;
    let addr = parse_vip(&raw).map_err(|m| ConfigError::new(bat("addr"), m))?;
    if addr.is_ipv4() != vip.is_ipv4() {
        return Err(ConfigError::new(
            bat("addr"),
            format!(
                "{addr} is not of the VIP's family ({vip}): a service balances within one family"
            ),
        ));
    }
    let bport = b.port.unwrap_or(port);
    if bport == 0 {
        return Err(ConfigError::new(bat("port"), "must be 1-65535"));
    }
    let weight = b.weight.unwrap_or(1);
    if weight > 1000 {
        return Err(ConfigError::new(bat("weight"), "must be 0-1000 (0 drains)"));
    }
    if earlier.iter().any(|x| x.addr == addr && x.port == bport) {
        return Err(ConfigError::new(
            bat("addr"),
            format!("{addr}:{bport} listed twice"),
        ));
    }
    if mode == LbMode::Dsr && bport != port {
        return Err(ConfigError::new(
            bat("port"),
            "dsr cannot change the port (the packet is not rewritten); use nat",
        ));
    }
    Ok(Backend {
        addr,
        port: bport,
        weight,
    })
}
