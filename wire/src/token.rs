//! Per-epoch group tokens: how the node tells a member from a stranger without a member list.
//!
//! Every member derives the epoch's token from the MLS exporter (RFC 9420 §8.5):
//! `token = MLS-Exporter(TOKEN_LABEL, group_id, 32)`. The node stores only `SHA-256(token)` for
//! each epoch, registered by the commit that starts it (the committer computes it from its
//! staged commit). Posting at epoch `e` takes the token of `e`; a member removed at `e` never
//! learns the token of `e + 1`, so it cannot post after its removal.

use sha2::{Digest, Sha256};

use crate::messages::{ClientId, Token, TokenHash};

/// The MLS exporter label of group tokens.
pub const TOKEN_LABEL: &str = "mlschat delivery token";
pub const TOKEN_LEN: usize = 32;

pub fn token_hash(token: &Token) -> TokenHash {
    Sha256::digest(token).into()
}

/// A client's id: SHA-256 of its signature public key.
pub fn client_id(signature_key: &[u8]) -> ClientId {
    Sha256::digest(signature_key).into()
}
