//! Attaching the XDP program: native first (full speed), generic as the fallback (works on
//! any device, slower). Which one took is reported in logs and metrics.
use aya::{
    programs::{Xdp, XdpMode},
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
}

pub fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp, DataplaneError> {
    let prog: &mut Xdp = ebpf
        .program_mut(vip_common::XDP_PROG)
        .ok_or(DataplaneError::MissingProgram(vip_common::XDP_PROG))?
        .try_into()?;
    Ok(prog)
}

/// Load (verify) the program and attach it to `ifindex`.
pub fn attach(
    ebpf: &mut Ebpf,
    iface: &str,
    ifindex: u32,
) -> Result<(aya::programs::xdp::XdpLinkId, AttachMode), DataplaneError> {
    let prog = program(ebpf)?;
    prog.load()?;
    match prog.attach_to_if_index(ifindex, XdpMode::Driver) {
        Ok(id) => Ok((id, AttachMode::Native)),
        Err(native) => {
            tracing::warn!(iface, error = %native, "native XDP attach failed, trying generic");
            match prog.attach_to_if_index(ifindex, XdpMode::Skb) {
                Ok(id) => Ok((id, AttachMode::Generic)),
                Err(generic) => Err(DataplaneError::Attach {
                    iface: iface.to_string(),
                    native: native.to_string(),
                    generic: generic.to_string(),
                }),
            }
        }
    }
}

/// Attach the reverse-NAT program to tc egress (TCX on 6.6+, else a clsact qdisc).
pub fn attach_tc_egress(
    ebpf: &mut Ebpf,
    iface: &str,
) -> Result<aya::programs::tc::SchedClassifierLinkId, DataplaneError> {
    use aya::programs::{tc, SchedClassifier, TcAttachType};
    let prog: &mut SchedClassifier = ebpf
        .program_mut(vip_common::TC_EGRESS_PROG)
        .ok_or(DataplaneError::MissingProgram(vip_common::TC_EGRESS_PROG))?
        .try_into()?;
    prog.load()?;
    match prog.attach(iface, TcAttachType::Egress) {
        Ok(id) => Ok(id),
        Err(first) => {
            // Older kernels attach through a clsact qdisc, which may not exist yet.
            if let Err(e) = tc::qdisc_add_clsact(iface) {
                tracing::debug!(error = %e, "clsact qdisc");
            }
            prog.attach(iface, TcAttachType::Egress).map_err(|e| {
                tracing::debug!(first = %first, "tc attach without clsact failed");
                e.into()
            })
        }
    }
}

pub fn detach_tc_egress(
    ebpf: &mut Ebpf,
    id: aya::programs::tc::SchedClassifierLinkId,
) -> Result<(), DataplaneError> {
    use aya::programs::SchedClassifier;
    let prog: &mut SchedClassifier = ebpf
        .program_mut(vip_common::TC_EGRESS_PROG)
        .ok_or(DataplaneError::MissingProgram(vip_common::TC_EGRESS_PROG))?
        .try_into()?;
    prog.detach(id)?;
    Ok(())
}
