//! `docs/json-output.schema.json`, generated from the types of what `-o json` prints and what
//! the daemon answers: each verb's (or API method's) output is `$defs/<its name>`, and the types
//! they are made of are `$defs/<Type>`. A test keeps the file equal to what the types say;
//! `MLSCHAT_WRITE_SCHEMA=1 cargo test -p mlschat-cli schema` writes it after a change (it is
//! built for that test alone).

use mlschat_node::daemon::{
    Acknowledged, ApiError, Changed, HomeNode, MemberWithState, OurInvite, Posted, Renamed, Status,
    Subscribed, Synced, Whoami,
};
use mlschat_node::profile::{Contact, Event, GroupSummary, HistoryEntry, Invitation, SafetyNumber};
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Value, json};

use crate::output::{Committed, ErrorLine, KeyPackageWritten, Outbox, PacketReport, SentToFiles};

/// One way an output can look.
type Shape = fn(&mut SchemaGenerator) -> Schema;

fn of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// Every output: its name (the verb's API method where it has one), what it is, and the shapes
/// it takes (one of them).
const OUTPUTS: &[(&str, &str, &[Shape])] = &[
    (
        "error",
        "Any failure, on stderr (the exit code follows it; see `mlschat --help`).",
        &[of::<ErrorLine>],
    ),
    (
        "api.error",
        "The daemon API's error object (JSON-RPC 2.0); `data.kind` is the same kind the CLI's \
         exit code follows.",
        &[of::<ApiError>],
    ),
    (
        "whoami",
        "`init` and `whoami`: this device's identity.",
        &[of::<Whoami>],
    ),
    (
        "keypackage",
        "`keypackage`: a KeyPackage was written.",
        &[of::<KeyPackageWritten>],
    ),
    (
        "home",
        "`home set` and `home show`: the delivery node, or nulls when groups are kept in files.",
        &[of::<HomeNode>],
    ),
    (
        "invite",
        "`invite` (API `invite`): our invite code and our key's fingerprint.",
        &[of::<OurInvite>],
    ),
    (
        "group.create",
        "`group create` (API `group.create`): the new group.",
        &[of::<GroupSummary>],
    ),
    (
        "group.add",
        "`group add` (API `group.add`): the group once the commit is accepted (hosted), or what \
         was committed (files).",
        &[of::<Changed>, of::<Committed>],
    ),
    (
        "group.remove",
        "`group remove` (API `group.remove`): the group once the commit is accepted (hosted), or \
         what was committed (files).",
        &[of::<Changed>, of::<Committed>],
    ),
    (
        "group.update",
        "`group update` (API `group.update`): the group once the commit is accepted (hosted), or \
         what was committed (files).",
        &[of::<Changed>, of::<Committed>],
    ),
    (
        "group.set",
        "`group set` (API `group.set`): the group once the commit is accepted (hosted), or what \
         was committed (files).",
        &[of::<Changed>, of::<Committed>],
    ),
    (
        "group.leave",
        "`group leave` (API `group.leave`): hosted, whether the node has our proposal to leave (a \
         member's next commit removes us); in files, the proposal was written.",
        &[of::<Posted>, of::<Committed>],
    ),
    (
        "group.rename",
        "`group rename` (API `group.rename`).",
        &[of::<Renamed>],
    ),
    (
        "groups",
        "`group list` (API `groups`).",
        &[of::<Vec<GroupSummary>>],
    ),
    (
        "members",
        "`group members` (API `members`).",
        &[of::<Vec<MemberWithState>>],
    ),
    (
        "history",
        "`history` (API `history`).",
        &[of::<Vec<HistoryEntry>>],
    ),
    (
        "send",
        "`send` (API `send`): hosted, whether the node has it (`false`: queued, goes out on \
         reconnection); in files, how many packets were written.",
        &[of::<Posted>, of::<SentToFiles>],
    ),
    (
        "sync",
        "`sync` (API `sync`): how many history entries each group got (joins included).",
        &[of::<Synced>],
    ),
    (
        "request.accept",
        "`request accept` (API `request.accept`): joined, then synced.",
        &[of::<Synced>],
    ),
    (
        "outbox",
        "`outbox`: packets written after a crash.",
        &[of::<Outbox>],
    ),
    (
        "contacts",
        "`contact list` (API `contacts`).",
        &[of::<Vec<Contact>>],
    ),
    (
        "contact.add",
        "`contact add` (API `contact.add`).",
        &[of::<Contact>],
    ),
    (
        "contact.remove",
        "`contact remove` (API `contact.remove`): the contact forgotten.",
        &[of::<Contact>],
    ),
    (
        "contact.verify",
        "`contact verify` (API `contact.verify`).",
        &[of::<SafetyNumber>],
    ),
    (
        "requests",
        "`request list` (API `requests`): invitations waiting for our answer.",
        &[of::<Vec<Invitation>>],
    ),
    (
        "request.decline",
        "`request decline` (API `request.decline`): the invitation forgotten.",
        &[of::<Invitation>],
    ),
    (
        "receive",
        "`receive FILES`: one line per packet processed (a failed one is an `error` line on \
         stderr).",
        &[of::<PacketReport>],
    ),
    (
        "receive.follow",
        "`receive --follow`: one line per event of the daemon, as it comes (API notification \
         `event`).",
        &[of::<Event>],
    ),
    (
        "chat",
        "`chat GROUP` through a pipe: the group's history, then each event as it comes.",
        &[of::<HistoryEntry>, of::<Event>],
    ),
    ("status", "`status` (API `status`).", &[of::<Status>]),
    (
        "alerts.ack",
        "`status --ack` (API `alerts.ack`, params `up_to`: an alert id, or none for all).",
        &[of::<Acknowledged>],
    ),
    (
        "subscribe",
        "API `subscribe`: events after `after` follow as `event` notifications (`$defs/Event`).",
        &[of::<Subscribed>],
    ),
    (
        "events",
        "API `events`: events after a given id.",
        &[of::<Vec<Event>>],
    ),
];

/// The whole schema document.
pub fn document() -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator();
    let mut defs = serde_json::Map::new();
    for (name, description, shapes) in OUTPUTS {
        let mut shapes: Vec<Value> = shapes
            .iter()
            .map(|shape| shape(&mut generator).into())
            .collect();
        let mut output = match shapes.len() {
            1 => shapes.remove(0),
            _ => json!({"oneOf": shapes}),
        };
        output["description"] = json!(description);
        defs.insert((*name).to_owned(), output);
    }
    defs.extend(generator.take_definitions(true));
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://mlschat.invalid/json-output.schema.json",
        "title": "mlschat -o json output and daemon API answers",
        "description": "With `-o json` every report of `mlschat` is one JSON object or array per \
            line. Each verb's line is `$defs/<verb>` (its API method name where it has one: the \
            CLI prints the daemon's answer as is); the daemon's JSON-RPC answers have the same \
            shapes. Errors go to stderr as `$defs/error`. `daemon` prints no report. Generated \
            from the types by `cli/src/schema.rs`; checked in CI by tests/tests/json_output.rs, \
            which runs every verb.",
        "$defs": defs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/json-output.schema.json"
    );

    #[test]
    fn the_schema_file_is_what_the_types_say() {
        let generated = serde_json::to_string_pretty(&document()).unwrap() + "\n";
        if std::env::var_os("MLSCHAT_WRITE_SCHEMA").is_some() {
            std::fs::write(FILE, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(FILE).unwrap();
        assert!(
            committed == generated,
            "docs/json-output.schema.json differs from the types: run \
             `MLSCHAT_WRITE_SCHEMA=1 cargo test -p mlschat-cli schema` and commit it"
        );
    }
}
