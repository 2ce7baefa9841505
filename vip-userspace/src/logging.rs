//! `tracing` setup: human-readable by default, JSON lines on request. The subscriber also
//! installs the `log` bridge, which is how aya-log records from the XDP program arrive.
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// `directives` as a filter (`info`, `vip=debug,warn`), or None when they do not parse.
/// tracing-subscriber 0.3.23 panics on some non-ASCII directives instead of rejecting them
/// (it slices inside a multi-byte character: `" Т["`, found by fuzz/kube_vip_env), and a
/// target, level or field name is ASCII anyway, so those are refused first.
pub fn filter(directives: &str) -> Option<EnvFilter> {
    if !directives.is_ascii() {
        return None;
    }
    EnvFilter::try_new(directives).ok()
}

pub fn init(format: LogFormat, level: &str) {
    let filter = std::env::var("VIP_LOG")
        .ok()
        .and_then(|v| filter(&v))
        .or_else(|| filter(level))
        .unwrap_or_else(|| EnvFilter::new("info"));
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

#[cfg(test)]
mod tests {
    #[test]
    fn non_ascii_directives_are_refused_not_a_panic() {
        // The input fuzz/kube_vip_env crashed with (VIP_LOG_LEVEL), minimized.
        assert!(super::filter(" \u{422}[").is_none());
        assert!(super::filter("vip=debug,warn").is_some());
        assert!(super::filter("vip=nonsense").is_none());
    }
}
