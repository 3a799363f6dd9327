//! Ratchet trees for joiners, sealed so that the delivery node can neither read them nor hand
//! them to strangers (PROTOCOL.md §5, "Trees for joiners"): the committer draws a fresh tree
//! secret for each commit that adds members, encrypts the tree under a key derived from it, and
//! seals the secret to each joiner's KeyPackage init key (HPKE) beside its Welcome. The node
//! keeps the sealed tree and a hash of an access value, also derived from the secret, and
//! serves the tree only to whoever presents that value.

use openmls::prelude::{KeyPackage, MlsMessageBodyIn, MlsMessageIn};
use openmls::prelude::{KeyPackageBundle, tls_codec::Deserialize as _, tls_codec::Serialize as _};
use openmls_traits::OpenMlsProvider;
use openmls_traits::crypto::OpenMlsCrypto;
use openmls_traits::random::OpenMlsRand;
use openmls_traits::storage::StorageProvider as _;
use openmls_traits::types::HpkeCiphertext;
use sha2::{Digest, Sha256};

use crate::engine::CIPHERSUITE;

const KEY_LABEL: &[u8] = b"mlschat tree key";
const ACCESS_LABEL: &[u8] = b"mlschat tree access";
const SEAL_INFO: &[u8] = b"mlschat tree secret";

/// Why a sealed tree or tree secret could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the tree secret is not sealed to any KeyPackage of ours")]
    NotForUs,
    #[error("the Welcome could not be read")]
    BadWelcome,
    #[error("the sealed tree or tree secret does not open")]
    DoesNotOpen,
    #[error("sealing failed: {0}")]
    Crypto(String),
}

/// The secret of one commit's tree.
#[derive(Clone, PartialEq, Eq)]
pub struct TreeSecret([u8; 32]);

impl std::fmt::Debug for TreeSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TreeSecret(..)")
    }
}

/// What the group's id and the epoch a tree belongs to bind every ciphertext to.
fn context(group_id: &[u8], epoch: u64) -> Vec<u8> {
    let mut aad = group_id.to_vec();
    aad.extend_from_slice(&epoch.to_be_bytes());
    aad
}

fn derive(label: &[u8], secret: &[u8; 32]) -> [u8; 32] {
    Sha256::new()
        .chain_update(label)
        .chain_update(secret)
        .finalize()
        .into()
}

impl TreeSecret {
    pub fn random(rand: &impl OpenMlsRand) -> Result<Self, SealError> {
        rand.random_array()
            .map(Self)
            .map_err(|e| SealError::Crypto(format!("{e:?}")))
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// What a joiner presents to fetch the tree (the node keeps its SHA-256).
    pub fn access(&self) -> [u8; 32] {
        derive(ACCESS_LABEL, &self.0)
    }

    fn key(&self) -> Vec<u8> {
        derive(KEY_LABEL, &self.0)[..CIPHERSUITE.aead_key_length()].to_vec()
    }

    /// The tree of `epoch` in `group_id`, encrypted (the key is used once: the nonce is zero).
    pub fn seal_tree(
        &self,
        crypto: &impl OpenMlsCrypto,
        group_id: &[u8],
        epoch: u64,
        tree: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let nonce = vec![0u8; CIPHERSUITE.aead_nonce_length()];
        crypto
            .aead_encrypt(
                CIPHERSUITE.aead_algorithm(),
                &self.key(),
                tree,
                &nonce,
                &context(group_id, epoch),
            )
            .map_err(|e| SealError::Crypto(format!("{e:?}")))
    }

    pub fn open_tree(
        &self,
        crypto: &impl OpenMlsCrypto,
        group_id: &[u8],
        epoch: u64,
        sealed: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let nonce = vec![0u8; CIPHERSUITE.aead_nonce_length()];
        crypto
            .aead_decrypt(
                CIPHERSUITE.aead_algorithm(),
                &self.key(),
                sealed,
                &nonce,
                &context(group_id, epoch),
            )
            .map_err(|_| SealError::DoesNotOpen)
    }

    /// The secret sealed to the init key of the joiner's `key_package`.
    pub fn seal_to(
        &self,
        crypto: &impl OpenMlsCrypto,
        key_package: &KeyPackage,
        group_id: &[u8],
        epoch: u64,
    ) -> Result<Vec<u8>, SealError> {
        let sealed = crypto
            .hpke_seal(
                CIPHERSUITE.hpke_config(),
                key_package.hpke_init_key().as_slice(),
                SEAL_INFO,
                &context(group_id, epoch),
                &self.0,
            )
            .map_err(|e| SealError::Crypto(format!("{e:?}")))?;
        sealed
            .tls_serialize_detached()
            .map_err(|e| SealError::Crypto(e.to_string()))
    }

    /// Opens a secret sealed to us beside `welcome`, with the private init key of the
    /// KeyPackage the Welcome is for (before joining, which deletes it).
    pub fn open_for<P: OpenMlsProvider>(
        provider: &P,
        welcome: &[u8],
        sealed: &[u8],
        group_id: &[u8],
        epoch: u64,
    ) -> Result<Self, SealError> {
        let message =
            MlsMessageIn::tls_deserialize_exact(welcome).map_err(|_| SealError::BadWelcome)?;
        let MlsMessageBodyIn::Welcome(welcome) = message.extract() else {
            return Err(SealError::BadWelcome);
        };
        let sealed =
            HpkeCiphertext::tls_deserialize_exact(sealed).map_err(|_| SealError::DoesNotOpen)?;
        let bundle = welcome
            .secrets()
            .iter()
            .find_map(|secrets| {
                let bundle: Option<KeyPackageBundle> =
                    provider.storage().key_package(&secrets.new_member()).ok()?;
                bundle
            })
            .ok_or(SealError::NotForUs)?;
        let secret = provider
            .crypto()
            .hpke_open(
                CIPHERSUITE.hpke_config(),
                &sealed,
                bundle.init_private_key(),
                SEAL_INFO,
                &context(group_id, epoch),
            )
            .map_err(|_| SealError::DoesNotOpen)?;
        Self::from_bytes(&secret).ok_or(SealError::DoesNotOpen)
    }
}
