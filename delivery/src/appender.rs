//! Group commit for posts: concurrent `PostMessage` requests are gathered and written in one
//! transaction, so throughput is not capped at one fsync per message. Each request still gets
//! its own answer, and only after the transaction holding it has committed.
//!
//! Posts are sharded by group over a few writer tasks: posts to one group keep their order
//! (one writer), different groups commit in parallel.

use std::collections::BTreeMap;

use tokio::sync::{mpsc, oneshot};

use mlschat_grouplog::UnixTime;
use mlschat_grouplog::host::Poster;

use crate::announce::{Announcement, Announcer};
use crate::storage::{Database, GroupLog, NewMessage, Posted, Refused, StorageError};

/// The answer to one post.
pub type PostResult = Result<Result<Posted, Refused>, StorageError>;

struct Job {
    post: NewMessage,
    reply: oneshot::Sender<PostResult>,
}

/// Handle to the writer tasks.
#[derive(Debug, Clone)]
pub struct Appender {
    shards: Vec<mpsc::Sender<Job>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").finish_non_exhaustive()
    }
}

impl Appender {
    /// Starts `shards` writer tasks, each committing up to `max_batch` posts at a time and
    /// announcing what it committed to other node processes.
    pub fn start(db: Database, shards: usize, max_batch: usize, announcer: Announcer) -> Self {
        let shards = (0..shards.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(max_batch * 4);
                tokio::spawn(write_batches(db.clone(), rx, max_batch, announcer.clone()));
                tx
            })
            .collect();
        Self { shards }
    }
}

/// The node's group commit: a post waits for the batch that carries it (stamped when written).
impl Poster for Appender {
    type Error = StorageError;

    async fn post(&self, post: NewMessage, _now: UnixTime) -> PostResult {
        let shard = shard_of(&post.group_id, self.shards.len());
        let (reply, answer) = oneshot::channel();
        let closed = || StorageError::Closed;
        self.shards[shard]
            .send(Job { post, reply })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

fn shard_of(group_id: &[u8], shards: usize) -> usize {
    // FNV-1a: stable and cheap; only spreads groups, nothing depends on it.
    let hash = group_id.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    (hash % shards as u64) as usize
}

/// Takes whatever posts are waiting (at least one, at most `max_batch`), commits them together,
/// answers each; repeats until every handle is dropped.
async fn write_batches(
    db: Database,
    mut jobs: mpsc::Receiver<Job>,
    max_batch: usize,
    announcer: Announcer,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while jobs.recv_many(&mut batch, max_batch).await > 0 {
        let (posts, replies): (Vec<NewMessage>, Vec<_>) =
            batch.drain(..).map(|job| (job.post, job.reply)).unzip();
        match db.post_messages(&posts, crate::unix_now()).await {
            Ok(results) => {
                announcer.announce(committed(&posts, &results));
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, posts = posts.len(), "batch of posts failed");
                for reply in replies {
                    let _ = reply.send(Err(StorageError::BatchFailed));
                }
            }
        }
    }
}

/// Each group's accepted posts in a batch, as the range of sequence numbers they took.
fn committed(posts: &[NewMessage], results: &[Result<Posted, Refused>]) -> Vec<Announcement> {
    let mut ranges = BTreeMap::<&[u8], (u64, u64)>::new();
    for (post, result) in posts.iter().zip(results) {
        if let Ok(posted) = result
            && !posted.repeat
        {
            let range = ranges
                .entry(post.group_id.as_slice())
                .or_insert((posted.seq, posted.seq));
            *range = (range.0.min(posted.seq), range.1.max(posted.seq));
        }
    }
    ranges
        .into_iter()
        .map(|(group_id, (first, last))| Announcement::Log {
            group_id: group_id.to_vec(),
            first,
            last,
        })
        .collect()
}
