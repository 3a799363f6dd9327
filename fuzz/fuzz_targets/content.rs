//! What a peer reads inside every decrypted application message (a `Content`, and the
//! `Continuation` a content may carry), and the notices it reads in a group's log.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlschat_wire::content::{Content, Continuation};
use mlschat_wire::notice::Notice;

fuzz_target!(|data: &[u8]| {
    let _ = Content::show(data);
    if let Ok(content) = Content::decode(data) {
        assert_eq!(Content::decode(&content.encode()).unwrap(), content);
    }
    if let Ok(continuation) = Continuation::decode(data) {
        assert_eq!(
            Continuation::decode(&continuation.encode()).unwrap(),
            continuation
        );
    }
    // Almost every input fails the signature; the decoding before it is what is fuzzed.
    let _ = Notice::verified(data);
});
