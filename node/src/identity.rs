//! Who a device is: a user name, a device name and an Ed25519 signature key, bound together in an
//! MLS basic credential, plus the fingerprint people compare out of band.

use openmls::prelude::{BasicCredential, Credential, CredentialWithKey, SignatureScheme};
use openmls_basic_credential::SignatureKeyPair;
use sha2::{Digest, Sha256};

/// The signature scheme of the default ciphersuite (MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519).
pub const SIGNATURE_SCHEME: SignatureScheme = SignatureScheme::ED25519;

/// The longest user or device name we accept, in bytes.
const MAX_NAME_LEN: usize = 128;

/// Why a name or a credential was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// A user or device name is empty, too long, or has a character we reserve.
    #[error(
        "invalid {what} name {name:?}: use 1-{MAX_NAME_LEN} printable characters, no '/' or spaces"
    )]
    InvalidName { what: &'static str, name: String },
    /// The credential is not a basic credential of the form `user/device`.
    #[error("credential is not an mlschat identity")]
    ForeignCredential,
}

/// A user and one of their devices: `alice@example.org/laptop`.
///
/// The MLS credential identity is the UTF-8 string `user/device`, so any member can show who a
/// leaf belongs to without extra lookups.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceName {
    pub user: String,
    pub device: String,
}

impl DeviceName {
    /// Checks both names and builds the pair.
    pub fn new(user: &str, device: &str) -> Result<Self, IdentityError> {
        validate_name("user", user)?;
        validate_name("device", device)?;
        Ok(Self {
            user: user.to_owned(),
            device: device.to_owned(),
        })
    }

    /// Reads the name back from an MLS credential of another member.
    pub fn from_credential(credential: &Credential) -> Result<Self, IdentityError> {
        let basic = BasicCredential::try_from(credential.clone())
            .map_err(|_| IdentityError::ForeignCredential)?;
        let text =
            std::str::from_utf8(basic.identity()).map_err(|_| IdentityError::ForeignCredential)?;
        let (user, device) = text
            .rsplit_once('/')
            .ok_or(IdentityError::ForeignCredential)?;
        Self::new(user, device).map_err(|_| IdentityError::ForeignCredential)
    }

    /// The MLS credential carrying this name.
    pub fn credential(&self) -> Credential {
        BasicCredential::new(self.to_string().into_bytes()).into()
    }
}

impl std::fmt::Display for DeviceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.user, self.device)
    }
}

fn validate_name(what: &'static str, name: &str) -> Result<(), IdentityError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && c != '/');
    if ok {
        Ok(())
    } else {
        Err(IdentityError::InvalidName {
            what,
            name: name.to_owned(),
        })
    }
}

/// A device's own identity: its name and its signature key pair.
#[derive(Debug)]
pub struct Identity {
    pub name: DeviceName,
    pub signer: SignatureKeyPair,
}

impl Identity {
    /// Makes a fresh signature key for `name`.
    pub fn generate(name: DeviceName) -> Self {
        let signer = SignatureKeyPair::new(SIGNATURE_SCHEME)
            .expect("Ed25519 key generation does not fail with the RustCrypto provider");
        Self { name, signer }
    }

    /// The credential and public key that go into our leaf nodes and KeyPackages.
    pub fn credential_with_key(&self) -> CredentialWithKey {
        CredentialWithKey {
            credential: self.name.credential(),
            signature_key: self.signer.public().into(),
        }
    }

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_signature_key(self.signer.public())
    }

    /// The 32-byte Ed25519 seed of our signature key, for the certificate peers know us by
    /// (`crate::direct`). OpenMLS hands the private key only to its own tests, so it is read
    /// from the key pair's TLS encoding: `private<V>`, `public<V>`, `signature_scheme`.
    pub fn signing_seed(&self) -> [u8; 32] {
        use tls_codec::{DeserializeBytes as _, Serialize as _, VLBytes};
        let encoded = self
            .signer
            .tls_serialize_detached()
            .expect("a key pair encodes");
        let (private, _) =
            VLBytes::tls_deserialize_bytes(&encoded).expect("it starts with the private key");
        private
            .as_slice()
            .try_into()
            .expect("an Ed25519 private key is its 32-byte seed")
    }
}

/// SHA-256 of a signature public key: what two people compare to know they talk to each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of_signature_key(public_key: &[u8]) -> Self {
        Self(Sha256::digest(public_key).into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// From 64 hex digits, as `to_hex` writes it.
    pub fn from_hex(hex: &str) -> Option<Self> {
        hex::decode(hex).ok()?.try_into().ok().map(Self)
    }

    /// A safety number for a pair of devices, the same whichever side computes it: twelve groups
    /// of five digits, as people read them aloud.
    pub fn safety_number(&self, other: &Fingerprint) -> String {
        let (low, high) = if self <= other {
            (self, other)
        } else {
            (other, self)
        };
        let digest = Sha256::new()
            .chain_update(b"mlschat safety number v1")
            .chain_update(low.0)
            .chain_update(high.0)
            .finalize();
        let mut groups = Vec::with_capacity(12);
        for chunk in digest
            .chunks(5)
            .take(6)
            .chain(digest[2..].chunks(5).take(6))
        {
            let mut n: u64 = 0;
            for byte in chunk {
                n = (n << 8) | u64::from(*byte);
            }
            groups.push(format!("{:05}", n % 100_000));
        }
        groups.join(" ")
    }
}

impl std::fmt::Display for Fingerprint {
    /// Hex in groups of four, so it can be read aloud and compared in chunks.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex = self.to_hex();
        let groups: Vec<&str> = (0..hex.len()).step_by(4).map(|i| &hex[i..i + 4]).collect();
        f.write_str(&groups.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_separators_or_blanks_are_refused() {
        assert!(DeviceName::new("alice", "laptop").is_ok());
        assert!(DeviceName::new("alice@example.org", "phone-2").is_ok());
        for (user, device) in [
            ("", "x"),
            ("a/b", "x"),
            ("alice", "my laptop"),
            ("a\n", "x"),
        ] {
            assert!(
                DeviceName::new(user, device).is_err(),
                "{user:?}/{device:?}"
            );
        }
    }

    #[test]
    fn credential_round_trips_the_device_name() {
        let name = DeviceName::new("alice@example.org", "laptop").unwrap();
        assert_eq!(
            DeviceName::from_credential(&name.credential()).unwrap(),
            name
        );
    }

    #[test]
    fn safety_number_is_symmetric_and_depends_on_both_keys() {
        let a = Fingerprint::of_signature_key(b"a");
        let b = Fingerprint::of_signature_key(b"b");
        let c = Fingerprint::of_signature_key(b"c");
        assert_eq!(a.safety_number(&b), b.safety_number(&a));
        assert_ne!(a.safety_number(&b), a.safety_number(&c));
        assert_eq!(a.safety_number(&b).split(' ').count(), 12);
    }
}
