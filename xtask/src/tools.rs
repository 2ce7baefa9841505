//! Every program that the tests, the test bed, the demo, the bench, xtask and the fuzzer
//! spawn, and the Debian packages that provide it: `cargo xtask setup` installs from this
//! table, and the test below fails when workspace code spawns a program that is not in it
//! (so a new tool never again works only on a machine that happened to have it).
//!
//! Not listed: what every Debian system has (Essential packages: coreutils, dash,
//! util-linux, dpkg, apt) and what setup's toolchain steps provide (rustup, cargo,
//! bpf-linker, cargo-fuzz); see `PROVIDED` in the test.

pub struct Tool {
    /// As the code spawns it: a name looked up in PATH, or an absolute path.
    pub program: &'static str,
    pub packages: &'static [&'static str],
    /// Who runs it and what for (printed when setup installs it).
    pub why: &'static str,
}

const fn tool(program: &'static str, packages: &'static [&'static str], why: &'static str) -> Tool {
    Tool {
        program,
        packages,
        why,
    }
}

pub const TOOLS: &[Tool] = &[
    tool(
        "ip",
        &["iproute2"],
        "test bed: namespaces, veths, addresses, XDP on switch ports (tests, demo, bench)",
    ),
    tool(
        "ethtool",
        &["ethtool"],
        "test bed: tx checksum offload off on veths (tests, demo, bench)",
    ),
    tool(
        "arping",
        &["arping"],
        "demo and tests: ask for the VIP by ARP",
    ),
    tool(
        "ndisc6",
        &["ndisc6"],
        "IPv6 tests: one Neighbor Solicitation for a VIP, and the MAC that answered (the NDP twin of arping)",
    ),
    tool(
        "ping",
        &["iputils-ping"],
        "IPv6 tests: one ICMPv6 echo to a VIP (delivery, apart from who answers NDP)",
    ),
    tool(
        "bpftool",
        &["bpftool"],
        "demo: dump the pinned maps; bench scale: names of the daemon's maps and their memlock",
    ),
    tool(
        "cc",
        &["gcc", "libc6-dev"],
        "linker of the host build (rustc runs it; build scripts compile C)",
    ),
    tool(
        "musl-gcc",
        &["musl-tools"],
        "C compiler for the static musl `vip` of the image (ring's C parts)",
    ),
    tool("bird", &["bird2"], "bgp_peers tests: a real BGP peer"),
    tool(
        "birdc",
        &["bird2"],
        "bgp_peers tests: bird's routes and sessions",
    ),
    tool("gobgpd", &["gobgpd"], "bgp_peers tests: a real BGP peer"),
    tool("gobgp", &["gobgpd"], "bgp_peers tests: gobgpd's RIB"),
    tool(
        "/usr/lib/frr/bgpd",
        &["frr"],
        "bgp_peers tests: a real BGP peer (bgpd alone, without zebra)",
    ),
    tool(
        "vtysh",
        &["frr"],
        "bgp_peers tests: FRR's sessions and routes",
    ),
    tool("haproxy", &["haproxy"], "bench: connection-rate baseline"),
    tool(
        "perf",
        &["linux-perf"],
        "bench scale with VIP_BENCH_SCALE_PERF: the daemons profiled over a phase",
    ),
    tool("nft", &["nftables"], "bench: packet-rate baseline"),
    tool("keepalived", &["keepalived"], "bench: failover baseline"),
    tool(
        "git",
        &["git"],
        "bench and cargo xtask image: the commit a table was measured on, the image's revision",
    ),
    tool(
        "podman",
        &["podman"],
        "container test: runs the image as the DaemonSet would",
    ),
    tool(
        "buildah",
        &["buildah"],
        "cargo xtask image: writes the OCI image",
    ),
    tool(
        "skopeo",
        &["skopeo"],
        "pushing the image (README: skopeo copy oci-archive:… docker://…)",
    ),
    tool(
        "runc",
        &["runc"],
        "container test: OCI runtime under podman",
    ),
    tool(
        "crun",
        &["crun"],
        "container test: OCI runtime under podman",
    ),
];

/// The packages of all tools, each once, in table order.
pub fn packages() -> Vec<&'static str> {
    let mut out: Vec<&str> = Vec::new();
    for p in TOOLS.iter().flat_map(|t| t.packages.iter().copied()) {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// Whether `program` can be spawned: an existing absolute path, or a name in PATH (or in
/// the sbin directories a non-root PATH may lack).
pub fn found(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let exec = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.starts_with('/') {
        return exec(std::path::Path::new(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(std::path::PathBuf::from))
        .any(|d| exec(&d.join(program)))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::TOOLS;

    /// Spawned programs that need no package from the table.
    const PROVIDED: &[(&str, &str)] = &[
        ("sh", "Essential (dash)"),
        ("id", "Essential (coreutils)"),
        ("date", "Essential (coreutils)"),
        ("dpkg-query", "Essential (dpkg)"),
        ("apt-get", "Essential (apt)"),
        ("rustup", "the toolchain installer, a prerequisite"),
        ("cargo", "the toolchain, a prerequisite"),
        ("bpf-linker", "installed by setup's own cargo step"),
    ];

    /// Spawns whose program is an expression, not a literal: what each one names. A new
    /// one must be added here, saying which program it is.
    const DYNAMIC: &[(&str, &str)] = &[
        (
            "program",
            "Netns::command's parameter (its callers are scanned)",
        ),
        ("cargo", "the cargo running xtask"),
        (
            "std::env::var(\"CARGO\").unwrap_or_else(|_| \"cargo\".into())",
            "the cargo running xtask",
        ),
        ("env!(\"CARGO_BIN_EXE_vip\")", "vip, built by the workspace"),
        (
            "testkit::daemon::vip_bin()",
            "vip, built by the workspace (testkit/src/daemon.rs)",
        ),
        (
            "vip_bin()",
            "vip, built by the workspace (testkit/src/daemon.rs)",
        ),
        (
            "&cargo",
            "the cargo running the tests, building vip (testkit/src/daemon.rs)",
        ),
        (
            "&bin",
            "a cargo-fuzz target, built by `cargo fuzz build` (fuzz_parsers.rs)",
        ),
        ("vip", "vip, built by the workspace"),
        ("vip_bin", "vip, built by the workspace"),
        (
            "td.join(\"vip-bench\")",
            "vip-bench, built by the workspace",
        ),
    ];

    /// Shell words that are not programs to install.
    const SHELL_WORDS: &[&str] = &[
        "command", "test", "[", "echo", ".", "exec", "cd", "export", "set", "true", "false",
    ];

    #[derive(Debug, PartialEq)]
    enum Spawned {
        Program(String),
        Expression(String),
    }

    /// The argument of the call whose '(' is at the start of `s`, up to its matching ')'.
    fn argument(s: &str) -> &str {
        let mut depth = 0usize;
        let mut in_str = false;
        let mut prev = ' ';
        for (i, c) in s.char_indices() {
            match c {
                '"' if prev != '\\' => in_str = !in_str,
                '(' if !in_str => depth += 1,
                ')' if !in_str => {
                    depth -= 1;
                    if depth == 0 {
                        return &s[1..i];
                    }
                }
                _ => {}
            }
            prev = c;
        }
        &s[1..]
    }

    fn literal(s: &str) -> Option<&str> {
        let rest = s.trim_start().strip_prefix('"')?;
        rest.find('"').map(|e| &rest[..e])
    }

    /// The programs a `sh -c` script runs: the first word of each command.
    fn script_programs(script: &str) -> Vec<String> {
        script
            .split(['&', '|', ';'])
            .filter_map(|c| {
                let w: Vec<&str> = c.split_whitespace().collect();
                match w.as_slice() {
                    // `command -v X`: the script depends on X.
                    ["command", "-v", x, ..] => Some(*x),
                    [first, ..] => Some(*first),
                    [] => None,
                }
            })
            .filter(|w| !SHELL_WORDS.contains(w))
            .map(str::to_string)
            .collect()
    }

    /// Every spawn in `src`: `Command::new(..)` and `.command(..)` (testbed's
    /// `Netns::command`), with the programs of `sh -c "…"` scripts. Comment lines are
    /// skipped.
    fn spawns(src: &str) -> Vec<Spawned> {
        let code: String = src
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .map(|l| format!("{l}\n"))
            .collect();
        let mut out = Vec::new();
        for opener in ["Command::new", ".command"] {
            for (at, _) in code.match_indices(opener) {
                let rest = code[at + opener.len()..].trim_start();
                if !rest.starts_with('(') {
                    continue;
                }
                let arg = argument(rest);
                let Some(prog) = literal(arg).filter(|l| arg.trim().len() == l.len() + 2) else {
                    let expr: Vec<&str> = arg.split_whitespace().collect();
                    out.push(Spawned::Expression(expr.join(" ").replace("( ", "(")));
                    continue;
                };
                if prog == "sh" || prog == "bash" {
                    // The script: the literal after "-c" in the rest of the statement.
                    let stmt = &rest[..rest.find(';').unwrap_or(rest.len())];
                    if let Some(c) = stmt.find("\"-c\"") {
                        let after = stmt[c + 4..].trim_start().trim_start_matches(',');
                        match literal(after) {
                            Some(script) => out
                                .extend(script_programs(script).into_iter().map(Spawned::Program)),
                            None => out.push(Spawned::Expression(format!("{prog} -c <script>"))),
                        }
                    }
                }
                out.push(Spawned::Program(prog.to_string()));
            }
        }
        out
    }

    fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    rust_files(&p, out);
                }
            } else if name.ends_with(".rs") {
                out.push(p);
            }
        }
    }

    #[test]
    fn the_scan_sees_each_way_of_spawning() {
        let src = r#"
            let a = Command::new("ip").args(["link"]);
            // Command::new("commented-out")
            let b = ns
                .command("ethtool")
                .args(["-K", "eth0", "tx", "off"]);
            let c = Command::new("sh").args(["-c", "command -v nft || test -x /usr/sbin/nft && birdc show"]);
            let d = std::process::Command::new(
                std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
            );
            let e = node.ns.command(vip_bin);
        "#;
        let p = |s: &str| Spawned::Program(s.into());
        let x = |s: &str| Spawned::Expression(s.into());
        assert_eq!(
            spawns(src),
            vec![
                p("ip"),
                p("nft"),
                p("birdc"),
                p("sh"),
                x("std::env::var(\"CARGO\").unwrap_or_else(|_| \"cargo\".into()),"),
                p("ethtool"),
                x("vip_bin"),
            ]
        );
    }

    #[test]
    fn every_spawned_program_is_in_the_table() {
        let root = crate::util::root();
        let mut files = Vec::new();
        rust_files(&root, &mut files);
        files.sort();
        let mut missing = std::collections::BTreeSet::new();
        let mut seen = Vec::new();
        // This file's own samples (the test above) are not spawns.
        files.retain(|f| !f.ends_with("xtask/src/tools.rs"));
        for f in &files {
            let src = std::fs::read_to_string(f).unwrap();
            let rel = f.strip_prefix(&root).unwrap().display().to_string();
            for s in spawns(&src) {
                match s {
                    Spawned::Program(p) => {
                        seen.push(p.clone());
                        let known = TOOLS.iter().any(|t| t.program == p)
                            || PROVIDED.iter().any(|(q, _)| *q == p);
                        if !known {
                            missing.insert(format!(
                                "{rel}: spawns `{p}`, which is not in xtask/src/tools.rs TOOLS \
                                 (add it with its Debian package)"
                            ));
                        }
                    }
                    Spawned::Expression(e) => {
                        let e = e.trim_end_matches(',');
                        if !DYNAMIC.iter().any(|(d, _)| *d == e) {
                            missing.insert(format!(
                                "{rel}: spawns `{e}`, a program the scan cannot name \
                                 (spawn a literal, or add the expression to DYNAMIC)"
                            ));
                        }
                    }
                }
            }
        }
        let missing: Vec<String> = missing.into_iter().collect();
        assert!(missing.is_empty(), "{}", missing.join("\n"));
        // The scan really reads the workspace: the bed's own tools are among what it found.
        for p in [
            "ip",
            "ethtool",
            "arping",
            "bird",
            "/usr/lib/frr/bgpd",
            "keepalived",
        ] {
            assert!(seen.iter().any(|s| s == p), "the scan missed {p}");
        }
    }

    #[test]
    fn every_row_names_a_program_and_a_package() {
        for t in TOOLS {
            assert!(!t.program.is_empty() && !t.packages.is_empty() && !t.why.is_empty());
            assert_eq!(
                TOOLS.iter().filter(|u| u.program == t.program).count(),
                1,
                "{} listed twice",
                t.program
            );
        }
    }
}
