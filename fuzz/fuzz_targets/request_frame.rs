//! What the delivery node reads from every stream: a request frame. Whatever it is, decoding
//! returns (no panic, no allocation past the limit), and what decodes encodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlschat_wire::{MAX_FRAME, Request, frame};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = frame::decode::<Request>(data, MAX_FRAME) {
        let again = frame::encode(&request).expect("a decoded request encodes");
        assert_eq!(
            frame::decode::<Request>(&again, MAX_FRAME).unwrap(),
            request
        );
    }
});
