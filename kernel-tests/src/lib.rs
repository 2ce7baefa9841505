//! vip's kernel tier lives in `tests/`: every test there needs root, BPF (a kernel with BTF)
//! and network namespaces, and panics saying so when they are missing
//! (`testbed::require_root_and_bpf`). The package is a workspace member outside
//! `default-members`, so a plain `cargo test` does not build it; run it as root with
//! `cargo test -p vip-kernel-tests -- --test-threads=1` (or `cargo xtask test`).
