//! What a peer reads inside every decrypted application message: a `Content`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlschat_wire::content::Content;

fuzz_target!(|data: &[u8]| {
    let _ = Content::show(data);
    if let Ok(content) = Content::decode(data) {
        assert_eq!(Content::decode(&content.encode()).unwrap(), content);
    }
});
