//! Interface lookups by name, through rtnetlink so they see the daemon's own network
//! namespace (sysfs may belong to another one when run under `nsenter`).
use futures::TryStreamExt;
use netlink_packet_route::link::LinkAttribute;
use rtnetlink::Handle;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("interface `{0}` not found")]
    NotFound(String),
    #[error("interface `{name}` has no Ethernet address")]
    NoMac { name: String },
    #[error("netlink")]
    Netlink(#[from] rtnetlink::Error),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
}

pub async fn get(handle: &Handle, name: &str) -> Result<Link, LinkError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    let msg = match links.try_next().await {
        Ok(Some(m)) => m,
        Ok(None) => return Err(LinkError::NotFound(name.to_string())),
        Err(e) if crate::net::netlink_errno(&e) == Some(libc::ENODEV) => {
            return Err(LinkError::NotFound(name.to_string()))
        }
        Err(e) => return Err(e.into()),
    };
    let mac = msg
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(b) if b.len() == 6 => {
                let mut m = [0u8; 6];
                m.copy_from_slice(b);
                Some(m)
            }
            _ => None,
        })
        .ok_or_else(|| LinkError::NoMac {
            name: name.to_string(),
        })?;
    Ok(Link {
        name: name.to_string(),
        index: msg.header.index,
        mac,
    })
}

/// Index of `name` in the current namespace, or None.
pub fn index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: c is a valid NUL-terminated string for the duration of the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}
