//! What `mlschat contact add` reads from a person: an invite code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlschat_node::profile::InviteCode;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(code) = text.parse::<InviteCode>()
    {
        let again: InviteCode = code.to_string().parse().expect("a code parses back");
        assert_eq!(again.to_string(), code.to_string());
    }
});
