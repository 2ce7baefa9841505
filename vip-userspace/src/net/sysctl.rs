//! The few per-interface IPv4 settings the load balancer depends on. /proc/sys/net belongs to
//! the daemon's own network namespace.
use std::path::PathBuf;

fn path(dev: &str, key: &str) -> PathBuf {
    PathBuf::from(format!("/proc/sys/net/ipv4/conf/{dev}/{key}"))
}

pub fn get(dev: &str, key: &str) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path(dev, key))?.trim().to_string())
}

/// Set `key` to `value` if it differs; returns the previous value when it changed.
pub fn set(dev: &str, key: &str, value: &str) -> std::io::Result<Option<String>> {
    let old = get(dev, key)?;
    if old == value {
        return Ok(None);
    }
    std::fs::write(path(dev, key), value)?;
    tracing::info!(dev, key, old = %old, new = value, "sysctl changed");
    Ok(Some(old))
}
