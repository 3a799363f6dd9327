//! Finding contacts on a local network without telling the network who is there (issue 21,
//! item 2). Each profile has an X25519 discovery key whose public half its invite code carries
//! (`disc=`); two contacts share a secret by Diffie-Hellman, and from it derive a fresh tag for
//! every window of time. A peer announces, per contact, the tag of the current window; a
//! contact who computes the same tag knows it is there. Anyone else sees random-looking tags
//! that change every window and differ per pair: no names, no keys, nothing to link.
//!
//! Pure functions of keys and time; announcing and browsing (mDNS/DNS-SD) is a driver's job.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::identity::Fingerprint;

/// How long a tag lasts: long enough for a browse to find it, short enough that a network
/// cannot follow a device across a day by it.
pub const WINDOW_SECONDS: u64 = 15 * 60;

/// The length of a tag in bytes (hex in an mDNS instance name: 32 characters).
pub const TAG_LEN: usize = 16;

const LABEL: &[u8] = b"mlschat discovery tag v1";

/// A profile's discovery key: its X25519 secret.
pub struct DiscoveryKey(StaticSecret);

impl std::fmt::Debug for DiscoveryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DiscoveryKey({})", hex::encode(self.public()))
    }
}

impl DiscoveryKey {
    /// A fresh key from the operating system's randomness.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        crate::store::getrandom(&mut bytes);
        Self::from_bytes(bytes)
    }

    pub fn from_bytes(secret: [u8; 32]) -> Self {
        Self(StaticSecret::from(secret))
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// What our invite code carries.
    pub fn public(&self) -> [u8; 32] {
        PublicKey::from(&self.0).to_bytes()
    }

    /// The tag `announcer` shows to the holder of the other key in the window holding `now`
    /// (unix seconds): the same whichever of the two computes it.
    pub fn tag(&self, theirs: &[u8; 32], announcer: &Fingerprint, now: u64) -> [u8; TAG_LEN] {
        let shared = self.0.diffie_hellman(&PublicKey::from(*theirs));
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(shared.as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(LABEL);
        mac.update(&announcer.0);
        mac.update(&(now / WINDOW_SECONDS).to_be_bytes());
        let full = mac.finalize().into_bytes();
        full[..TAG_LEN]
            .try_into()
            .expect("a SHA-256 MAC is 32 bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn people() -> (DiscoveryKey, DiscoveryKey, DiscoveryKey) {
        (
            DiscoveryKey::from_bytes([1; 32]),
            DiscoveryKey::from_bytes([2; 32]),
            DiscoveryKey::from_bytes([3; 32]),
        )
    }

    #[test]
    fn both_contacts_compute_the_same_tag() {
        let (alice, bob, _) = people();
        let announcer = Fingerprint([0xa1; 32]);
        assert_eq!(
            alice.tag(&bob.public(), &announcer, NOW),
            bob.tag(&alice.public(), &announcer, NOW)
        );
    }

    #[test]
    fn tags_differ_by_window_by_pair_and_by_announcer() {
        let (alice, bob, carol) = people();
        let (a, b) = (Fingerprint([0xa1; 32]), Fingerprint([0xb0; 32]));
        let tag = alice.tag(&bob.public(), &a, NOW);
        // Within one window it stays; the next window has another.
        let window_start = NOW - NOW % WINDOW_SECONDS;
        assert_eq!(tag, alice.tag(&bob.public(), &a, window_start));
        assert_ne!(
            tag,
            alice.tag(&bob.public(), &a, window_start + WINDOW_SECONDS)
        );
        // Another contact, or the other side announcing, sees another tag.
        assert_ne!(tag, alice.tag(&carol.public(), &a, NOW));
        assert_ne!(tag, alice.tag(&bob.public(), &b, NOW));
    }

    #[test]
    fn a_stranger_cannot_compute_the_tag() {
        let (alice, bob, mallory) = people();
        let a = Fingerprint([0xa1; 32]);
        let tag = alice.tag(&bob.public(), &a, NOW);
        // Mallory knows both public keys (invite codes may be public) but neither secret.
        assert_ne!(tag, mallory.tag(&bob.public(), &a, NOW));
        assert_ne!(tag, mallory.tag(&alice.public(), &a, NOW));
    }

    #[test]
    fn a_key_survives_its_bytes() {
        let key = DiscoveryKey::generate();
        let again = DiscoveryKey::from_bytes(key.to_bytes());
        assert_eq!(key.public(), again.public());
    }
}
