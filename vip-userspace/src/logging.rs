//! `tracing` setup: human-readable by default, JSON lines on request. The subscriber also
//! installs the `log` bridge, which is how aya-log records from the XDP program arrive.
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_env("VIP_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only on a terminal: in a container (`kubectl logs`, `podman logs`) or a
        // file, escape codes would be noise in every line.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let res = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Err(e) = res {
        eprintln!("vip: logging already initialised: {e}");
    }
}
