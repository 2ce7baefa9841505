//! The per-interface IPv4 settings vip depends on (`arp_ignore` for the fence, `forwarding`
//! and `send_redirects` for XDP forwarding), read and written through rtnetlink rather than
//! /proc/sys: container runtimes mount /proc/sys read-only for every container that is not
//! privileged, while RTM_SETLINK with IFLA_AF_SPEC → AF_INET → IFLA_INET_CONF needs only
//! CAP_NET_ADMIN in the daemon's own network namespace (the kernel's `inet_set_link_af`).
//!
//! The kernel reports the settings as a flat array (IFLA_INET_CONF in RTM_NEWLINK) but takes
//! them as nested attributes, one per setting, typed by its IPV4_DEVCONF_* index. The
//! nested request is written here by hand: netlink-packet-route's `DevConfRequest` leaves out
//! every zero value, so it can never set a value back to 0 (restoring `forwarding`, or
//! `send_redirects=0`).
use futures::TryStreamExt;
use netlink_packet_route::link::{AfSpecInet, AfSpecUnspec, InetDevConf, LinkAttribute};
use rtnetlink::{Handle, LinkUnspec};

/// A setting, by the name operators know from `net.ipv4.conf.<dev>.<name>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    Forwarding,
    SendRedirects,
    ArpAnnounce,
    ArpIgnore,
}

impl Setting {
    pub fn name(self) -> &'static str {
        match self {
            Setting::Forwarding => "forwarding",
            Setting::SendRedirects => "send_redirects",
            Setting::ArpAnnounce => "arp_announce",
            Setting::ArpIgnore => "arp_ignore",
        }
    }

    /// IPV4_DEVCONF_* from include/uapi/linux/ip.h (1-based).
    fn index(self) -> u16 {
        match self {
            Setting::Forwarding => 1,
            Setting::SendRedirects => 6,
            Setting::ArpAnnounce => 18,
            Setting::ArpIgnore => 19,
        }
    }

    fn read(self, c: &InetDevConf) -> i32 {
        match self {
            Setting::Forwarding => c.forwarding,
            Setting::SendRedirects => c.send_redirects,
            Setting::ArpAnnounce => c.arp_announce,
            Setting::ArpIgnore => c.arp_ignore,
        }
    }
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DevconfError {
    #[error("interface `{dev}` not found")]
    NotFound { dev: String },
    #[error("reading the IPv4 settings of `{dev}`")]
    Read {
        dev: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("`{dev}` reports no IPv4 settings (IPv4 disabled on it?)")]
    NoInet { dev: String },
    #[error("setting {setting}={value} on `{dev}`")]
    Write {
        dev: String,
        setting: Setting,
        value: u32,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{setting} on `{dev}` reads {got} after it was set to {value}")]
    NotApplied {
        dev: String,
        setting: Setting,
        value: u32,
        got: i32,
    },
}

/// The interface's index and its IPv4 settings.
async fn read_all(handle: &Handle, dev: &str) -> Result<(u32, InetDevConf), DevconfError> {
    let mut links = handle.link().get().match_name(dev.to_string()).execute();
    let msg = match links.try_next().await {
        Ok(Some(m)) => m,
        Ok(None) => return Err(DevconfError::NotFound { dev: dev.into() }),
        Err(e) if crate::net::netlink_errno(&e) == Some(libc::ENODEV) => {
            return Err(DevconfError::NotFound { dev: dev.into() })
        }
        Err(source) => {
            return Err(DevconfError::Read {
                dev: dev.into(),
                source,
            })
        }
    };
    let conf = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::AfSpecUnspec(specs) => specs.iter().find_map(|s| match s {
            AfSpecUnspec::Inet(inet) => inet.iter().find_map(|i| match i {
                AfSpecInet::DevConf(c) => Some(*c),
                _ => None,
            }),
            _ => None,
        }),
        _ => None,
    });
    match conf {
        Some(c) => Ok((msg.header.index, c)),
        None => Err(DevconfError::NoInet { dev: dev.into() }),
    }
}

pub async fn get(handle: &Handle, dev: &str, setting: Setting) -> Result<i32, DevconfError> {
    Ok(setting.read(&read_all(handle, dev).await?.1))
}

/// Set `setting` to `value` on `dev` if it differs, and check the kernel took it. Returns
/// the previous value when it changed.
pub async fn set(
    handle: &Handle,
    dev: &str,
    setting: Setting,
    value: u32,
) -> Result<Option<i32>, DevconfError> {
    let (index, conf) = read_all(handle, dev).await?;
    let old = setting.read(&conf);
    if old == value as i32 {
        return Ok(None);
    }
    let msg = LinkUnspec::new_with_index(index)
        .append_extra_attribute(LinkAttribute::AfSpecUnknown(request(setting, value)))
        .build();
    handle
        .link()
        .set(msg)
        .execute()
        .await
        .map_err(|source| DevconfError::Write {
            dev: dev.into(),
            setting,
            value,
            source,
        })?;
    let got = get(handle, dev, setting).await?;
    if got != value as i32 {
        return Err(DevconfError::NotApplied {
            dev: dev.into(),
            setting,
            value,
            got,
        });
    }
    tracing::info!(
        dev,
        setting = setting.name(),
        old,
        new = value,
        "interface setting changed"
    );
    Ok(Some(old))
}

const NLA_F_NESTED: u16 = 1 << 15;
const IFLA_INET_CONF: u16 = 1;

/// One netlink attribute: length, type, payload, padded to 4 bytes.
fn nla(kind: u16, payload: &[u8]) -> Vec<u8> {
    let len = 4 + payload.len();
    let mut out = Vec::with_capacity((len + 3) & !3);
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize((len + 3) & !3, 0);
    out
}

/// The value of IFLA_AF_SPEC that sets one IPv4 setting:
/// `AF_INET { IFLA_INET_CONF (nested) { <index>: u32 } }`.
fn request(setting: Setting, value: u32) -> Vec<u8> {
    let entry = nla(setting.index(), &value.to_ne_bytes());
    let conf = nla(IFLA_INET_CONF | NLA_F_NESTED, &entry);
    nla(libc::AF_INET as u16, &conf)
}

/// `net.ipv4.conf.all.<key>`, which has no device and so no rtnetlink form; only through
/// /proc/sys, which is read-only in an unprivileged container. Returns the previous value
/// when it changed.
pub fn set_all(key: &str, value: &str) -> std::io::Result<Option<String>> {
    let path = format!("/proc/sys/net/ipv4/conf/all/{key}");
    let old = std::fs::read_to_string(&path)?.trim().to_string();
    if old == value {
        return Ok(None);
    }
    std::fs::write(&path, value)?;
    tracing::info!(key, old = %old, new = value, "net.ipv4.conf.all setting changed");
    Ok(Some(old))
}

/// `net.ipv6.conf.<dev>.<key>`, through /proc/sys only: the kernel takes no IPv6 conf value
/// over rtnetlink (`inet6_set_link_af` accepts the interface token and the address
/// generation mode, nothing of `devconf`), so in an unprivileged container, where /proc/sys
/// is read-only, this fails and the caller says so. Returns the previous value when it
/// changed.
pub fn set_ipv6(dev: &str, key: &str, value: &str) -> std::io::Result<Option<String>> {
    let path = ipv6_path(dev, key)?;
    let old = std::fs::read_to_string(&path)?.trim().to_string();
    if old == value {
        return Ok(None);
    }
    std::fs::write(&path, value)?;
    tracing::info!(dev, key, old = %old, new = value, "IPv6 interface setting changed");
    Ok(Some(old))
}

/// The current value of `net.ipv6.conf.<dev>.<key>`.
pub fn get_ipv6(dev: &str, key: &str) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(ipv6_path(dev, key)?)?
        .trim()
        .to_string())
}

/// The file of `net.ipv6.conf.<dev>.<key>`; a name that would leave the directory (an
/// interface name is at most 15 bytes without `/`, but it comes from the config) is refused.
fn ipv6_path(dev: &str, key: &str) -> std::io::Result<std::path::PathBuf> {
    let bad = |s: &str| s.is_empty() || s.contains('/') || s == "." || s == "..";
    if bad(dev) || bad(key) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("not an interface setting: {dev}/{key}"),
        ));
    }
    Ok(std::path::Path::new("/proc/sys/net/ipv6/conf")
        .join(dev)
        .join(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_af_inet_nesting_one_u32() {
        let r = request(Setting::ArpIgnore, 1);
        let ne = |v: u16| v.to_ne_bytes();
        let mut want = Vec::new();
        want.extend_from_slice(&ne(16)); // AF_INET attribute: 4 + 12
        want.extend_from_slice(&ne(libc::AF_INET as u16));
        want.extend_from_slice(&ne(12)); // IFLA_INET_CONF: 4 + 8
        want.extend_from_slice(&ne(IFLA_INET_CONF | NLA_F_NESTED));
        want.extend_from_slice(&ne(8)); // IPV4_DEVCONF_ARP_IGNORE: 4 + 4
        want.extend_from_slice(&ne(19));
        want.extend_from_slice(&1u32.to_ne_bytes());
        assert_eq!(r, want);
    }

    #[test]
    fn ipv6_paths_stay_in_the_conf_directory() {
        assert_eq!(
            ipv6_path("eth0", "forwarding").unwrap(),
            std::path::Path::new("/proc/sys/net/ipv6/conf/eth0/forwarding")
        );
        assert!(ipv6_path("../../kernel", "x").is_err());
        assert!(ipv6_path("eth0", "").is_err());
    }

    #[test]
    fn zero_is_written_too() {
        // The reason this module builds the request itself.
        let r = request(Setting::SendRedirects, 0);
        assert_eq!(r.len(), 16);
        assert_eq!(&r[12..16], &0u32.to_ne_bytes());
        assert_eq!(&r[10..12], &6u16.to_ne_bytes());
    }
}
