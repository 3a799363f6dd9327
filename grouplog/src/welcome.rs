//! What a store learns of a Welcome it cannot open.

use mlschat_wire::WelcomeFor;
use openmls::prelude::{MlsMessageBodyIn, MlsMessageIn};
use tls_codec::Deserialize as _;

use crate::NewWelcome;

/// Why a Welcome cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedWelcome(pub &'static str);

/// A Welcome as a log stores it, if it is one: an `MLSMessage` holding an MLS Welcome with
/// group secrets for at least one KeyPackage, and a tree key. Nobody but its recipient can open
/// it, but it names the KeyPackageRefs it is encrypted to, and a Welcome must be for a package
/// its recipient gave the committer ([`crate::GroupLog::post_commit`] checks).
pub fn parse_welcome(w: &WelcomeFor) -> Result<NewWelcome, MalformedWelcome> {
    let message = MlsMessageIn::tls_deserialize_exact(w.welcome.as_slice())
        .map_err(|_| MalformedWelcome("a Welcome is not an MLS message"))?;
    let MlsMessageBodyIn::Welcome(welcome) = message.extract() else {
        return Err(MalformedWelcome("a Welcome is not an MLS Welcome"));
    };
    let references: Vec<Vec<u8>> = welcome
        .secrets()
        .iter()
        .map(|s| s.new_member().as_slice().to_vec())
        .collect();
    if references.is_empty() {
        return Err(MalformedWelcome("a Welcome holds no group secrets"));
    }
    if w.tree_key.as_slice().is_empty() {
        return Err(MalformedWelcome("a Welcome comes without its tree key"));
    }
    Ok(NewWelcome {
        recipient: w.recipient,
        welcome: w.welcome.as_slice().to_vec(),
        tree_key: w.tree_key.as_slice().to_vec(),
        references,
    })
}
