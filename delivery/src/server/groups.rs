//! The group family: creating, posting to and reading group logs, mailboxes and trees. The
//! answers are the group log's own ([`host::answer`]); the node adds its quota of new groups,
//! its group commit for messages, and the pushes and announcements of what changed.

use mlschat_grouplog::host::{self, Answered, Effect, NotAnswered};
use mlschat_wire::session::Authenticated;
use mlschat_wire::{EntryKind, Request, Response};

use super::{Failure, Node};
use crate::announce::Announcement;
use crate::fanout::PushQueue;
use crate::unix_now;

impl Node {
    /// Answers a request of an authenticated `client` whose connection gets `pushes`.
    pub(super) async fn answer(
        &self,
        request: Request,
        client: &Authenticated,
        pushes: &PushQueue,
    ) -> Result<Response, Failure> {
        let now = unix_now();
        if let Request::CreateGroup(_) = request {
            self.guard.create_group(&client.id)?;
        }
        let answered = host::answer(
            &self.db,
            &self.appender,
            &client.id,
            request,
            &self.limits,
            now,
        );
        match answered.await {
            Ok(answered) => Ok(self.carry_out(answered, pushes)),
            Err(NotAnswered::Passed(request)) => self.key_packages(*request, client, now).await,
            Err(e) => Err(e.into()),
        }
    }

    /// Pushes and announces what an answered request changed.
    fn carry_out(&self, answered: Answered, pushes: &PushQueue) -> Response {
        let mut announced = Vec::new();
        for effect in answered.effects {
            match effect {
                Effect::Appended { group_id, entry } => {
                    // The appender announces the messages of each batch it writes.
                    if entry.kind != EntryKind::Message {
                        announced.push(Announcement::Log {
                            group_id: group_id.clone(),
                            first: entry.seq,
                            last: entry.seq,
                        });
                    }
                    self.fanout.publish(&group_id, entry);
                }
                Effect::Delivered { owner, entry } => {
                    announced.push(Announcement::Mailbox {
                        owner,
                        id: entry.id,
                    });
                    self.fanout.deliver(&owner, entry);
                }
                Effect::Subscribed { group_id } => self.fanout.subscribe(&group_id, pushes),
            }
        }
        self.announcer.announce(announced);
        if let Response::Committed { undelivered, .. } = &answered.response {
            let undelivered = undelivered.len() as u64;
            self.metrics.undelivered_welcomes.inc_by(undelivered);
        }
        answered.response
    }
}
