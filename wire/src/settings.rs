//! A group's shared settings: its name, its topic and who may change its membership, carried in
//! the MLS group context (an extension of private-use type [`EXTENSION_TYPE`]), so that every
//! member, joiners included, sees the same ones, and only a commit can change them.
//!
//! A delivery node cannot read them (it sees ciphertext) and so cannot judge who may add or
//! remove: every member's client does, and refuses a commit that breaks the rules (see the
//! node crate's engine). The rules: adds, removals of others and changes of these settings are
//! proposed by an admin; a member may always propose its own removal (leaving).

use tls_codec::{
    DeserializeBytes as _, Serialize as _, TlsDeserializeBytes, TlsSerialize, TlsSize,
};

/// The extension type, from the range RFC 9420 §17.3 leaves for private use.
pub const EXTENSION_TYPE: u16 = 0xF3C0;

/// The only version of this format so far.
pub const SETTINGS_VERSION: u8 = 1;

/// Bounds that keep the group context small: it is in every commit's transcript and every
/// member's state.
pub const MAX_NAME: usize = 100;
pub const MAX_TOPIC: usize = 1_000;
pub const MAX_ADMINS: usize = 1_000;

/// The SHA-256 fingerprint of an admin's signature key.
pub type AdminKey = [u8; 32];

#[derive(Debug, Clone, PartialEq, Eq, TlsSerialize, TlsDeserializeBytes, TlsSize)]
struct Encoded {
    version: u8,
    name: Vec<u8>,
    topic: Vec<u8>,
    admins: Vec<AdminKey>,
}

/// The shared settings of one group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupSettings {
    pub name: String,
    pub topic: String,
    /// Fingerprints of the admins' signature keys; never empty in a valid group.
    pub admins: Vec<AdminKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("group settings of version {0}, newer than this client reads")]
    Version(u8),
    #[error("malformed group settings")]
    Malformed,
    #[error("a group name is at most {MAX_NAME} bytes")]
    NameTooLong,
    #[error("a group topic is at most {MAX_TOPIC} bytes")]
    TopicTooLong,
    #[error("a group needs at least one admin, and at most {MAX_ADMINS}")]
    Admins,
    #[error("an admin is listed twice")]
    DuplicateAdmin,
}

impl GroupSettings {
    /// Whether the member with this key fingerprint is an admin.
    pub fn is_admin(&self, fingerprint: &AdminKey) -> bool {
        self.admins.contains(fingerprint)
    }

    /// Checks the bounds every member enforces on settings it is shown.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.name.len() > MAX_NAME {
            return Err(SettingsError::NameTooLong);
        }
        if self.topic.len() > MAX_TOPIC {
            return Err(SettingsError::TopicTooLong);
        }
        if self.admins.is_empty() || self.admins.len() > MAX_ADMINS {
            return Err(SettingsError::Admins);
        }
        let mut sorted = self.admins.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != self.admins.len() {
            return Err(SettingsError::DuplicateAdmin);
        }
        Ok(())
    }

    pub fn encode(&self) -> Result<Vec<u8>, SettingsError> {
        self.validate()?;
        Encoded {
            version: SETTINGS_VERSION,
            name: self.name.as_bytes().to_vec(),
            topic: self.topic.as_bytes().to_vec(),
            admins: self.admins.clone(),
        }
        .tls_serialize_detached()
        .map_err(|_| SettingsError::Malformed)
    }

    /// Decodes and validates settings from a group context; anything else is an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, SettingsError> {
        match bytes.first() {
            None => return Err(SettingsError::Malformed),
            Some(&version) if version != SETTINGS_VERSION => {
                return Err(SettingsError::Version(version));
            }
            Some(_) => {}
        }
        let (encoded, rest) =
            Encoded::tls_deserialize_bytes(bytes).map_err(|_| SettingsError::Malformed)?;
        if !rest.is_empty() {
            return Err(SettingsError::Malformed);
        }
        let text = |b: Vec<u8>| String::from_utf8(b).map_err(|_| SettingsError::Malformed);
        let settings = Self {
            name: text(encoded.name)?,
            topic: text(encoded.topic)?,
            admins: encoded.admins,
        };
        settings.validate()?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> GroupSettings {
        GroupSettings {
            name: "team".into(),
            topic: "the launch".into(),
            admins: vec![[1; 32], [2; 32]],
        }
    }

    #[test]
    fn settings_round_trip() {
        let bytes = sample().encode().unwrap();
        assert_eq!(GroupSettings::decode(&bytes).unwrap(), sample());
    }

    #[test]
    fn hostile_settings_are_refused() {
        let bytes = sample().encode().unwrap();
        for cut in 0..bytes.len() {
            assert!(
                GroupSettings::decode(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut newer = bytes.clone();
        newer[0] = 2;
        assert_eq!(
            GroupSettings::decode(&newer),
            Err(SettingsError::Version(2))
        );
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            GroupSettings::decode(&trailing),
            Err(SettingsError::Malformed)
        );
        let no_admin = GroupSettings {
            admins: vec![],
            ..sample()
        };
        assert_eq!(no_admin.encode(), Err(SettingsError::Admins));
        let twice = GroupSettings {
            admins: vec![[1; 32], [1; 32]],
            ..sample()
        };
        assert_eq!(twice.encode(), Err(SettingsError::DuplicateAdmin));
        let long = GroupSettings {
            name: "x".repeat(MAX_NAME + 1),
            ..sample()
        };
        assert_eq!(long.encode(), Err(SettingsError::NameTooLong));
    }
}
