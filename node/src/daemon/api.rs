//! The daemon's API as types: every call with its parameters ([`Call`]), and the error answer
//! ([`RpcError`]). A JSON-RPC request names a call by `method` and gives its `params`; the CLI,
//! the chat and the test harness build the same values. Answers are JSON documented in
//! `docs/json-output.schema.json`.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::kind::ErrorKind;
use crate::profile::ProfileError;
use crate::sync::SyncError;

fn default_limit() -> u32 {
    100
}

/// One call of the API, as `{"method": …, "params": {…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", content = "params")]
pub enum Call {
    /// Who we are, the link to the delivery node, stuck lanes, groups, invitations, alerts.
    #[serde(rename = "status")]
    Status {},
    /// Marks alerts as seen, up to an id (all without one).
    #[serde(rename = "alerts.ack")]
    AlertsAck {
        #[serde(default)]
        up_to: Option<i64>,
    },
    #[serde(rename = "whoami")]
    Whoami {},
    #[serde(rename = "home")]
    Home {},
    #[serde(rename = "invite")]
    Invite {},
    #[serde(rename = "groups")]
    Groups {},
    #[serde(rename = "members")]
    Members { group: String },
    #[serde(rename = "history")]
    History {
        group: String,
        #[serde(default = "default_limit")]
        limit: u32,
    },
    /// History rows of every group after an event id.
    #[serde(rename = "events")]
    Events {
        #[serde(default)]
        after: i64,
        #[serde(default = "default_limit")]
        limit: u32,
    },
    /// Events after an id, then each new one, as `event` notifications on this connection.
    #[serde(rename = "subscribe")]
    Subscribe {
        #[serde(default)]
        after: i64,
    },
    #[serde(rename = "contacts")]
    Contacts {},
    #[serde(rename = "contact.add")]
    ContactAdd { code: String },
    /// Shows a contact's safety number, or marks it verified when `matches` is the number our
    /// user compared.
    #[serde(rename = "contact.verify")]
    ContactVerify {
        name: String,
        #[serde(default)]
        matches: Option<String>,
    },
    #[serde(rename = "contact.remove")]
    ContactRemove { name: String },
    /// Invitations waiting for our user's decision.
    #[serde(rename = "requests")]
    Requests {},
    #[serde(rename = "request.accept")]
    RequestAccept { group: String },
    #[serde(rename = "request.decline")]
    RequestDecline { group: String },
    #[serde(rename = "group.create")]
    GroupCreate { name: String },
    #[serde(rename = "group.rename")]
    GroupRename { group: String, name: String },
    #[serde(rename = "group.add")]
    GroupAdd { group: String, who: Vec<String> },
    #[serde(rename = "group.remove")]
    GroupRemove { group: String, who: Vec<String> },
    /// Changes the group's shared name, topic or admins.
    #[serde(rename = "group.set")]
    GroupSet {
        group: String,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        topic: Option<String>,
        #[serde(default)]
        admin: Vec<String>,
        #[serde(default)]
        not_admin: Vec<String>,
    },
    #[serde(rename = "group.leave")]
    GroupLeave { group: String },
    /// Refreshes our keys in the group.
    #[serde(rename = "group.update")]
    GroupUpdate { group: String },
    #[serde(rename = "send")]
    Send { group: String, text: String },
    /// Catches up with the delivery node.
    #[serde(rename = "sync")]
    Sync {},
}

impl Call {
    /// The call a JSON-RPC request names: an unknown method and parameters that do not fit
    /// are told apart, as JSON-RPC asks.
    pub fn from_request(method: &str, params: Value) -> Result<Call, RpcError> {
        let params = match params {
            Value::Null => json!({}),
            params => params,
        };
        serde_json::from_value(json!({"method": method, "params": params})).map_err(|e| {
            // serde names an unknown tag this way; anything else is about the parameters.
            if e.to_string().starts_with("unknown variant") {
                RpcError {
                    code: -32601,
                    message: format!("no method {method:?}"),
                    kind: ErrorKind::InvalidInput,
                }
            } else {
                RpcError::invalid_params(e)
            }
        })
    }

    /// The request's `method` and `params`.
    pub fn to_request(&self) -> (String, Value) {
        let mut request = serde_json::to_value(self).unwrap_or(Value::Null);
        let method = request["method"].as_str().unwrap_or_default().to_owned();
        (method, request["params"].take())
    }
}

/// The daemon API's error object (JSON-RPC 2.0); `data.kind` is the same kind the CLI's exit
/// code follows. A request that is not one (bad JSON, no method) gets no `data`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiError {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<ErrorData>,
}

/// What a program acts on.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorData {
    pub kind: ErrorKind,
}

impl ApiError {
    /// An error about the request itself, before any call.
    pub(super) fn request(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// An error answer: a JSON-RPC code, a message for people, and a stable kind for programs.
#[derive(Debug)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub kind: ErrorKind,
}

impl RpcError {
    pub(super) fn invalid_params(e: impl std::fmt::Display) -> Self {
        Self {
            code: -32602,
            message: format!("invalid params: {e}"),
            kind: ErrorKind::InvalidInput,
        }
    }

    pub(super) fn offline(why: &str) -> Self {
        Self {
            code: -32001,
            message: format!("not connected to the delivery node ({why})"),
            kind: ErrorKind::Delivery,
        }
    }

    pub fn to_json(&self) -> Value {
        ApiError {
            code: self.code,
            message: self.message.clone(),
            data: Some(ErrorData { kind: self.kind }),
        }
        .to_json()
    }
}

impl From<SyncError> for RpcError {
    fn from(e: SyncError) -> Self {
        Self {
            code: -32000,
            message: e.to_string(),
            kind: e.kind(),
        }
    }
}

impl From<ProfileError> for RpcError {
    fn from(e: ProfileError) -> Self {
        SyncError::Profile(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_becomes_its_call_and_back() {
        let call = Call::from_request("send", json!({"group": "team", "text": "hi"})).unwrap();
        assert_eq!(
            call,
            Call::Send {
                group: "team".into(),
                text: "hi".into()
            }
        );
        let (method, params) = call.to_request();
        assert_eq!(
            (method.as_str(), params),
            ("send", json!({"group": "team", "text": "hi"}))
        );
        assert_eq!(
            Call::from_request("status", Value::Null).unwrap(),
            Call::Status {}
        );
        let history = Call::from_request("history", json!({"group": "g"})).unwrap();
        assert_eq!(
            history,
            Call::History {
                group: "g".into(),
                limit: 100
            }
        );
        assert_eq!(
            Call::from_request("nope", json!({})).unwrap_err().code,
            -32601
        );
        let wrong = Call::from_request("send", json!({"group": 1})).unwrap_err();
        assert_eq!(wrong.code, -32602);
    }
}
