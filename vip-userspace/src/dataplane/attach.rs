//! Attaching the programs: XDP native first (full speed), generic as the fallback (works on
//! any device, slower), and the reverse-NAT program on tc egress.
//!
//! Both attachments are bpf_links pinned under the pin dir, so they outlive the daemon: a
//! restarted (or crashed) daemon leaves the data plane running, and the next one adopts the
//! links, replacing the program in place (`bpf_link_update`, atomic: no packet sees no
//! program) when it differs from the embedded one. Where the kernel attaches through netlink
//! instead (no bpf_link for the hook), the attachment is the process's and goes with it.
use std::{
    io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        tc::{SchedClassifierLink, SchedClassifierLinkId},
        xdp::XdpLink,
        SchedClassifier, TcAttachType, Xdp, XdpMode,
    },
    Ebpf,
};

use super::DataplaneError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    Native,
    Generic,
}

impl AttachMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Native => "xdp-native",
            AttachMode::Generic => "xdp-generic",
        }
    }

    fn pin_suffix(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        }
    }
}

/// How an attachment came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adoption {
    /// Attached by this process (nothing was pinned for this device).
    Fresh,
    /// A pinned link was adopted and already ran the embedded program.
    Unchanged,
    /// A pinned link was adopted and its program atomically replaced by the embedded one.
    Replaced,
}

impl Adoption {
    pub fn as_str(self) -> &'static str {
        match self {
            Adoption::Fresh => "fresh",
            Adoption::Unchanged => "unchanged",
            Adoption::Replaced => "replaced",
        }
    }
}

/// An attachment this process holds.
pub enum Held<L> {
    /// A bpf_link, pinned at `pin` so it survives the process.
    Link { link: FdLink, pin: PathBuf },
    /// A netlink attachment (no bpf_link for this hook on this kernel): detached when
    /// dropped, so it never outlives the daemon.
    Legacy(L),
}

impl<L> Held<L> {
    /// Detach: the pin goes, then our handle; the kernel detaches with the last reference.
    pub fn release(self) {
        match self {
            Held::Link { link, pin } => {
                if let Err(e) = std::fs::remove_file(&pin) {
                    if e.kind() != io::ErrorKind::NotFound {
                        tracing::warn!(pin = %pin.display(), error = %crate::Chain(&e), "link pin not removed");
                    }
                }
                drop(link);
            }
            Held::Legacy(l) => drop(l),
        }
    }

    /// Leave it attached for the next daemon (planned restart): only our handle goes.
    /// A netlink attachment cannot be handed over and is detached.
    pub fn keep(self) -> bool {
        match self {
            Held::Link { .. } => true,
            Held::Legacy(_) => false,
        }
    }

    /// Kernel link id and program id (pinned links only).
    pub fn ids(&self) -> Option<(u32, u32)> {
        match self {
            Held::Link { link, .. } => link.info().ok().map(|i| (i.id(), i.program_id())),
            Held::Legacy(_) => None,
        }
    }
}

/// Environment variable that makes adoption replace the program even when it is unchanged
/// (tests use it to exercise the atomic replacement without building a second object).
pub const FORCE_REPLACE_ENV: &str = "VIP_FORCE_PROGRAM_REPLACE";

pub fn force_replace() -> bool {
    std::env::var(FORCE_REPLACE_ENV).is_ok_and(|v| v == "1")
}

// bpffs refuses names with a dot (EPERM), hence underscores throughout.
const XDP_PIN_PREFIX: &str = "link_xdp_";
const TC_PIN_PREFIX: &str = "link_tc_egress_";

fn xdp_pin(pin_dir: &Path, ifindex: u32, mode: AttachMode) -> PathBuf {
    pin_dir.join(format!("{XDP_PIN_PREFIX}{ifindex}_{}", mode.pin_suffix()))
}

fn tc_pin(pin_dir: &Path, ifindex: u32) -> PathBuf {
    pin_dir.join(format!("{TC_PIN_PREFIX}{ifindex}"))
}

/// Every link pin under `pin_dir` (for cleanup).
pub fn link_pins(pin_dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(pin_dir) else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(XDP_PIN_PREFIX) || n.starts_with(TC_PIN_PREFIX))
        })
        .collect()
}

/// Links pinned for another device (the uplink was replaced, or the interface changed):
/// removing the pin detaches them, as nothing else holds them.
fn remove_foreign_pins(pin_dir: &Path, prefix: &str, ifindex: u32) {
    let own = format!("{prefix}{ifindex}");
    for p in link_pins(pin_dir) {
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let ours = name == own || name.starts_with(&format!("{own}_"));
        if name.starts_with(prefix) && !ours {
            tracing::info!(pin = %p.display(), "removing a link pinned for another device");
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// (type, ifindex) of the link pinned at `path`, through `BPF_OBJ_GET` and
/// `BPF_OBJ_GET_INFO_BY_FD`. aya's `LinkInfo` does not expose the target device, which tells
/// a live link on our uplink from a defunct one (its device went away, which detaches the
/// link but leaves the pin).
fn link_target(path: &Path) -> io::Result<(u32, u32)> {
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // struct bpf_link_info: type, id, prog_id, then an 8-aligned union whose xdp and tcx
    // members both start with the ifindex. Zero tail bytes are accepted by the kernel.
    #[repr(C, align(8))]
    struct Info {
        type_: u32,
        id: u32,
        prog_id: u32,
        _pad: u32,
        ifindex: u32,
        _rest: [u8; 44],
    }
    #[repr(C, align(8))]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let fd = obj_get(path)?;
    let mut info = Info {
        type_: 0,
        id: 0,
        prog_id: 0,
        _pad: 0,
        ifindex: 0,
        _rest: [0; 44],
    };
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<Info>() as u32,
        info: &mut info as *mut Info as u64,
    };
    // SAFETY: attr and info are live, correctly sized buffers for the duration of the call;
    // the kernel writes at most info_len bytes into info.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((info.type_, info.ifindex))
}

/// A descriptor for the object pinned at `path` (`BPF_OBJ_GET`: file permissions only,
/// no capability).
fn obj_get(path: &Path) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    const BPF_OBJ_GET: libc::c_long = 7;
    #[repr(C, align(8))]
    struct GetAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut get = GetAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: `get` points at a valid NUL-terminated path that outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &mut get as *mut GetAttr,
            std::mem::size_of::<GetAttr>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; OwnedFd closes it.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}

/// Tag (hash of the instructions, map references zeroed) of the program the link pinned at
/// `path` runs, from the link's `/proc/self/fdinfo` (`prog_tag:`, hex, the kernel's byte
/// order, which aya's `ProgramInfo::tag` reads big-endian). Unlike looking the program up
/// by id (`BPF_PROG_GET_FD_BY_ID`), this needs no CAP_SYS_ADMIN, which the daemon drops
/// at start (see `crate::privileges`).
fn pinned_prog_tag(path: &Path) -> Option<u64> {
    let fd = obj_get(path).ok()?;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    parse_prog_tag(&info)
}

fn parse_prog_tag(fdinfo: &str) -> Option<u64> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("prog_tag:"))
        .and_then(|t| u64::from_str_radix(t.trim(), 16).ok())
}

const BPF_LINK_TYPE_XDP: u32 = 6;
const BPF_LINK_TYPE_TCX: u32 = 11;

/// Open a pinned link and check it is live on `ifindex` with the expected type.
fn open_pinned(path: &Path, want_type: u32, ifindex: u32) -> Result<FdLink, String> {
    let (ty, target) = link_target(path).map_err(|e| crate::Chain(&e).to_string())?;
    if ty != want_type {
        return Err(format!("link type {ty}, expected {want_type}"));
    }
    if target != ifindex {
        // 0: the device went away and took the attachment with it.
        return Err(format!("link is on ifindex {target}, not {ifindex}"));
    }
    Ok(PinnedLink::from_pin(path)
        .map_err(|e| crate::Chain(&e).to_string())?
        .into())
}

pub fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp, DataplaneError> {
    let prog: &mut Xdp = ebpf
        .program_mut(vip_common::XDP_PROG)
        .ok_or(DataplaneError::MissingProgram(vip_common::XDP_PROG))?
        .try_into()?;
    Ok(prog)
}

fn tc_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, DataplaneError> {
    let prog: &mut SchedClassifier = ebpf
        .program_mut(vip_common::TC_EGRESS_PROG)
        .ok_or(DataplaneError::MissingProgram(vip_common::TC_EGRESS_PROG))?
        .try_into()?;
    Ok(prog)
}

/// The XDP attachment on the uplink.
pub struct XdpAttached {
    pub held: Held<XdpLink>,
    pub mode: AttachMode,
    pub adoption: Adoption,
}

/// Load (verify) the program and attach it to `ifindex`, adopting a link a previous daemon
/// pinned for this device.
pub fn attach(
    ebpf: &mut Ebpf,
    iface: &str,
    ifindex: u32,
    pin_dir: &Path,
) -> Result<XdpAttached, DataplaneError> {
    let prog = program(ebpf)?;
    prog.load()?;
    remove_foreign_pins(pin_dir, XDP_PIN_PREFIX, ifindex);
    for mode in [AttachMode::Native, AttachMode::Generic] {
        let pin = xdp_pin(pin_dir, ifindex, mode);
        if !pin.exists() {
            continue;
        }
        let adopted = open_pinned(&pin, BPF_LINK_TYPE_XDP, ifindex)
            .and_then(|link| adopt_xdp(prog, link, &pin).map_err(|e| crate::Chain(&e).to_string()));
        match adopted {
            Ok((link, adoption)) => {
                return Ok(XdpAttached {
                    held: Held::Link { link, pin },
                    mode,
                    adoption,
                })
            }
            Err(e) => {
                tracing::warn!(pin = %pin.display(), error = %e, "pinned XDP link not adoptable; attaching afresh");
                let _ = std::fs::remove_file(&pin);
            }
        }
    }
    let (id, mode) = match prog.attach_to_if_index(ifindex, XdpMode::Driver) {
        Ok(id) => (id, AttachMode::Native),
        Err(native) => {
            tracing::warn!(iface, error = %native, "native XDP attach failed, trying generic");
            match prog.attach_to_if_index(ifindex, XdpMode::Skb) {
                Ok(id) => (id, AttachMode::Generic),
                Err(generic) => {
                    return Err(DataplaneError::Attach {
                        iface: iface.to_string(),
                        native: native.to_string(),
                        generic: generic.to_string(),
                    })
                }
            }
        }
    };
    // aya falls back to netlink when bpf_link_create is refused and offers no accessor to
    // tell which it did; its (exactly pinned) derived Debug names the variant.
    let netlink = format!("{id:?}").contains("NlLinkId");
    let link = prog.take_link(id)?;
    if netlink {
        tracing::warn!(
            iface,
            "XDP attached through netlink (no bpf_link on this kernel): a restart detaches it"
        );
        return Ok(XdpAttached {
            held: Held::Legacy(link),
            mode,
            adoption: Adoption::Fresh,
        });
    }
    let link: FdLink = link.try_into().map_err(DataplaneError::Link)?;
    let pin = xdp_pin(pin_dir, ifindex, mode);
    let link: FdLink = link.pin(&pin)?.into();
    Ok(XdpAttached {
        held: Held::Link { link, pin },
        mode,
        adoption: Adoption::Fresh,
    })
}

/// Whether the link pinned at `pin` already runs the program with tag `ours` (and no
/// replacement is forced). The tag leaves map references out, so a program whose pinned maps
/// were just replaced (`load::maps_replaced`) still holds the old ones and is swapped too.
fn runs(pin: &Path, ours: u64) -> bool {
    !force_replace() && !super::load::maps_replaced() && pinned_prog_tag(pin) == Some(ours)
}

/// Keep the running program if it is ours, else swap ours in through the link.
fn adopt_xdp(
    prog: &mut Xdp,
    link: FdLink,
    pin: &Path,
) -> Result<(FdLink, Adoption), DataplaneError> {
    if runs(pin, prog.info()?.tag()) {
        return Ok((link, Adoption::Unchanged));
    }
    let link = XdpLink::try_from(link).map_err(DataplaneError::Link)?;
    let id = prog.attach_to_link(link)?;
    let link: FdLink = prog
        .take_link(id)?
        .try_into()
        .map_err(DataplaneError::Link)?;
    Ok((link, Adoption::Replaced))
}

/// The reverse-NAT program on tc egress: TCX on 6.6+ (a link, pinned and adopted like the
/// XDP one), else through a clsact qdisc (netlink; goes with the process).
pub fn attach_tc_egress(
    ebpf: &mut Ebpf,
    iface: &str,
    ifindex: u32,
    pin_dir: &Path,
) -> Result<(Held<SchedClassifierLink>, Adoption), DataplaneError> {
    use aya::programs::tc;
    let prog = tc_program(ebpf)?;
    prog.load()?;
    remove_foreign_pins(pin_dir, TC_PIN_PREFIX, ifindex);
    let pin = tc_pin(pin_dir, ifindex);
    if pin.exists() {
        let adopted = open_pinned(&pin, BPF_LINK_TYPE_TCX, ifindex)
            .and_then(|link| adopt_tc(prog, link, &pin).map_err(|e| crate::Chain(&e).to_string()));
        match adopted {
            Ok((link, adoption)) => return Ok((Held::Link { link, pin }, adoption)),
            Err(e) => {
                tracing::warn!(pin = %pin.display(), error = %e, "pinned tc link not adoptable; attaching afresh");
                let _ = std::fs::remove_file(&pin);
            }
        }
    }
    let id: SchedClassifierLinkId = match prog.attach(iface, TcAttachType::Egress) {
        Ok(id) => id,
        Err(first) => {
            // Older kernels attach through a clsact qdisc, which may not exist yet.
            if let Err(e) = tc::qdisc_add_clsact(iface) {
                tracing::debug!(error = %crate::Chain(&e), "clsact qdisc");
            }
            prog.attach(iface, TcAttachType::Egress).map_err(|e| {
                tracing::debug!(first = %first, "tc attach without clsact failed");
                DataplaneError::from(e)
            })?
        }
    };
    let link = prog.take_link(id)?;
    // Only netlink attachments know their attach type; a TCX link is an fd link.
    if link.attach_type().is_ok() {
        return Ok((Held::Legacy(link), Adoption::Fresh));
    }
    let link: FdLink = link.try_into().map_err(DataplaneError::Link)?;
    let link: FdLink = link.pin(&pin)?.into();
    Ok((Held::Link { link, pin }, Adoption::Fresh))
}

fn adopt_tc(
    prog: &mut SchedClassifier,
    link: FdLink,
    pin: &Path,
) -> Result<(FdLink, Adoption), DataplaneError> {
    if runs(pin, prog.info()?.tag()) {
        return Ok((link, Adoption::Unchanged));
    }
    let link = SchedClassifierLink::try_from(link).map_err(DataplaneError::Link)?;
    let id = prog.attach_to_link(link)?;
    let link: FdLink = prog
        .take_link(id)?
        .try_into()
        .map_err(DataplaneError::Link)?;
    Ok((link, Adoption::Replaced))
}

#[cfg(test)]
mod tests {
    #[test]
    fn prog_tag_from_link_fdinfo() {
        // /proc/self/fdinfo of an XDP bpf_link (6.x).
        let info = "pos:\t0\nflags:\t02000000\nmnt_id:\t15\nino:\t2087\nlink_type:\txdp\nlink_id:\t4\nprog_tag:\ta04f5eef06a7f555\nprog_id:\t17\nifindex:\t2\n";
        // Read like aya's ProgramInfo::tag: the kernel's bytes, big-endian.
        let want = u64::from_be_bytes([0xa0, 0x4f, 0x5e, 0xef, 0x06, 0xa7, 0xf5, 0x55]);
        assert_eq!(super::parse_prog_tag(info), Some(want));
        assert_eq!(
            super::parse_prog_tag("link_type:\txdp\nprog_id:\t3\n"),
            None
        );
    }
}
