//! The `vip` binary's edge: parse the command line, run the subcommand, and turn its error
//! into an exit code (2 for configuration, 1 for the rest) with the cause chain printed once.
#![deny(clippy::unwrap_used, clippy::expect_used)]
use std::process::ExitCode;

use clap::Parser;
use vip_userspace::{
    cli::{Cli, Command},
    config, daemon, logging,
};

/// Exit code for configuration errors, so supervisors can tell "fix the config" from
/// "something broke".
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args),
        Command::Status {
            pin_dir,
            metrics_addr,
        } => status(&pin_dir, metrics_addr),
        Command::RaftKey => match vip_userspace::election::raft::RaftKey::generate() {
            Ok(k) => {
                print!("{k}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vip: no randomness for a key: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Manifest(m) => match vip_userspace::manifest::render(&m.kind, &m.options()) {
            Ok(y) => {
                print!("{y}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vip: {}", vip_userspace::Chain(&e));
                ExitCode::FAILURE
            }
        },
    }
}

fn status(pin_dir: &std::path::Path, metrics: std::net::SocketAddr) -> ExitCode {
    let code = match vip_userspace::dataplane::inspect::Snapshot::read(pin_dir, true) {
        Ok(s) => {
            print!("{}", s.render(pin_dir));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "vip: cannot read the pinned maps in {}: {} (is vip running, or did it stop with --keep-pinned?)",
                pin_dir.display(),
                vip_userspace::Chain(&e)
            );
            ExitCode::FAILURE
        }
    };
    // Sessions live in the daemon, not in the maps; a daemon without BGP has no peers.
    if let Ok(v) = vip_userspace::bgp::status::fetch(metrics) {
        let has_peers = v
            .get("peers")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|p| !p.is_empty());
        if has_peers {
            print!("\n{}", vip_userspace::bgp::status::render(&v));
        }
    }
    code
}

fn run(args: vip_userspace::cli::RunArgs) -> ExitCode {
    let file = match &args.config {
        Some(p) => config::load_file(p),
        None => Ok(config::FileConfig::default()),
    };
    let cfg = match file.and_then(|f| config::resolve(f, args.overrides())) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vip: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    logging::init(cfg.log_format, &cfg.log_level);
    start_privileged(&cfg);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vip: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let checked = async {
            let (conn, handle, _) = rtnetlink::new_connection()?;
            tokio::spawn(conn);
            daemon::check(&cfg, &handle).await
        }
        .await;
        if let Err(e) = checked {
            return report(e);
        }
        let reload_args = args.overrides();
        let path = args.config.clone();
        let reload: daemon::Reload = Box::new(move || {
            let file = match &path {
                Some(p) => config::load_file(p)?,
                None => config::FileConfig::default(),
            };
            config::resolve(file, reload_args.clone())
        });
        match daemon::run(cfg, args.keep_pinned, Some(reload)).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => report(e),
        }
    })
}

/// What needs CAP_SYS_ADMIN happens here, then it is dropped (privileges.rs says why that
/// is safe), while the process still has one thread: capabilities are per thread. Neither
/// step failing stops the daemon: a missing bpffs is reported where XDP needs it.
fn start_privileged(cfg: &config::Config) {
    if cfg.mode != config::Mode::Kernel {
        if let Err(e) = vip_userspace::dataplane::load::mount_bpffs(&cfg.pin_dir) {
            tracing::warn!(error = %vip_userspace::Chain(&e), "bpffs not mounted");
        }
    }
    match vip_userspace::privileges::drop_after_start() {
        Ok(dropped) if dropped.is_empty() => {}
        Ok(dropped) => tracing::info!(?dropped, "capabilities needed only at start dropped"),
        Err(e) => tracing::warn!(error = %vip_userspace::Chain(&e), "capabilities not dropped"),
    }
}

/// Logging is up by now, so the error goes through it (JSON when asked) and only there.
fn report(e: daemon::DaemonError) -> ExitCode {
    match e {
        daemon::DaemonError::Config(c) => {
            tracing::error!("{c}");
            ExitCode::from(EXIT_CONFIG)
        }
        other => {
            tracing::error!("{:#}", anyhow::Error::new(other));
            ExitCode::FAILURE
        }
    }
}
