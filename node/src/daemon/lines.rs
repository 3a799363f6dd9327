//! One API connection: a JSON-RPC 2.0 request per line in (each line bounded), answers and
//! `event` notifications out. A subscription streams the events after an id, then each new one.

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use super::{Answer, ApiError, Call, Handle, Subscribed};

/// Events sent per read while streaming a subscription.
const EVENT_BATCH: u32 = 500;

/// The longest request line the API reads: the largest text (1 MiB) escaped, with room.
const MAX_REQUEST_LINE: usize = 8 << 20;

/// One line of a connection to the API.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    Request(Vec<u8>),
    /// Longer than allowed: passed to its end, never held.
    TooLong,
}

/// Reads the next line, holding at most `max` bytes of it: a longer line is read to its end and
/// dropped, so a client cannot make the daemon allocate what it sends. `None` at the end.
async fn next_request(
    read: &mut (impl tokio::io::AsyncBufRead + Unpin),
    max: usize,
) -> std::io::Result<Option<Line>> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let available = read.fill_buf().await?;
        if available.is_empty() {
            return Ok(match (too_long, line.is_empty()) {
                (true, _) => Some(Line::TooLong),
                (false, true) => None,
                (false, false) => Some(Line::Request(line)),
            });
        }
        let end = available.iter().position(|&b| b == b'\n');
        let chunk = &available[..end.unwrap_or(available.len())];
        too_long |= line.len() + chunk.len() > max;
        if too_long {
            line = Vec::new();
        } else {
            line.extend_from_slice(chunk);
        }
        let used = end.map_or(available.len(), |i| i + 1);
        read.consume(used);
        if end.is_some() {
            return Ok(Some(if too_long {
                Line::TooLong
            } else {
                Line::Request(line)
            }));
        }
    }
}

/// Serves one API connection: a JSON-RPC request per line in, responses and notifications out.
pub(super) async fn serve_lines(
    handle: Handle,
    read: impl tokio::io::AsyncRead + Unpin,
    write: impl AsyncWrite + Unpin + Send + 'static,
) {
    let (out, lines_out) = mpsc::channel::<String>(1024);
    let writer = tokio::spawn(write_lines(write, lines_out));
    let mut read = BufReader::new(read);
    let mut subscription: Option<tokio::task::JoinHandle<()>> = None;
    while let Ok(Some(line)) = next_request(&mut read, MAX_REQUEST_LINE).await {
        let Line::Request(line) = line else {
            let message = format!("request too large: at most {MAX_REQUEST_LINE} bytes a line");
            let error = ApiError::request(-32600, message).to_json();
            let _ = out.send(response(Value::Null, Err(error))).await;
            continue;
        };
        if line.trim_ascii().is_empty() {
            continue;
        }
        let request: Value = match serde_json::from_slice(&line) {
            Ok(v) => v,
            Err(e) => {
                let error = ApiError::request(-32700, format!("parse error: {e}")).to_json();
                let _ = out.send(response(Value::Null, Err(error))).await;
                continue;
            }
        };
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        let Some(method) = request.get("method").and_then(Value::as_str) else {
            let error = ApiError::request(-32600, "invalid request: no method").to_json();
            let _ = out.send(response(id, Err(error))).await;
            continue;
        };
        let params = request.get("params").cloned().unwrap_or(Value::Null);
        let call = match Call::from_request(method, params) {
            Ok(call) => call,
            Err(e) => {
                let _ = out.send(response(id, Err(e.to_json()))).await;
                continue;
            }
        };
        if let Call::Subscribe { after } = call {
            if let Some(old) = subscription.take() {
                old.abort();
            }
            let answer = Answer::Subscribe(Subscribed { after }).to_json();
            let _ = out.send(response(id, Ok(answer))).await;
            subscription = Some(tokio::spawn(stream_events(
                handle.clone(),
                after,
                out.clone(),
            )));
            continue;
        }
        let answer = handle.call(call).await;
        let answer = answer.map(|a| a.to_json()).map_err(|e| e.to_json());
        if out.send(response(id, answer)).await.is_err() {
            break;
        }
    }
    if let Some(s) = subscription {
        s.abort();
    }
    drop(out);
    let _ = writer.await;
}

/// Sends every event after `after` as an `event` notification, then each new one as it comes.
async fn stream_events(handle: Handle, mut after: i64, out: mpsc::Sender<String>) {
    let mut latest = handle.latest_event.clone();
    loop {
        let call = Call::Events {
            after,
            limit: EVENT_BATCH,
        };
        let Ok(Answer::Events(events)) = handle.call(call).await else {
            return;
        };
        for event in &events {
            after = event.id;
            let note = json!({"jsonrpc": "2.0", "method": "event", "params": event});
            if out.send(note.to_string()).await.is_err() {
                return;
            }
        }
        if events.is_empty() && latest.changed().await.is_err() {
            return;
        }
    }
}

async fn write_lines(mut write: impl AsyncWrite + Unpin, mut lines: mpsc::Receiver<String>) {
    while let Some(mut line) = lines.recv().await {
        line.push('\n');
        if write.write_all(line.as_bytes()).await.is_err() || write.flush().await.is_err() {
            return;
        }
    }
}

fn response(id: Value, result: Result<Value, Value>) -> String {
    match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(error) => json!({"jsonrpc": "2.0", "id": id, "error": error}),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 18, finding 8: one 256 MiB line took the daemon from 88 to 350 MB. A line over the
    /// limit is answered as too large, never held, and the next line is read as usual.
    #[tokio::test]
    async fn a_line_over_the_limit_is_dropped_and_the_next_one_read() {
        let mut input = vec![b'x'; 5_000];
        input.extend_from_slice(b"\n{\"method\":\"status\"}\nlast");
        let mut read = BufReader::with_capacity(64, input.as_slice());
        let mut lines = Vec::new();
        while let Some(line) = next_request(&mut read, 1_000).await.unwrap() {
            lines.push(line);
        }
        assert_eq!(
            lines,
            [
                Line::TooLong,
                Line::Request(br#"{"method":"status"}"#.to_vec()),
                Line::Request(b"last".to_vec()),
            ]
        );
    }
}
