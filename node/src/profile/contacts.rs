//! Whom we know: our home delivery node, invite codes, and contacts whose keys we check.
//!
//! A contact is added from an invite code and never silently replaced: a code, a claimed
//! KeyPackage or a group member with the contact's name and another key flags the contact.

use openmls::prelude::KeyPackage;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use mlschat_wire::ClientId;
use mlschat_wire::token::client_id;

use super::{ContactError, Profile, ProfileError};
use crate::discovery::DiscoveryKey;
use crate::engine::{self, MemberInfo};
use crate::identity::{DeviceName, Fingerprint};

/// Our delivery node: where our groups' logs and our mailbox are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    /// `host:port` of its QUIC endpoint.
    pub address: String,
    /// SHA-256 of its certificate, pinned.
    pub fingerprint: [u8; 32],
    /// The operator's invite token; empty where registration is open.
    pub invite: Vec<u8>,
}

/// Everything someone needs to add us: who we are and how to reach our delivery node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteCode {
    pub name: DeviceName,
    pub signature_key: Vec<u8>,
    pub home: Home,
    /// The public half of their discovery key (`crate::discovery`), if their code has one.
    pub discovery: Option<[u8; 32]>,
}

const INVITE_PREFIX: &str = "mlschat:invite?";

/// A field value as it goes into a code: every byte but unreserved ones (RFC 3986) and `/`, `:`
/// is percent-encoded, so that no name can smuggle in a `&` or `=` of its own.
fn encode_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' | b':' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn decode_component(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl std::fmt::Display for InviteCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{INVITE_PREFIX}name={}&key={}&node={}&pin={}",
            encode_component(&self.name.to_string()),
            hex::encode(&self.signature_key),
            encode_component(&self.home.address),
            hex::encode(self.home.fingerprint)
        )?;
        if let Some(discovery) = self.discovery {
            write!(f, "&disc={}", hex::encode(discovery))?;
        }
        Ok(())
    }
}

impl std::str::FromStr for InviteCode {
    type Err = ProfileError;

    fn from_str(code: &str) -> Result<Self, ProfileError> {
        let bad = |why: &str| ProfileError::from(ContactError::BadInviteCode(why.to_owned()));
        let fields = code
            .trim()
            .strip_prefix(INVITE_PREFIX)
            .ok_or_else(|| bad("it must start with mlschat:invite?"))?;
        let (mut name, mut key, mut node, mut pin, mut disc) = (None, None, None, None, None);
        for field in fields.split('&') {
            let (k, v) = field.split_once('=').ok_or_else(|| bad(field))?;
            let slot = match k {
                "name" => &mut name,
                "key" => &mut key,
                "node" => &mut node,
                "pin" => &mut pin,
                "disc" => &mut disc,
                _ => continue, // newer versions may add fields
            };
            if slot.is_some() {
                return Err(bad(&format!("{k} is given twice")));
            }
            let value = decode_component(v).ok_or_else(|| bad(&format!("{k} is badly encoded")))?;
            *slot = Some(value);
        }
        let name = name.ok_or_else(|| bad("no name"))?;
        let (user, device) = name
            .rsplit_once('/')
            .ok_or_else(|| bad("name is not user/device"))?;
        let name = DeviceName::new(user, device).map_err(|e| bad(&e.to_string()))?;
        let signature_key = hex::decode(key.ok_or_else(|| bad("no key"))?)
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or_else(|| bad("key is not 32 bytes of hex"))?;
        let fingerprint = hex::decode(pin.ok_or_else(|| bad("no pin"))?)
            .ok()
            .and_then(|p| <[u8; 32]>::try_from(p).ok())
            .ok_or_else(|| bad("pin is not 32 bytes of hex"))?;
        let address = node.ok_or_else(|| bad("no node"))?;
        let discovery = disc
            .map(|d| {
                hex::decode(d)
                    .ok()
                    .and_then(|d| <[u8; 32]>::try_from(d).ok())
                    .ok_or_else(|| bad("disc is not 32 bytes of hex"))
            })
            .transpose()?;
        Ok(Self {
            name,
            signature_key,
            home: Home {
                address,
                fingerprint,
                invite: Vec::new(),
            },
            discovery,
        })
    }
}

/// Someone we can add by name.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    /// `user/device`.
    pub name: String,
    #[schemars(with = "crate::schema::FingerprintHex")]
    pub fingerprint: String,
    /// Their delivery node's address, if their code named one.
    pub node: String,
    /// Whether our user compared safety numbers with them (`contact verify`).
    pub verified: bool,
    /// Why this contact must be checked before it is used again, if it must.
    pub flagged: Option<String>,
    /// The other key we were shown for them (fingerprint), to review with `contact verify`.
    #[schemars(with = "Option<crate::schema::FingerprintHex>")]
    pub offered_fingerprint: Option<String>,
    #[serde(skip)]
    pub signature_key: Vec<u8>,
    #[serde(skip)]
    pub offered_key: Option<Vec<u8>>,
    /// The public half of their discovery key, from their invite code.
    #[serde(skip)]
    pub discovery: Option<[u8; 32]>,
}

impl Contact {
    pub fn client_id(&self) -> ClientId {
        client_id(&self.signature_key)
    }
}

/// Who wrote something, as far as our contacts tell: shown beside every sender, so that a
/// stranger who took a contact's name cannot pass for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SenderState {
    /// Us.
    Me,
    /// A contact whose safety number our user compared with them.
    Verified,
    /// A contact: the name and the key are the ones we added, not verified.
    Contact,
    /// Not a contact, and not using a contact's name.
    Unknown,
    /// Using a contact's name with another key: not that person.
    Impostor,
}

impl SenderState {
    /// Who `name` is, as a person must read it: an impostor is never taken for the contact.
    pub fn describe(self, name: &str) -> String {
        match self {
            SenderState::Me => format!("{name} (you)"),
            SenderState::Verified => format!("{name} (your verified contact)"),
            SenderState::Contact => format!("{name} (your contact)"),
            SenderState::Unknown => format!("{name} (not a contact)"),
            SenderState::Impostor => format!("{name} (NOT your contact {name}: another key)"),
        }
    }
}

/// Our contacts' names and fingerprints, to judge senders by.
#[derive(Debug, Default)]
pub struct SenderStates {
    me: Vec<u8>,
    /// Whether each contact's key was verified, by fingerprint.
    by_fingerprint: std::collections::HashMap<Vec<u8>, bool>,
    /// The confusable skeleton (Unicode TS #39) of each contact's name: a sender whose name
    /// looks like a contact's (`аlice/laptop` with a Cyrillic `а`, or the very same name) but
    /// who has another key is an impostor.
    skeletons: std::collections::HashSet<String>,
}

/// What a name looks like to a person: names with equal skeletons are confusable.
fn skeleton(name: &str) -> String {
    unicode_security::skeleton(name).collect()
}

impl SenderStates {
    /// The state of a sender shown as `name` (`user/device`) with this key `fingerprint`.
    pub fn of(&self, name: &str, fingerprint: &[u8]) -> SenderState {
        if fingerprint == self.me.as_slice() {
            return SenderState::Me;
        }
        match self.by_fingerprint.get(fingerprint) {
            Some(true) => SenderState::Verified,
            Some(false) => SenderState::Contact,
            None if self.skeletons.contains(&skeleton(name)) => SenderState::Impostor,
            None => SenderState::Unknown,
        }
    }
}

/// Who may add us to a group without asking our user: contacts (not impostors), and members
/// of a group of ours that broke, who start it again (`sync` continuations). Anyone else's
/// Welcome waits as a request.
#[derive(Debug)]
pub struct Admission {
    states: SenderStates,
    fellows: Vec<Fingerprint>,
}

impl Admission {
    /// `None` when the inviter shown as `name` with key `fingerprint` is admitted; else what
    /// they are to us (unknown, or an impostor).
    pub fn refuses(&self, name: &str, fingerprint: &Fingerprint) -> Option<SenderState> {
        match self.states.of(name, &fingerprint.0) {
            SenderState::Me | SenderState::Contact | SenderState::Verified => None,
            SenderState::Unknown if self.fellows.contains(fingerprint) => None,
            other => Some(other),
        }
    }
}

impl Profile {
    /// Whom a Welcome from our mailbox may come from, for [`Admission::refuses`].
    pub(super) fn admission(&mut self) -> Result<Admission, ProfileError> {
        let fellows = self
            .broken_groups()?
            .into_iter()
            .flat_map(|(_, members, _)| members)
            .map(|m| m.fingerprint)
            .collect();
        Ok(Admission {
            states: self.sender_states()?,
            fellows,
        })
    }

    /// Sets (or replaces) our delivery node.
    pub fn set_home(&mut self, home: &Home) -> Result<(), ProfileError> {
        self.store.transaction(|| {
            self.store.conn().execute(
                "INSERT INTO home (id, address, fingerprint, invite) VALUES (1, ?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET address = ?1, fingerprint = ?2, invite = ?3",
                params![home.address, home.fingerprint, home.invite],
            )?;
            Ok::<_, ProfileError>(())
        })
    }

    pub fn home(&self) -> Result<Option<Home>, ProfileError> {
        let row = self
            .store
            .conn()
            .query_row(
                "SELECT address, fingerprint, invite FROM home WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get::<_, Vec<u8>>(1)?, r.get(2)?)),
            )
            .optional()?;
        row.map(|(address, fingerprint, invite)| {
            Ok(Home {
                address,
                fingerprint: fingerprint
                    .try_into()
                    .map_err(|_| ProfileError::Corrupt("home fingerprint".into()))?,
                invite,
            })
        })
        .transpose()
    }

    /// Our invite code, for others to add us as a contact.
    /// Our discovery key (`crate::discovery`): made with the profile, or, for a profile made
    /// before discovery keys, the first time it is needed.
    pub fn discovery_key(&self) -> Result<DiscoveryKey, ProfileError> {
        let conn = self.store.conn();
        let kept: Option<Vec<u8>> =
            conn.query_row("SELECT discovery_key FROM profile WHERE id = 1", [], |r| {
                r.get(0)
            })?;
        if let Some(secret) = kept.and_then(|k| <[u8; 32]>::try_from(k).ok()) {
            return Ok(DiscoveryKey::from_bytes(secret));
        }
        let key = DiscoveryKey::generate();
        conn.execute(
            "UPDATE profile SET discovery_key = ?1 WHERE id = 1",
            [&key.to_bytes()[..]],
        )?;
        Ok(key)
    }

    pub fn invite_code(&self) -> Result<InviteCode, ProfileError> {
        let identity = self.identity();
        Ok(InviteCode {
            name: identity.name.clone(),
            signature_key: identity.signer.public().to_vec(),
            home: self.home()?.ok_or(ProfileError::NoHome)?,
            discovery: Some(self.discovery_key()?.public()),
        })
    }

    /// Adds a contact from their invite code. The same code again is a no-op; a code with the
    /// same name but another key flags the contact rather than replacing the key.
    pub fn add_contact(&mut self, code: &InviteCode) -> Result<Contact, ProfileError> {
        let name = code.name.to_string();
        if let Ok(known) = self.contact(&name) {
            if known.signature_key != code.signature_key {
                let why = format!(
                    "an invite code for {name} carries another key ({}) than the one we have ({})",
                    Fingerprint::of_signature_key(&code.signature_key).to_hex(),
                    known.fingerprint
                );
                self.flag_contact(&name, &why, Some(&code.signature_key))?;
                return Err(ProfileError::ContactFlagged(name, why));
            }
            return Ok(known);
        }
        let home = self.home()?.ok_or(ProfileError::NoHome)?;
        if code.home.fingerprint != home.fingerprint {
            let theirs = code.home.address.clone();
            let ours = home.address;
            return Err(ContactError::OtherNode { name, theirs, ours }.into());
        }
        self.store.conn().execute(
            "INSERT INTO contacts
             (name, signature_key, address, node_fingerprint, added_at, discovery_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                name,
                code.signature_key,
                code.home.address,
                code.home.fingerprint,
                self.now(),
                code.discovery.as_ref().map(|d| &d[..])
            ],
        )?;
        self.contact(&name)
    }

    pub fn contacts(&self) -> Result<Vec<Contact>, ProfileError> {
        let mut stmt = self.store.conn().prepare(&format!(
            "SELECT {CONTACT_COLUMNS} FROM contacts ORDER BY name"
        ))?;
        let rows = stmt.query_map([], contact_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// What judging senders needs: our own fingerprint and our contacts'.
    pub fn sender_states(&self) -> Result<SenderStates, ProfileError> {
        let mut states = SenderStates {
            me: self.identity().fingerprint().0.to_vec(),
            ..SenderStates::default()
        };
        for c in self.contacts()? {
            let fingerprint = Fingerprint::of_signature_key(&c.signature_key).0.to_vec();
            states.by_fingerprint.insert(fingerprint, c.verified);
            states.skeletons.insert(skeleton(&c.name));
        }
        Ok(states)
    }

    /// A contact by `user/device`, or by `user` when that is unambiguous.
    pub fn contact(&self, name: &str) -> Result<Contact, ProfileError> {
        let mut stmt = self.store.conn().prepare_cached(&contact_by_name())?;
        let found: Vec<Contact> = stmt
            .query_map([name], contact_row)?
            .collect::<Result<_, _>>()?;
        match <[Contact; 1]>::try_from(found) {
            Ok([one]) => Ok(one),
            Err(v) if v.is_empty() => Err(ProfileError::UnknownContact(name.into())),
            Err(v) => match v.into_iter().find(|c| c.name == name) {
                Some(exact) => Ok(exact),
                None => Err(ProfileError::Ambiguous(name.into(), "contact")),
            },
        }
    }

    /// Flags a contact: it stays as it was until our user compares safety numbers with its
    /// owner (`contact verify`). `other_key`, when we were offered one (a new invite code, a
    /// KeyPackage), is the key that comparison is about; else it is about the key we have.
    fn flag_contact(
        &self,
        name: &str,
        why: &str,
        other_key: Option<&[u8]>,
    ) -> Result<(), ProfileError> {
        self.store.conn().execute(
            "UPDATE contacts SET flagged = ?2, offered_key = coalesce(?3, offered_key)
             WHERE name = ?1",
            params![name, why, other_key],
        )?;
        Ok(())
    }

    /// What to compare with a contact in person: the safety number of our key and theirs (the
    /// key they were flagged with, when there is one: that is the key to review).
    pub fn safety_number(&self, name: &str) -> Result<SafetyNumber, ProfileError> {
        let contact = self.contact(name)?;
        let key = contact
            .offered_key
            .as_deref()
            .unwrap_or(&contact.signature_key);
        let theirs = Fingerprint::of_signature_key(key);
        Ok(SafetyNumber {
            safety_number: self.identity().fingerprint().safety_number(&theirs),
            fingerprint: theirs.to_hex(),
            changed_key: contact.offered_key.is_some(),
            verified: contact.verified && contact.offered_key.is_none(),
            contact: contact.name,
        })
    }

    /// Records that our user compared `number` with the contact and it matched: the contact is
    /// verified, and a changed key under review becomes theirs. The number must be the one
    /// [`Self::safety_number`] gives now, so a key that changed meanwhile is never accepted.
    pub fn verify_contact(&mut self, name: &str, number: &str) -> Result<Contact, ProfileError> {
        let shown = self.safety_number(name)?;
        let digits = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
        if digits(number) != digits(&shown.safety_number) {
            return Err(ContactError::WrongSafetyNumber(shown.contact).into());
        }
        self.store.conn().execute(
            "UPDATE contacts SET signature_key = coalesce(offered_key, signature_key),
                 offered_key = NULL, flagged = NULL, verified_at = ?2
             WHERE name = ?1",
            params![shown.contact, self.now()],
        )?;
        self.contact(&shown.contact)
    }

    /// Forgets a contact (e.g. one flagged for a key that turned out not to be theirs).
    pub fn remove_contact(&mut self, name: &str) -> Result<Contact, ProfileError> {
        let contact = self.contact(name)?;
        self.store
            .conn()
            .execute("DELETE FROM contacts WHERE name = ?1", [&contact.name])?;
        Ok(contact)
    }

    /// Checks a KeyPackage claimed for `contact`: it must be valid and carry the contact's key
    /// and name. Anything else flags the contact.
    pub fn check_claimed(
        &self,
        contact: &Contact,
        key_package: &[u8],
    ) -> Result<KeyPackage, ProfileError> {
        if let Some(why) = &contact.flagged {
            return Err(ProfileError::ContactFlagged(
                contact.name.clone(),
                why.clone(),
            ));
        }
        let package = engine::validate_key_package(&self.crypto, key_package)?;
        let leaf = package.leaf_node();
        let name = DeviceName::from_credential(leaf.credential()).map(|n| n.to_string());
        if leaf.signature_key().as_slice() != contact.signature_key.as_slice()
            || name.as_deref().ok() != Some(contact.name.as_str())
        {
            let why = format!(
                "the node handed out a KeyPackage for {} with another key or name ({})",
                contact.name,
                Fingerprint::of_signature_key(leaf.signature_key().as_slice()).to_hex()
            );
            self.flag_contact(&contact.name, &why, Some(leaf.signature_key().as_slice()))?;
            return Err(ProfileError::ContactFlagged(contact.name.clone(), why));
        }
        Ok(package)
    }

    /// Someone added under a contact's name but with another key: flag the contact.
    /// Checks a KeyPackage claimed for a member we knew by `fingerprint` (a group started
    /// again): it must be valid and carry that member's key.
    pub fn check_claimed_member(
        &self,
        fingerprint: &Fingerprint,
        key_package: &[u8],
    ) -> Result<KeyPackage, ProfileError> {
        let package = engine::validate_key_package(&self.crypto, key_package)?;
        let key = package.leaf_node().signature_key().as_slice();
        if Fingerprint::of_signature_key(key) != *fingerprint {
            return Err(ContactError::ForeignKeyPackage(fingerprint.to_hex()).into());
        }
        Ok(package)
    }

    pub(super) fn check_members_against_contacts(
        &self,
        added: &[MemberInfo],
    ) -> Result<(), ProfileError> {
        for member in added {
            let Some(name) = &member.name else { continue };
            let Ok(contact) = self.contact(&name.to_string()) else {
                continue;
            };
            let fingerprint = member.fingerprint.to_hex();
            if contact.fingerprint != fingerprint && contact.flagged.is_none() {
                let why = format!(
                    "{name} was added to a group with another key ({fingerprint}) than ours"
                );
                // Most likely someone else using the name (shown as an impostor): the review is
                // of the key we have.
                self.flag_contact(&contact.name, &why, None)?;
            }
        }
        Ok(())
    }
}

/// A contact's safety number, as `contact verify` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SafetyNumber {
    pub contact: String,
    /// Twelve groups of five digits, the same on both sides.
    #[schemars(pattern("^[0-9]{5}( [0-9]{5}){11}$"))]
    pub safety_number: String,
    /// The fingerprint of the key it was computed with.
    #[schemars(with = "crate::schema::FingerprintHex")]
    pub fingerprint: String,
    /// Whether that key is a changed one under review (the contact is flagged).
    pub changed_key: bool,
    /// Whether this number was verified before.
    pub verified: bool,
}

const CONTACT_COLUMNS: &str =
    "name, signature_key, address, flagged, verified_at, offered_key, discovery_key";

/// The contact named `?1` exactly, and every device of a user `?1`: names from `?1/` up to
/// (not including) `?1` followed by `0`, the character after `/`. Both are ranges of the
/// primary key; a `substr` test here read every contact, once per lookup, and an add of 100
/// members makes 300 lookups: a second with 10,000 contacts (the load tool found it).
fn contact_by_name() -> String {
    format!(
        "SELECT {CONTACT_COLUMNS} FROM contacts
         WHERE name = ?1 OR (name >= ?1 || '/' AND name < ?1 || '0')"
    )
}

fn contact_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Contact> {
    let signature_key: Vec<u8> = r.get(1)?;
    let offered_key: Option<Vec<u8>> = r.get(5)?;
    let discovery: Option<Vec<u8>> = r.get(6)?;
    Ok(Contact {
        name: r.get(0)?,
        fingerprint: Fingerprint::of_signature_key(&signature_key).to_hex(),
        node: r.get(2)?,
        verified: r.get::<_, Option<i64>>(4)?.is_some(),
        flagged: r.get(3)?,
        offered_fingerprint: offered_key
            .as_deref()
            .map(|k| Fingerprint::of_signature_key(k).to_hex()),
        signature_key,
        offered_key,
        discovery: discovery.and_then(|d| d.try_into().ok()),
    })
}

/// Raises an alert when `sender` uses a contact's name with another key (once an hour for
/// each such key): what they write is shown as theirs, never as the contact's.
pub(super) fn notice_impostor(
    conn: &rusqlite::Connection,
    group: &openmls::prelude::GroupId,
    sender: &MemberInfo,
    at: i64,
) -> Result<(), ProfileError> {
    let Some(name) = &sender.name else {
        return Ok(());
    };
    let key: Option<Vec<u8>> = conn
        .prepare_cached("SELECT signature_key FROM contacts WHERE name = ?1")?
        .query_row([name.to_string()], |r| r.get(0))
        .optional()?;
    let Some(key) = key else {
        return Ok(());
    };
    if Fingerprint::of_signature_key(&key) == sender.fingerprint {
        return Ok(());
    }
    let text = format!(
        "someone who is not your contact {name} uses that name in group {} (their key {}): \
         what they write is not from {name}",
        hex::encode(group.as_slice()),
        sender.fingerprint
    );
    let kind = format!("impostor:{}", sender.fingerprint.to_hex());
    super::alerts::raise_alert(conn, &kind, &text, at as u64)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 18, finding 7: `аlice` (a Cyrillic `а`) beside the contact `alice` was shown only
    /// as "not a contact". A name that looks like a contact's, with another key, is an impostor.
    #[test]
    fn a_look_alike_of_a_contacts_name_is_an_impostor() {
        let mut states = SenderStates {
            me: vec![0; 32],
            ..SenderStates::default()
        };
        states.by_fingerprint.insert(vec![1; 32], false);
        states.skeletons.insert(skeleton("alice/laptop"));
        let other_key = [2; 32];
        for look_alike in [
            "alice/laptop",
            "\u{430}lice/laptop",   // Cyrillic а
            "a\u{2060}lice/laptop", // an invisible joiner
            "\u{251}lice/laptop",   // Latin alpha
            "alice/\u{217c}aptop",  // Roman numeral fifty for the l
        ] {
            assert_eq!(
                states.of(look_alike, &other_key),
                SenderState::Impostor,
                "{look_alike:?}"
            );
        }
        assert_eq!(states.of("bob/laptop", &other_key), SenderState::Unknown);
        assert_eq!(
            states.of("\u{430}lice/laptop", &[1; 32]),
            SenderState::Contact
        );
        assert_eq!(states.of("alice/laptop", &[0; 32]), SenderState::Me);
    }

    fn code(user: &str, address: &str) -> InviteCode {
        InviteCode {
            name: DeviceName::new(user, "laptop").unwrap(),
            signature_key: vec![7; 32],
            home: Home {
                address: address.to_owned(),
                fingerprint: [9; 32],
                invite: Vec::new(),
            },
            discovery: Some([5; 32]),
        }
    }

    /// Codes carry the discovery key (`disc=`) when they have one; older codes without it
    /// still parse, and a malformed key is refused.
    #[test]
    fn the_discovery_key_is_optional_in_a_code() {
        let with = code("alice", "127.0.0.1:4433");
        let text = with.to_string();
        assert!(
            text.contains(&format!("&disc={}", hex::encode([5; 32]))),
            "{text}"
        );
        assert_eq!(text.parse::<InviteCode>().unwrap(), with);
        let older = text.replace(&format!("&disc={}", hex::encode([5; 32])), "");
        let parsed: InviteCode = older.parse().unwrap();
        assert_eq!(parsed.discovery, None);
        assert!(format!("{older}&disc=abcd").parse::<InviteCode>().is_err());
    }

    /// Issue 11, finding 2: a user named `x&name=alice` made a code that parsed as
    /// `alice/laptop` with the attacker's key. Values are percent-encoded now.
    #[test]
    fn a_name_cannot_smuggle_fields_into_a_code() {
        for (user, address) in [
            ("x&name=alice", "127.0.0.1:4433"),
            ("50%", "[::1]:4433"),
            ("zoë#1?", "node.example:4433"),
        ] {
            let original = code(user, address);
            let text = original.to_string();
            assert_eq!(text.matches("name=").count(), 1, "{text}");
            let parsed: InviteCode = text.parse().unwrap();
            assert_eq!(parsed, original, "{text}");
        }
    }

    #[test]
    fn a_contact_is_found_by_name_or_user_through_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let me = DeviceName::new("me", "laptop").unwrap();
        let mut profile = Profile::create(&dir.path().join("p"), me, None).unwrap();
        profile
            .set_home(&code("me", "127.0.0.1:4433").home)
            .unwrap();
        for (user, device, key) in [
            ("bob", "laptop", 1),
            ("bob", "phone", 2),
            ("bobby", "laptop", 3),
            ("bob.x", "laptop", 4),
            ("carol", "laptop", 5),
        ] {
            let mut code = code(user, "127.0.0.1:4433");
            code.name = DeviceName::new(user, device).unwrap();
            code.signature_key = vec![key; 32];
            profile.add_contact(&code).unwrap();
        }
        let found = |name: &str| profile.contact(name).map(|c| c.name);
        assert_eq!(found("bob/phone").unwrap(), "bob/phone");
        assert_eq!(found("bobby").unwrap(), "bobby/laptop");
        assert_eq!(found("bob.x").unwrap(), "bob.x/laptop");
        assert_eq!(found("carol").unwrap(), "carol/laptop");
        assert!(matches!(found("bob"), Err(ProfileError::Ambiguous(..))));
        assert!(matches!(found("bo"), Err(ProfileError::UnknownContact(_))));
        assert!(matches!(
            found("dave"),
            Err(ProfileError::UnknownContact(_))
        ));
        // No step of the lookup reads the whole table.
        let plan: Vec<String> = profile
            .store
            .conn()
            .prepare(&format!("EXPLAIN QUERY PLAN {}", contact_by_name()))
            .unwrap()
            .query_map(["bob"], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            !plan.iter().any(|step| step.starts_with("SCAN")),
            "{plan:?}"
        );
    }

    #[test]
    fn a_field_given_twice_or_badly_encoded_is_refused() {
        let text = code("alice", "127.0.0.1:4433").to_string();
        assert!(
            format!("{text}&name=mallory/laptop")
                .parse::<InviteCode>()
                .is_err()
        );
        let broken = text.replace("name=alice", "name=al%2");
        assert!(broken.parse::<InviteCode>().is_err());
    }
}
