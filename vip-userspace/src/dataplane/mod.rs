//! The XDP data plane: load the embedded object with pinned maps, attach it to the uplink,
//! and keep its maps in step with what this node owns.
pub mod attach;
pub mod inspect;
pub mod lb;
pub mod load;
pub mod maps;
pub mod memory;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("the eBPF object was not built into this binary: run `cargo xtask build-ebpf`, then rebuild vip")]
    NotBuilt,
    #[error("bpffs: {0}")]
    Bpffs(String),
    #[error("pin directory {path}")]
    PinDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("loading eBPF object")]
    Load(#[from] aya::EbpfError),
    #[error("program `{0}` missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("map `{0}` missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("program")]
    Program(#[from] aya::programs::ProgramError),
    #[error("map")]
    Map(#[from] aya::maps::MapError),
    #[error("per-CPU value")]
    PerCpu(#[source] std::io::Error),
    #[error("link")]
    Link(#[source] aya::programs::links::LinkError),
    #[error("pinning")]
    Pin(#[from] aya::pin::PinError),
    #[error("attaching XDP to `{iface}`: native failed ({native}); generic failed ({generic})")]
    Attach {
        iface: String,
        native: String,
        generic: String,
    },
}
