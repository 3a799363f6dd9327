//! MLS messages from the network and files: a peer parses every log entry, Welcome and
//! KeyPackage; the node validates every KeyPackage it is given; a joiner opens sealed trees.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlschat_node::engine;

fuzz_target!(|data: &[u8]| {
    let crypto = openmls_rust_crypto::RustCrypto::default();
    let _ = engine::parse_message(data);
    let _ = engine::validate_key_package(&crypto, data);
    if data.len() >= 32 {
        let (secret, sealed) = data.split_at(32);
        let secret = mlschat_node::sealed_tree::TreeSecret::from_bytes(secret).unwrap();
        let _ = secret.open_tree(&crypto, b"group", 1, sealed);
    }
});
