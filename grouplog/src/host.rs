//! Answering the wire protocol's group requests from a [`GroupLog`]: the one mapping of requests
//! to log operations and of outcomes to answers, used by the delivery node and by the simulator
//! (whose node is a [`crate::MemoryLog`]), and ready for a peer that hosts a node-less group.
//! Who the client is, what it may write, and how pushes travel are the host's own affairs.

use mlschat_wire::token::token_hash;
use mlschat_wire::{
    ClientId, EntryKind, ErrorCode, ErrorResponse, GroupEntry, MailboxEntry, PostCommit,
    PostMessage, PostNotice, Request, Response,
};

use crate::{Entry, GroupLog, Judged, NewCommit, NewMessage, Page, Posted, Refused, UnixTime};
use crate::{Welcome, parse_welcome, post_key};

/// What a host lets one request take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest application message (or proposal) it stores, in bytes.
    pub max_message: u32,
    /// At most this many entries a read, and past the first at most `max_fetch_bytes`.
    pub max_fetch: u32,
    pub max_fetch_bytes: u64,
    /// Welcomes one mailbox holds; past it a commit's Welcome is left out.
    pub mailbox_quota: u64,
}

impl Limits {
    /// A read's page: what the client asked for, within these limits.
    pub fn page(&self, asked: u32) -> Page {
        Page {
            entries: asked.min(self.max_fetch),
            bytes: self.max_fetch_bytes,
        }
    }
}

/// What an answered request changed that others are to hear of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A new entry in a group's log, for the group's subscribers. A repeated post appends
    /// nothing (it was told the first time, and the log keeps its first bytes).
    Appended {
        group_id: Vec<u8>,
        entry: GroupEntry,
    },
    /// A Welcome in a mailbox, for its owner.
    Delivered {
        owner: ClientId,
        entry: MailboxEntry,
    },
    /// The client may hear of the group's new entries (it showed a token of the group).
    Subscribed { group_id: Vec<u8> },
}

/// An answer, and what it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    pub response: Response,
    pub effects: Vec<Effect>,
}

impl From<Response> for Answered {
    fn from(response: Response) -> Self {
        Answered {
            response,
            effects: Vec::new(),
        }
    }
}

/// Why a request got no [`Answered`].
#[derive(Debug)]
pub enum NotAnswered<E> {
    /// Refused: the client is told this.
    Refused(ErrorResponse),
    /// The log failed: the host logs it and tells the client only that something failed.
    Failed(E),
    /// Not a group request: the host answers it itself.
    Passed(Box<Request>),
}

/// How a host posts messages: one at a time through the log, or gathered into batches (the
/// delivery node's group commit).
pub trait Poster {
    type Error;
    fn post(
        &self,
        post: NewMessage,
        now: UnixTime,
    ) -> impl Future<Output = Judged<Posted, Self::Error>> + Send;
}

impl<L: GroupLog> Poster for L {
    type Error = L::Error;
    async fn post(&self, post: NewMessage, now: UnixTime) -> Judged<Posted, L::Error> {
        let mut results = self.post_messages(std::slice::from_ref(&post), now).await?;
        Ok(results.pop().expect("one result per post"))
    }
}

fn refusal(code: ErrorCode, detail: &str) -> ErrorResponse {
    ErrorResponse {
        code,
        current_epoch: 0,
        detail: detail.as_bytes().to_vec().into(),
    }
}

impl Refused {
    /// The answer a client gets.
    pub fn error(self) -> ErrorResponse {
        match self {
            Refused::UnknownGroup => refusal(ErrorCode::UnknownGroup, "no such group"),
            Refused::GroupExists => refusal(ErrorCode::GroupExists, "group exists"),
            Refused::BadToken => refusal(ErrorCode::BadToken, "token does not match"),
            Refused::NotClaimed => refusal(
                ErrorCode::Forbidden,
                "a Welcome for a client whose KeyPackage you did not claim",
            ),
            Refused::StaleEpoch { current } => ErrorResponse {
                current_epoch: current,
                ..refusal(
                    ErrorCode::StaleEpoch,
                    &format!("group is at epoch {current}"),
                )
            },
        }
    }
}

/// A log's outcome, with a refusal as the client's answer.
fn judged<T, E>(outcome: Judged<T, E>) -> Result<T, NotAnswered<E>> {
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(refused)) => Err(NotAnswered::Refused(refused.error())),
        Err(e) => Err(NotAnswered::Failed(e)),
    }
}

/// A stored Welcome as the wire carries it.
pub fn mailbox_entry(w: Welcome) -> MailboxEntry {
    MailboxEntry {
        id: w.id,
        group_id: w.group_id.into(),
        epoch: w.epoch,
        welcome: w.welcome.into(),
        tree_key: w.tree_key.into(),
    }
}

/// A stored log entry as the wire carries it.
pub fn group_entry(e: Entry) -> GroupEntry {
    GroupEntry {
        seq: e.seq,
        epoch: e.epoch,
        kind: e.kind,
        message: e.message.into(),
    }
}

/// Answers `client`'s group request (creating, posting to and reading group logs, mailboxes
/// and trees) from `log`, with messages posted through `poster`; any other request is
/// [`NotAnswered::Passed`] back.
pub async fn answer<L, P>(
    log: &L,
    poster: &P,
    client: &ClientId,
    request: Request,
    limits: &Limits,
    now: UnixTime,
) -> Result<Answered, NotAnswered<L::Error>>
where
    L: GroupLog,
    P: Poster<Error = L::Error>,
{
    let failed = NotAnswered::Failed;
    Ok(match request {
        Request::CreateGroup(g) => {
            judged(
                log.create_group(g.group_id.as_slice(), &g.token_hash, now)
                    .await,
            )?;
            Response::Ok.into()
        }
        Request::PostCommit(c) => post_commit(log, client, c, limits, now).await?,
        Request::PostMessage(m) => post_message(poster, client, m, limits, now).await?,
        Request::PostNotice(n) => post_notice(log, n, now).await?,
        Request::FetchGroup(f) => {
            let token = token_hash(&f.token);
            let page = limits.page(f.limit);
            let entries = log.fetch_group(f.group_id.as_slice(), &token, f.after_seq, page);
            let entries = judged(entries.await)?;
            Response::GroupEntries {
                entries: entries.into_iter().map(group_entry).collect(),
            }
            .into()
        }
        Request::FetchTree(t) => {
            let access_hash = token_hash(&t.access);
            let tree = log.fetch_tree(t.group_id.as_slice(), t.epoch, &access_hash);
            match tree.await.map_err(failed)? {
                Some(tree) => Response::Tree {
                    sealed_tree: tree.into(),
                }
                .into(),
                None => {
                    let why = refusal(ErrorCode::UnknownGroup, "no tree for that epoch");
                    return Err(NotAnswered::Refused(why));
                }
            }
        }
        Request::Subscribe(f) => {
            // The same right as a fetch: a token of any epoch of the group.
            let token = token_hash(&f.token);
            let group_id = f.group_id.as_slice().to_vec();
            judged(
                log.fetch_group(&group_id, &token, u64::MAX >> 1, Page::from(0))
                    .await,
            )?;
            Answered {
                response: Response::Ok,
                effects: vec![Effect::Subscribed { group_id }],
            }
        }
        Request::FetchMailbox { after, limit } => {
            let page = limits.page(limit);
            let entries = log
                .fetch_mailbox(client, after, page)
                .await
                .map_err(failed)?;
            Response::Mailbox {
                entries: entries.into_iter().map(mailbox_entry).collect(),
            }
            .into()
        }
        Request::AckMailbox { up_to } => {
            log.ack_mailbox(client, up_to).await.map_err(failed)?;
            Response::Ok.into()
        }
        other => return Err(NotAnswered::Passed(Box::new(other))),
    })
}

/// A commit: the log's compare-and-set, its Welcomes to their mailboxes.
async fn post_commit<L: GroupLog>(
    log: &L,
    client: &ClientId,
    c: PostCommit,
    limits: &Limits,
    now: UnixTime,
) -> Result<Answered, NotAnswered<L::Error>> {
    let mut welcomes = Vec::with_capacity(c.welcomes.len());
    for welcome in &c.welcomes {
        let parsed = parse_welcome(welcome)
            .map_err(|e| NotAnswered::Refused(refusal(ErrorCode::Malformed, e.0)))?;
        welcomes.push(parsed);
    }
    let commit = NewCommit {
        poster: *client,
        group_id: c.group_id.as_slice().to_vec(),
        epoch: c.epoch,
        token_hash: token_hash(&c.token),
        next_token_hash: c.next_token_hash,
        commit: c.commit.as_slice().to_vec(),
        welcomes,
        sealed_tree: c.sealed_tree.as_slice().to_vec(),
        tree_access_hash: c.tree_access_hash,
    };
    let committed = judged(log.post_commit(&commit, limits.mailbox_quota, now).await)?;
    let mut effects = vec![Effect::Appended {
        group_id: commit.group_id,
        entry: GroupEntry {
            seq: committed.seq,
            epoch: c.epoch,
            kind: EntryKind::Commit,
            message: c.commit,
        },
    }];
    let mut undelivered = Vec::new();
    for (welcome, id) in c.welcomes.into_iter().zip(committed.welcomes) {
        let Some(id) = id else {
            undelivered.push(welcome.recipient);
            continue;
        };
        let entry = MailboxEntry {
            id,
            group_id: c.group_id.clone(),
            epoch: committed.epoch,
            welcome: welcome.welcome,
            tree_key: welcome.tree_key,
        };
        effects.push(Effect::Delivered {
            owner: welcome.recipient,
            entry,
        });
    }
    let response = Response::Committed {
        seq: committed.seq,
        epoch: committed.epoch,
        undelivered,
    };
    Ok(Answered { response, effects })
}

/// A message, once: a repeat is answered with its first position and pushed to nobody.
async fn post_message<P: Poster>(
    poster: &P,
    client: &ClientId,
    m: PostMessage,
    limits: &Limits,
    now: UnixTime,
) -> Result<Answered, NotAnswered<P::Error>> {
    if m.message.as_slice().len() > limits.max_message as usize {
        let detail = format!("a message may be at most {} bytes", limits.max_message);
        return Err(NotAnswered::Refused(refusal(ErrorCode::TooLarge, &detail)));
    }
    let post = NewMessage {
        group_id: m.group_id.as_slice().to_vec(),
        epoch: m.epoch,
        token_hash: token_hash(&m.token),
        message: m.message.as_slice().to_vec(),
        post_key: Some(post_key(client, &m.post_id)),
    };
    let posted = judged(poster.post(post, now).await)?;
    let response = Response::Accepted {
        seq: posted.seq,
        epoch: posted.epoch,
    };
    let effects = if posted.repeat {
        Vec::new()
    } else {
        let entry = GroupEntry {
            seq: posted.seq,
            epoch: m.epoch,
            kind: EntryKind::Message,
            message: m.message,
        };
        let group_id = m.group_id.as_slice().to_vec();
        vec![Effect::Appended { group_id, entry }]
    };
    Ok(Answered { response, effects })
}

/// A notice, for a holder of any epoch's token, at the group's current epoch.
async fn post_notice<L: GroupLog>(
    log: &L,
    n: PostNotice,
    now: UnixTime,
) -> Result<Answered, NotAnswered<L::Error>> {
    if n.notice.as_slice().len() > mlschat_wire::notice::MAX_NOTICE {
        let detail = format!(
            "a notice may be at most {} bytes",
            mlschat_wire::notice::MAX_NOTICE
        );
        return Err(NotAnswered::Refused(refusal(ErrorCode::TooLarge, &detail)));
    }
    let group_id = n.group_id.as_slice();
    let token = token_hash(&n.token);
    let posted = judged(
        log.post_notice(group_id, &token, n.notice.as_slice(), now)
            .await,
    )?;
    let entry = GroupEntry {
        seq: posted.seq,
        epoch: posted.epoch,
        kind: EntryKind::Notice,
        message: n.notice,
    };
    Ok(Answered {
        response: Response::Accepted {
            seq: posted.seq,
            epoch: posted.epoch,
        },
        effects: vec![Effect::Appended {
            group_id: group_id.to_vec(),
            entry,
        }],
    })
}
