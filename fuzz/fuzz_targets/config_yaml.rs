//! The YAML config file: parsed and validated as `vip run -c` does (`config::parse_file`,
//! then `config::resolve` without flags), never `check_system` (it reads the interfaces).
#![no_main]
use libfuzzer_sys::fuzz_target;
use vip_userspace::config::{parse_file, resolve, Overrides};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(file) = parse_file(text) {
        let _ = resolve(file, Overrides::default());
    }
});
