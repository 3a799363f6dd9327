//! What `mlschat receive` reads from files and pipes: a stream of packets.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlschat_wire::packet::Packet;

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    while let Ok(Some(packet)) = Packet::read_from(&mut input) {
        let bytes = packet.encode().expect("a packet read encodes");
        assert_eq!(
            Packet::read_from(&mut bytes.as_slice()).unwrap(),
            Some(packet)
        );
    }
});
