//! What a peer reads from its delivery node: response and push frames.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlschat_wire::{MAX_FRAME, Push, Response, frame};

fuzz_target!(|data: &[u8]| {
    if let Ok(response) = frame::decode::<Response>(data, MAX_FRAME) {
        let again = frame::encode(&response).expect("a decoded response encodes");
        assert_eq!(
            frame::decode::<Response>(&again, MAX_FRAME).unwrap(),
            response
        );
    }
    if let Ok(push) = frame::decode::<Push>(data, MAX_FRAME) {
        let again = frame::encode(&push).expect("a decoded push encodes");
        assert_eq!(frame::decode::<Push>(&again, MAX_FRAME).unwrap(), push);
    }
});
