//! Runs a scenario against a node: sets up its members, then measures.
//!
//! Operations, as reports and thresholds name them:
//! - `claim`: one KeyPackage claim, from the tool's own connection, just before each commit
//!   that builds the group.
//! - `build`: a commit adding a batch while the group is built (every scenario builds its
//!   group first; the build scenario does nothing else), from the call until the node has
//!   ordered it and the committer merged it (its KeyPackage claims included); samples carry
//!   the group's size, for latency against size.
//! - `add`, `remove`: a commit of the measured phase (churn, joins), likewise.
//! - `build.processed`, `add.processed`, `remove.processed`: until every sampled full member
//!   has reached the epoch that commit made, as its committer reported it (racing committers
//!   included).
//! - `join`: from the add until the joiner has joined (Welcome, sealed tree fetched, group
//!   made).
//! - `message.sent`: a text, from when it was due until the node took it.
//! - `message`: from when a text was due until a sampled full member decrypted it, once per
//!   receiver: the end-to-end latency.
//! - `create`: a two-member group, from creating it until the node ordered its first commit.
//!
//! Latencies of open-loop operations (churn, messaging) run from when each was due
//! ([`Schedule`]); the others from the call.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mlschat_node::profile::InviteCode;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::crowd::{
    Answer, Claimer, Heard, NewPeer, Order, Peer, home, key_package_members, load_text,
};
use crate::progress::Progress;
use crate::scenario::Scenario;
use crate::schedule::Schedule;
use crate::stats::Measurements;
use crate::target::{NodeSide, Target, Usage, local_usage, own_processes};

/// The group every scenario but small groups loads.
const GROUP: &str = "load";

/// How long full members may take to catch up before the run is called stuck.
const PATIENCE: Duration = Duration::from_secs(600);

/// What one run measured, beside the latencies.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Outcome {
    pub measured: Measurements,
    /// The node's `/metrics` over the measured phase (not the set-up).
    pub node: Option<NodeSide>,
    /// Commits the node ordered in the measured phase: stored bytes per commit divide by it.
    pub commits: u64,
    /// CPU used over the whole run and memory at its end, of this process (with an embedded
    /// node, the node too) and of a local node and Postgres.
    pub usage: BTreeMap<String, Usage>,
    /// Seconds the measured phase took.
    pub seconds: f64,
    /// What the run could not do, in words.
    pub notes: Vec<String>,
}

/// Runs `scenario` against `target`; member names start with `prefix` (one per worker).
pub async fn run(
    scenario: &Scenario,
    target: &Target,
    prefix: &str,
    progress: &mut Progress,
) -> anyhow::Result<Outcome> {
    // Ours: this process, the target's nodes running here and their Postgres (found again at
    // the end: a node may have been started meanwhile).
    let usage_before = local_usage(&own_processes(target));
    let mut run = Run::new(target.clone(), prefix, progress)?;
    match *scenario {
        Scenario::Build {
            members,
            batch,
            full_members,
            stop_after_seconds,
        } => {
            let stop = stop_after_seconds.map(|s| Instant::now() + Duration::from_secs(s));
            run.build(members, batch, full_members, stop).await?
        }
        Scenario::Churn {
            members,
            changes_per_second,
            batch,
            committers,
            seconds,
            full_members,
        } => {
            run.churn(
                members,
                changes_per_second,
                batch,
                committers,
                seconds,
                full_members,
            )
            .await?
        }
        Scenario::Messaging {
            members,
            per_second,
            seconds,
            full_members,
        } => {
            run.messaging(members, per_second, seconds, full_members)
                .await?
        }
        Scenario::SmallGroups { groups } => run.small_groups(groups).await?,
        Scenario::Join { members, joins } => run.join(members, joins).await?,
    }
    run.progress.finish();
    let mut outcome = run.outcome;
    outcome.usage = local_usage(&own_processes(target))
        .into_iter()
        .map(|(name, mut now)| {
            if let Some(then) = usage_before.get(&name) {
                now.cpu_seconds -= then.cpu_seconds;
            }
            (name, now)
        })
        .collect();
    Ok(outcome)
}

struct Run<'p> {
    target: Target,
    /// Full members' profiles.
    dir: tempfile::TempDir,
    prefix: String,
    started: Instant,
    outcome: Outcome,
    progress: &'p mut Progress,
    heard: mpsc::UnboundedReceiver<(usize, Heard, Instant)>,
    tell: mpsc::UnboundedSender<(usize, Heard, Instant)>,
    /// Full members, by index; the first is the group's creator.
    peers: Vec<Peer>,
    /// What each full member has heard: ready, its group's epoch, when it joined.
    ready: Vec<bool>,
    epochs: Vec<u64>,
    /// Every epoch each reported, with when.
    reached: Vec<Vec<(u64, Instant)>>,
    /// Why a full member stopped, if one did: the run cannot go on.
    failed: Option<String>,
    joined: Vec<Option<Instant>>,
    /// How many full members are in the group for the whole run (joiners come after them).
    full: usize,
    /// When each load text was due, by number, and how many decryptions were heard.
    text_due: HashMap<u64, Instant>,
    texts_heard: u64,
    /// The loaded group's size and the epoch its last commit made.
    size: u64,
    epoch: u64,
    /// When the measured phase began, and the node's figures then.
    measuring: Option<(Instant, Option<NodeSide>)>,
    /// When building stops, where the scenario sets a time limit.
    stop_building: Option<Instant>,
    last_figures: Instant,
}

impl<'p> Run<'p> {
    fn new(target: Target, prefix: &str, progress: &'p mut Progress) -> anyhow::Result<Self> {
        let (tell, heard) = mpsc::unbounded_channel();
        Ok(Self {
            target,
            dir: tempfile::tempdir()?,
            prefix: prefix.to_owned(),
            started: Instant::now(),
            outcome: Outcome::default(),
            progress,
            heard,
            tell,
            peers: Vec::new(),
            ready: Vec::new(),
            epochs: Vec::new(),
            reached: Vec::new(),
            failed: None,
            joined: Vec::new(),
            full: 0,
            text_due: HashMap::new(),
            texts_heard: 0,
            size: 0,
            epoch: 0,
            measuring: None,
            stop_building: None,
            last_figures: Instant::now(),
        })
    }

    /// Records a timed operation that finished at `done`.
    fn record(&mut self, operation: &str, done: Instant, took: Duration) {
        let at = done.saturating_duration_since(self.started);
        self.outcome.measured.record(operation, at, took, self.size);
        self.show(operation);
    }

    fn error(&mut self, operation: &str, code: &str) {
        self.outcome.measured.of(operation).error(code);
        self.show(operation);
    }

    fn show(&mut self, operation: &str) {
        if self.last_figures.elapsed() < Duration::from_millis(250) {
            return;
        }
        self.last_figures = Instant::now();
        let elapsed = self
            .measuring
            .as_ref()
            .map_or(self.started, |(t, _)| *t)
            .elapsed();
        let summary = self.outcome.measured.of(operation).summary();
        self.progress.figures(operation, &summary, elapsed);
    }

    /// Takes in one thing a full member heard.
    fn hear(&mut self, (peer, what, when): (usize, Heard, Instant)) {
        match what {
            Heard::Ready => self.ready[peer] = true,
            Heard::Failed(why) => {
                let name = &self.peers[peer].name;
                self.failed
                    .get_or_insert(format!("full member {name}: {why}"));
            }
            Heard::Joined => self.joined[peer] = Some(when),
            Heard::Epoch(e) => {
                self.epochs[peer] = self.epochs[peer].max(e);
                self.reached[peer].push((e, when));
            }
            Heard::Text(n) => {
                if let Some(due) = self.text_due.get(&n).copied() {
                    self.record("message", when, when.saturating_duration_since(due));
                    self.texts_heard += 1;
                }
            }
        }
    }

    /// Takes in what full members heard until `done` holds.
    async fn until(&mut self, what: &str, done: impl Fn(&Self) -> bool) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !done(self) {
            if let Some(why) = &self.failed {
                bail!("{why}");
            }
            match tokio::time::timeout_at(deadline, self.heard.recv()).await {
                Ok(Some(heard)) => self.hear(heard),
                Ok(None) => bail!("every full member stopped"),
                Err(_) => bail!("gave up after {PATIENCE:?} waiting until {what}"),
            }
        }
        Ok(())
    }

    /// Takes in whatever full members heard so far, without waiting.
    fn hear_all(&mut self) {
        while let Ok(heard) = self.heard.try_recv() {
            self.hear(heard);
        }
    }

    /// The full members but the creator are at the creator's epoch.
    fn caught_up(&self) -> bool {
        self.epochs[1..self.full].iter().all(|e| *e >= self.epoch)
    }

    /// When the last of the full members but the creator reached `epoch`; `None` until all
    /// have, or when the creator is the only full member (nobody to time).
    fn all_reached(&self, epoch: u64) -> Option<Instant> {
        let receivers = self.reached.get(1..self.full).filter(|r| !r.is_empty())?;
        receivers
            .iter()
            .map(|heard| heard.iter().find(|(e, _)| *e >= epoch).map(|(_, at)| *at))
            .try_fold(self.started, |last, at| Some(last.max(at?)))
    }

    /// Registers `count` KeyPackage members, `key_packages` each.
    async fn key_package_members(
        &mut self,
        count: u64,
        key_packages: usize,
    ) -> anyhow::Result<Vec<InviteCode>> {
        self.progress.phase("registering", count);
        let names = (0..count).map(|i| format!("{}m{i}", self.prefix));
        let progress = &*self.progress;
        key_package_members(&self.target, names, key_packages, || progress.step()).await
    }

    /// Starts a full member who trusts `contacts`; returns its index.
    async fn start_peer(
        &mut self,
        mut new: NewPeer,
        contacts: &[InviteCode],
    ) -> anyhow::Result<usize> {
        new.trust(contacts)?;
        let index = self.peers.len();
        self.ready.push(false);
        self.epochs.push(0);
        self.reached.push(Vec::new());
        self.joined.push(None);
        self.peers.push(new.start(index, self.tell.clone())?);
        self.until("a full member connected", |r| r.ready[index])
            .await?;
        Ok(index)
    }

    /// Full member `number`'s profile, on the target's nodes in turn.
    fn new_peer(&self, number: usize) -> anyhow::Result<NewPeer> {
        let name = format!("{}p{number}", self.prefix);
        NewPeer::create(self.dir.path(), &name, &home(&self.target, number))
    }

    /// Builds the group to `members`, `batch` per commit, with `full` full members (the
    /// creator first) and the rest KeyPackage members; `build` latencies are measured as it
    /// grows. Returns `pool` more KeyPackage members, registered but not added.
    async fn group_of(
        &mut self,
        members: u64,
        batch: u64,
        full: u64,
        pool: u64,
    ) -> anyhow::Result<Vec<InviteCode>> {
        let outsiders = members - full;
        let mut codes = self.key_package_members(outsiders + pool, 2).await?;
        let pool = codes.split_off(outsiders as usize);
        self.progress.phase("starting", full);
        let mut creator = self.new_peer(0)?;
        let others: Vec<NewPeer> = (1..full as usize)
            .map(|i| self.new_peer(i))
            .collect::<anyhow::Result<_>>()?;
        creator.trust(others.iter().map(|p| &p.code))?;
        creator.trust(codes.iter().chain(&pool))?;
        let creator_code = creator.code.clone();
        self.start_peer(creator, &[]).await?;
        self.progress.step();
        for other in others {
            self.start_peer(other, std::slice::from_ref(&creator_code))
                .await?;
            self.progress.step();
        }
        self.full = full as usize;
        self.peers[0]
            .ask(Order::CreateGroup(GROUP.into()))
            .await
            .map_err(|e| anyhow::anyhow!("creating the group: {e}"))?;
        self.size = 1;
        if full > 1 {
            let names = self.peers[1..]
                .iter()
                .map(|p| p.code.name.to_string())
                .collect();
            self.commit("build", Order::Add(GROUP.into(), names), full - 1)
                .await?;
        }
        self.progress.phase("building", outsiders);
        for chunk in codes.chunks(batch as usize) {
            if self.stop_building.is_some_and(|at| Instant::now() >= at) {
                break;
            }
            // A connection per commit: a slow commit outlasts an idle one.
            let claimer = Claimer::connect(&self.target).await?;
            self.claim(&claimer, chunk).await;
            let names = chunk.iter().map(|c| c.name.to_string()).collect();
            self.commit("build", Order::Add(GROUP.into(), names), chunk.len() as u64)
                .await?;
            for _ in chunk {
                self.progress.step();
            }
        }
        Ok(pool)
    }

    /// Times one claim of each member's KeyPackages, all at once.
    async fn claim(&mut self, claimer: &Claimer, members: &[InviteCode]) {
        let mut tasks = tokio::task::JoinSet::new();
        for member in members {
            let (claimer, member) = (claimer.clone(), member.clone());
            tasks.spawn(async move {
                let start = Instant::now();
                let result = claimer.claim(&member).await;
                (start, Instant::now(), result)
            });
        }
        let claims = tasks.join_all().await;
        for (start, done, result) in claims {
            match result {
                Ok(()) => self.record("claim", done, done - start),
                Err(code) => self.error("claim", &code),
            }
        }
    }

    /// The creator commits `order`, which changes the group's size by `change` (down for a
    /// removal); times `operation` until the node ordered it and `operation.processed` until
    /// every sampled full member has processed it.
    async fn commit(&mut self, operation: &str, order: Order, change: u64) -> anyhow::Result<()> {
        let start = Instant::now();
        let removing = matches!(order, Order::Remove(..));
        let epoch = match self.peers[0].ask(order).await {
            Ok(epoch) => epoch,
            Err(code) => {
                self.error(operation, &code);
                bail!("the group's creator could not commit ({operation}): {code}");
            }
        };
        let done = Instant::now();
        // Counting commits would not do: full members commit key updates of their own.
        self.epoch = epoch;
        self.size = if removing {
            self.size - change
        } else {
            self.size + change
        };
        // Samples carry the size the commit made.
        self.record(operation, done, done - start);
        self.outcome.commits += u64::from(self.measuring.is_some());
        self.until("the full members processed a commit", Self::caught_up)
            .await?;
        // When the last member got there, as it reported: possibly before the creator's own
        // answer came back.
        if let Some(reached) = self.all_reached(self.epoch) {
            let processed = format!("{operation}.processed");
            self.record(
                &processed,
                reached,
                reached.saturating_duration_since(start),
            );
        }
        Ok(())
    }

    /// From here on the run is measured: the node's figures are read now and at the end.
    fn start_measuring(&mut self) {
        let node = match self.target.scrape() {
            Ok(node) => node,
            Err(e) => {
                self.outcome.notes.push(format!("reading /metrics: {e}"));
                None
            }
        };
        self.measuring = Some((Instant::now(), node));
        // Set-up figures (the build's adds, its claims) stay in the report under their names;
        // only the node's side and the commit count start here.
        self.outcome.commits = 0;
    }

    async fn stop_measuring(&mut self) {
        let Some((since, before)) = self.measuring.take() else {
            return;
        };
        self.outcome.seconds = since.elapsed().as_secs_f64();
        if let Some(before) = before {
            // The node counts its stored bytes every few seconds (every second when embedded).
            tokio::time::sleep(Duration::from_millis(1500)).await;
            match self.target.scrape() {
                Ok(after) => self.outcome.node = after.map(|after| after.since(&before)),
                Err(e) => self.outcome.notes.push(format!("reading /metrics: {e}")),
            }
        }
    }

    async fn build(
        &mut self,
        members: u64,
        batch: u64,
        full: u64,
        stop: Option<Instant>,
    ) -> anyhow::Result<()> {
        self.start_measuring();
        self.stop_building = stop;
        self.group_of(members, batch, full, 0).await?;
        if self.size < members {
            let note = format!(
                "stopped at {} members of {members}, after the time allowed (stop_after_seconds)",
                self.size
            );
            self.outcome.notes.push(note);
        }
        self.stop_measuring().await;
        Ok(())
    }

    /// Adds and removes `batch` members per commit at `changes_per_second`, by `committers`
    /// admins at once. Each committer adds fresh members, then removes the ones it added.
    async fn churn(
        &mut self,
        members: u64,
        changes_per_second: f64,
        batch: u64,
        committers: u64,
        seconds: u64,
        full: u64,
    ) -> anyhow::Result<()> {
        let full = full.max(committers);
        let commits_per_second = changes_per_second / batch as f64;
        let schedule = Schedule::per_second(commits_per_second)
            .context("changes_per_second / batch is not a usable rate")?;
        let commits = schedule.due_before(Duration::from_secs(seconds));
        // Every other commit adds a fresh batch.
        let pool_size = commits.div_ceil(2) * batch;
        let pool = self.group_of(members, 100, full, pool_size).await?;
        let admins: Vec<String> = self.peers[1..committers as usize]
            .iter()
            .map(|p| p.fingerprint.clone())
            .collect();
        if !admins.is_empty() {
            self.epoch = self.peers[0]
                .ask(Order::Promote(GROUP.into(), admins))
                .await
                .map_err(|e| anyhow::anyhow!("making the committers admins: {e}"))?;
            self.until("the full members processed a commit", Self::caught_up)
                .await?;
        }
        // Committers other than the creator add the pool by name: they must know it.
        for peer in &self.peers[1..committers as usize] {
            for code in &pool {
                peer.ask(Order::Trust(Box::new(code.clone())))
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        self.progress.phase("churn", commits);
        self.start_measuring();
        let start = Instant::now();
        let mut batches = pool.chunks(batch as usize);
        // Commit n is committer n % committers's; each committer alternates add and remove.
        let mut plans: Vec<Vec<(u64, Vec<String>)>> = vec![Vec::new(); committers as usize];
        for n in 0..commits {
            let plan = &mut plans[(n % committers) as usize];
            if plan.len().is_multiple_of(2) {
                let Some(chunk) = batches.next() else { break };
                plan.push((n, chunk.iter().map(|c| c.name.to_string()).collect()));
            } else {
                let names = plan.last().expect("an add before").1.clone();
                plan.push((n, names));
            }
        }
        let (finished, mut results) = mpsc::unbounded_channel();
        for (committer, plan) in plans.into_iter().enumerate() {
            let (peer, finished) = (self.peers[committer].clone(), finished.clone());
            tokio::spawn(async move {
                for (i, (n, names)) in plan.into_iter().enumerate() {
                    let due = start + schedule.due(n);
                    tokio::time::sleep_until(due.into()).await;
                    let (operation, order) = if i % 2 == 0 {
                        ("add", Order::Add(GROUP.into(), names))
                    } else {
                        ("remove", Order::Remove(GROUP.into(), names))
                    };
                    let result = peer.ask(order).await;
                    if finished
                        .send((operation, due, Instant::now(), result))
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
        drop(finished);
        // Commits that went through: operation, when due, the epoch each made.
        let mut committed: Vec<(&str, Instant, u64)> = Vec::new();
        loop {
            tokio::select! {
                result = results.recv() => {
                    let Some((operation, due, done, result)) = result else { break };
                    self.progress.step();
                    match result {
                        Ok(epoch) => {
                            self.outcome.commits += 1;
                            self.record(operation, done, done - due);
                            committed.push((operation, due, epoch));
                        }
                        Err(code) => self.error(operation, &code),
                    }
                }
                Some(heard) = self.heard.recv() => self.hear(heard),
            }
        }
        // Each commit is timed until every sampled member had reached its epoch (from the
        // instants they reported).
        self.epoch = committed.iter().map(|c| c.2).max().unwrap_or(self.epoch);
        self.until("the full members processed every commit", Self::caught_up)
            .await?;
        for (operation, due, epoch) in committed {
            if let Some(reached) = self.all_reached(epoch) {
                let took = reached.saturating_duration_since(due);
                self.record(&format!("{operation}.processed"), reached, took);
            }
        }
        self.hear_all();
        self.stop_measuring().await;
        Ok(())
    }

    /// Texts at `per_second` from the creator, open loop; every other full member is a
    /// receiver whose decryptions are timed from when each text was due.
    async fn messaging(
        &mut self,
        members: u64,
        per_second: f64,
        seconds: u64,
        full: u64,
    ) -> anyhow::Result<()> {
        self.group_of(members, 100, full.max(2), 0).await?;
        let schedule = Schedule::per_second(per_second).context("not a usable rate")?;
        let count = schedule.due_before(Duration::from_secs(seconds));
        let receivers = (self.full - 1) as u64;
        self.progress.phase("messaging", count);
        self.start_measuring();
        let start = Instant::now();
        self.text_due = (0..count).map(|n| (n, start + schedule.due(n))).collect();
        let sender = self.peers[0].clone();
        let sending = tokio::spawn(async move {
            let mut answers = tokio::task::JoinSet::new();
            for n in 0..count {
                let due = start + schedule.due(n);
                tokio::time::sleep_until(due.into()).await;
                let answer = sender.order(Order::Send(GROUP.into(), load_text(n)));
                answers.spawn(async move {
                    let result = answer.await.unwrap_or_else(|_| Err("stopped".into()));
                    let done = Instant::now();
                    (done, done - due, result)
                });
            }
            answers.join_all().await
        });
        self.until("every receiver decrypted every text", |r| {
            r.texts_heard >= count * receivers
        })
        .await?;
        for (done, took, result) in sending.await? {
            self.progress.step();
            match result {
                Ok(_) => self.record("message.sent", done, took),
                Err(code) => self.error("message.sent", &code),
            }
        }
        self.stop_measuring().await;
        Ok(())
    }

    /// `groups` two-member groups, each with one text: the creator with a KeyPackage member,
    /// and with a second full member in every hundredth, whose decryption is timed.
    async fn small_groups(&mut self, groups: u64) -> anyhow::Result<()> {
        let partners = self.key_package_members(groups, 1).await?;
        let mut creator = self.new_peer(0)?;
        let mut second = self.new_peer(1)?;
        creator.trust(partners.iter().chain([&second.code]))?;
        second.trust([&creator.code])?;
        self.start_peer(creator, &[]).await?;
        self.start_peer(second, &[]).await?;
        self.full = 2;
        self.progress.phase("small groups", groups);
        self.start_measuring();
        let creator = self.peers[0].clone();
        let second = self.peers[1].code.name.to_string();
        let mut sampled = 0;
        // Groups in flight at once: enough to keep the node busy, few enough to leave the
        // creator's profile room.
        let mut in_flight = tokio::task::JoinSet::new();
        for (i, partner) in partners.iter().enumerate() {
            let name = format!("{}g{i}", self.prefix);
            let partner = if i % 100 == 0 {
                sampled += 1;
                second.clone()
            } else {
                partner.name.to_string()
            };
            if let Err(e) = creator.ask(Order::CreateGroup(name.clone())).await {
                bail!("creating a group: {e}");
            }
            let started = Instant::now();
            self.text_due.insert(i as u64, started);
            let creator = creator.clone();
            in_flight.spawn(async move {
                let added = creator.ask(Order::Add(name.clone(), vec![partner])).await;
                let added_at = Instant::now();
                // Only once the partner is in: a text queued while the add's claim is under
                // way goes out first, to the creator alone.
                let sent = match added {
                    Ok(_) => creator.ask(Order::Send(name, load_text(i as u64))).await,
                    Err(_) => Err("not_added".into()),
                };
                (started, added_at, added, sent)
            });
            while in_flight.len() >= 64 {
                let finished = in_flight.join_next().await.expect("tasks")?;
                self.small_group_done(finished);
            }
            self.hear_all();
        }
        while let Some(finished) = in_flight.join_next().await {
            self.small_group_done(finished?);
        }
        self.until("the sampled partner decrypted its texts", |r| {
            r.texts_heard >= sampled
        })
        .await?;
        self.stop_measuring().await;
        Ok(())
    }

    fn small_group_done(
        &mut self,
        (started, added_at, added, sent): (Instant, Instant, Answer, Answer),
    ) {
        self.progress.step();
        match added {
            Ok(_) => {
                self.outcome.commits += 1;
                self.record("create", added_at, added_at - started);
            }
            Err(code) => self.error("create", &code),
        }
        if let Err(code) = sent {
            self.error("message.sent", &code);
        }
    }

    /// `joins` full members join the group of `members` one after another; each is removed
    /// again, so the group keeps its size.
    async fn join(&mut self, members: u64, joins: u64) -> anyhow::Result<()> {
        self.group_of(members, 100, 2, 0).await?;
        self.progress.phase("joining", joins);
        self.start_measuring();
        let creator_code = self.peers[0].code.clone();
        for _ in 0..joins {
            let joiner = self.new_peer(self.peers.len())?;
            let index = self
                .start_peer(joiner, std::slice::from_ref(&creator_code))
                .await?;
            let code = self.peers[index].code.clone();
            self.peers[0]
                .ask(Order::Trust(Box::new(code.clone())))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let start = Instant::now();
            self.commit(
                "add",
                Order::Add(GROUP.into(), vec![code.name.to_string()]),
                1,
            )
            .await?;
            self.until("a joiner joined", |r| r.joined[index].is_some())
                .await?;
            let joined = self.joined[index].expect("joined");
            self.record("join", joined, joined - start);
            self.commit(
                "remove",
                Order::Remove(GROUP.into(), vec![code.name.to_string()]),
                1,
            )
            .await?;
            // Out of the group: its thread stops.
            drop(self.peers[index].order(Order::Stop));
            self.progress.step();
        }
        self.stop_measuring().await;
        Ok(())
    }
}
