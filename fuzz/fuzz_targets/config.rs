//! Configuration text: any input gives a config or a list of problems, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_core::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match Config::parse(text, "fuzz.toml", Vec::new()) {
            Ok(_) => {}
            Err(e) => assert!(!e.0.is_empty(), "an error lists at least one problem"),
        }
    }
});
