//! Names for the string formats of the daemon's answers and the CLI's reports, so that their
//! generated JSON Schema (`docs/json-output.schema.json`) says what a string holds. A field
//! keeps its Rust type (`String`) and borrows one of these for its schema
//! (`#[schemars(with = "FingerprintHex")]`).

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

/// The SHA-256 fingerprint of a signature key, in hex.
pub struct FingerprintHex;

impl JsonSchema for FingerprintHex {
    fn schema_name() -> Cow<'static, str> {
        "FingerprintHex".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[0-9a-f]{64}$",
            "description": "The SHA-256 fingerprint of a signature key, in hex.",
        })
    }
}

/// An MLS group id, in hex.
pub struct GroupIdHex;

impl JsonSchema for GroupIdHex {
    fn schema_name() -> Cow<'static, str> {
        "GroupIdHex".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[0-9a-f]+$",
            "description": "An MLS group id, in hex.",
        })
    }
}
