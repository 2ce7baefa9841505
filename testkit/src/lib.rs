//! What vip's tests and bench share, so each exists once:
//!
//! - [`packet`]: the packet builder every test and the bench build frames with;
//! - [`refmodel`]: the reference model of the XDP program, the second reading the fuzz test
//!   holds the kernel to (kernel-tests/tests/lb_test_run.rs);
//! - [`lb6`]: IPv6 services written into the maps directly (the daemon does not carry
//!   them yet);
//! - [`daemon`]: the `vip` binary and the daemon launcher of the kernel tests.
//!
//! Test-only code: nothing here ships in the `vip` binary or its library.
pub mod daemon;
pub mod lb6;
pub mod packet;
pub mod refmodel;
