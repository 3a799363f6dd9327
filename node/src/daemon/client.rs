//! The one client of the daemon's API: the CLI, the chat and the test harness call through it.

use std::path::Path;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::{Answer, ApiError, Call, socket_path};
use crate::kind::ErrorKind;

/// A connection to a running daemon.
pub struct DaemonClient {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    write: tokio::net::unix::OwnedWriteHalf,
    next_id: u64,
}

/// What a call can end in.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("daemon API: {0}")]
    Io(#[from] std::io::Error),
    #[error("{message}")]
    Refused { kind: ErrorKind, message: String },
    #[error("the daemon closed the connection")]
    Closed,
    #[error("the daemon's answer does not fit the API: {0}")]
    Malformed(#[from] serde_json::Error),
}

impl DaemonClient {
    /// Connects to the daemon of the profile in `dir`; `None` when none is running.
    pub async fn connect(dir: &Path) -> Option<Self> {
        let stream = UnixStream::connect(socket_path(dir)).await.ok()?;
        let (read, write) = stream.into_split();
        Some(Self {
            lines: BufReader::new(read).lines(),
            write,
            next_id: 1,
        })
    }

    /// Makes `call` and waits for its answer (notifications in between are skipped).
    pub async fn call(&mut self, call: &Call) -> Result<Answer, CallError> {
        let answer = self.answer(call).await?.map_err(|error| {
            match serde_json::from_value::<ApiError>(error) {
                Ok(error) => CallError::Refused {
                    kind: error.data.map_or(ErrorKind::Failure, |d| d.kind),
                    message: error.message,
                },
                Err(e) => CallError::Malformed(e),
            }
        })?;
        Ok(Answer::decode(call, answer)?)
    }

    /// Makes `call`: its result, or the JSON-RPC error object the daemon answered with.
    pub async fn answer(&mut self, call: &Call) -> Result<Result<Value, Value>, CallError> {
        let (method, params) = call.to_request();
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.write
            .write_all(format!("{request}\n").as_bytes())
            .await?;
        loop {
            let mut answer = self.next().await?;
            if answer.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            return Ok(match answer.get_mut("error") {
                Some(error) => Err(error.take()),
                None => Ok(answer
                    .get_mut("result")
                    .map(Value::take)
                    .unwrap_or(Value::Null)),
            });
        }
    }

    /// The next line from the daemon: an answer or a notification.
    pub async fn next(&mut self) -> Result<Value, CallError> {
        let line = self.lines.next_line().await?.ok_or(CallError::Closed)?;
        Ok(serde_json::from_str(&line)?)
    }
}
