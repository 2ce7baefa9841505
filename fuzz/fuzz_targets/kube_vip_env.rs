//! The environment `vip run` reads: kube-vip's names (`address`, `vip_interface`,
//! `bgp_peers`, `vip_leaseduration`, ...) and vip's own `VIP_*`. The input is lines
//! `name=value`; each run sets exactly those of `NAMES` it gives (in this process only),
//! then parses the command line, merges with a minimal file and validates, as main does.
//! The raw input also goes through the string parsers directly.
#![no_main]
use clap::Parser;
use libfuzzer_sys::fuzz_target;
use vip_userspace::{
    bgp::{parse_communities, parse_kube_vip_peers},
    cli::{Cli, Command},
    config::{parse_file, parse_listen_addr, resolve},
};

const NAMES: &[&str] = &[
    "address",
    "vip_interface",
    "vip_leaderelection",
    "svc_election",
    "NODE_NAME",
    "vip_nodename",
    "vip_leasename",
    "vip_leaseduration",
    "vip_renewdeadline",
    "vip_retryperiod",
    "vip_arp",
    "bgp_enable",
    "bgp_as",
    "bgp_routerid",
    "bgp_peers",
    "VIP_INTERFACE",
    "VIP_VIPS",
    "VIP_MODE",
    "VIP_METRICS_ADDR",
    "VIP_PIN_DIR",
    "VIP_LOG_FORMAT",
    "VIP_LOG_LEVEL",
    "VIP_ELECTION",
    "VIP_LEASE_NAME",
    "VIP_LEASE_NAMESPACE",
    "VIP_IDENTITY",
    "VIP_SERVICES",
    "VIP_READYZ_GATE",
    "VIP_SERVICE_ELECTION",
    "VIP_HANDOVER",
];

const FILE: &str = "interface: eth0\nvips: [192.0.2.10]\n";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_kube_vip_peers(text);
    let _ = parse_communities(text);
    let _ = parse_listen_addr(text);

    // libFuzzer runs inputs one at a time on one thread: nothing reads the environment
    // concurrently.
    for n in NAMES {
        std::env::remove_var(n);
    }
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if let Some(name) = NAMES.iter().find(|n| **n == k) {
            if !v.contains('\0') {
                std::env::set_var(name, v);
            }
        }
    }
    let Ok(cli) = Cli::try_parse_from(["vip", "run"]) else {
        return;
    };
    let Command::Run(args) = cli.command else {
        return;
    };
    if let Ok(file) = parse_file(FILE) {
        let _ = resolve(file, args.overrides());
    }
});
