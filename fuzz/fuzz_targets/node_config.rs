//! What the delivery node reads from its configuration file and environment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlschat_delivery::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::load(
            text,
            [("MLSCHAT__LIMITS__MAX_FETCH".to_owned(), text.to_owned())],
        );
    }
});
