//! `mlschat chat`: chatting from a terminal, over the running daemon's API.
//!
//! On a terminal it is a full-screen view: the groups in a bar with their unread counts, the
//! group's scrollback with times, days and a marker of what is new (paged with PgUp/PgDn), its
//! members with what our contacts say of each, an input line of its own with readline-like
//! editing and a history of what was sent (arrivals never land in what is being typed), the
//! invitations and alerts waiting, slash commands, and a bell when someone else writes. Groups
//! joined and topics changed while it runs show at once. Fed by a pipe, each line read is sent
//! and what arrives is printed, as scripts expect.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use mlschat_node::daemon::client::{CallError, DaemonClient};
use mlschat_node::daemon::{Answer, Call, Changed, MemberWithState, Status};
use mlschat_node::profile::{
    self, Alert, GroupState, GroupSummary, HistoryEntry, HistoryKind, Invitation, RequestState,
    SenderState,
};
use ratatui::Frame;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Position};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use serde_json::Value;
use tui_input::Input;
use tui_input::backend::crossterm::EventHandler as _;

use crate::online::{daemon_client, refused, runtime};
use crate::report::{Report, inviter, sender_label};

/// Makes a call and takes its answer, of the one variant that call is answered with.
macro_rules! ask {
    ($caller:expr, $call:expr, $variant:path) => {
        match $caller.call(&$call).await {
            Ok($variant(value)) => Ok(value),
            Ok(other) => Err(anyhow::anyhow!("the daemon answered {other:?}")),
            Err(e) => Err(refused(e)),
        }
    };
}

/// The event a daemon's notification carries, if it is one.
fn event_of(note: &Value) -> Option<profile::Event> {
    serde_json::from_value(note.get("params")?.clone()).ok()
}

/// How much of each group's history is loaded to scroll through.
const SCROLLBACK: u32 = 1000;

const HELP: &[&str] = &[
    "/help                   this list",
    "/members                show or hide who is in the group and what they are to you",
    "/add NAME...            add contacts to the group",
    "/remove NAME...         remove members (user/device, user, or fingerprint prefix)",
    "/leave                  leave the group (a member's next commit removes you)",
    "/verify NAME [NUMBER]   the safety number you share with a contact; with NUMBER, record that it matched",
    "/topic TEXT             set the topic every member sees (admins)",
    "/group NAME             go to another group (Tab and Shift-Tab go round them)",
    "/requests               invitations from people who are not your contacts",
    "/accept GROUP, /decline GROUP   answer one",
    "/alerts                 what you should know, then marked as read",
    "/quit                   leave the chat (Ctrl-C too)",
    "PgUp and PgDn page through the history; Enter sends what you typed; Up and Down recall it",
    "Editing: Left/Right, Home/End or Ctrl-A/Ctrl-E, Ctrl-W a word, Ctrl-K to the end, Ctrl-U all",
];

/// How often (s) the chat asks the daemon for invitations, alerts and groups joined.
const REFRESH: Duration = Duration::from_secs(2);

/// Runs the chat in `group` (on a terminal, the first group when none is named).
pub fn chat(dir: &Path, report: &Report, group: Option<&str>) -> anyhow::Result<()> {
    let on_terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    match (on_terminal, group) {
        (true, group) => runtime()?.block_on(screen(dir, group)),
        (false, Some(group)) => runtime()?.block_on(lines(dir, report, group)),
        (false, None) => bail!("name the group to chat in: `mlschat chat GROUP`"),
    }
}

/// The group named `handle` (its name, or a prefix of its id) among the daemon's `groups`.
fn find<'a>(groups: &'a [GroupSummary], handle: &str) -> Option<&'a GroupSummary> {
    groups
        .iter()
        .find(|g| g.name.as_deref() == Some(handle) || g.id.starts_with(handle))
}

/// A line chat: new events are printed as they come, each line read is sent. Starts with the
/// group's recent history.
async fn lines(dir: &Path, report: &Report, group: &str) -> anyhow::Result<()> {
    let mut listener = daemon_client(dir).await?;
    let mut sender = daemon_client(dir).await?;
    let groups = ask!(sender, Call::Groups {}, Answer::Groups)?;
    let Some(found) = find(&groups, group) else {
        bail!("no group named {group:?}");
    };
    let (id, name) = (found.id.clone(), found.name.clone());
    let history = Call::History {
        group: group.to_owned(),
        limit: 20,
    };
    let history = ask!(sender, history, Answer::History)?;
    let last = history.last().map_or(0, |e| e.seq);
    for entry in &history {
        report.history_entry(entry);
    }
    listener
        .call(&Call::Subscribe { after: last })
        .await
        .map_err(refused)?;
    let (lines_tx, mut typed) = tokio::sync::mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if lines_tx.blocking_send(line).is_err() {
                return;
            }
        }
    });
    loop {
        tokio::select! {
            note = listener.next() => {
                let note = note.map_err(refused)?;
                if let Some(event) = event_of(&note)
                    && (Some(&event.group) == name.as_ref() || event.group == id)
                {
                    report.event(&event);
                }
            }
            line = typed.recv() => {
                let Some(text) = line else { return Ok(()) };
                if text.trim().is_empty() {
                    continue;
                }
                sender
                    .call(&Call::Send {
                        group: group.to_owned(),
                        text,
                    })
                    .await
                    .map_err(refused)?;
            }
        }
    }
}

/// One line of a group's scrollback.
struct Entry {
    at: i64,
    sender: String,
    state: Option<SenderState>,
    /// A text or an event of the group; none for a note of ours (help, answers to commands).
    kind: Option<HistoryKind>,
    body: String,
}

impl From<&HistoryEntry> for Entry {
    fn from(e: &HistoryEntry) -> Self {
        Self {
            at: e.at,
            sender: e.sender.clone(),
            state: Some(e.sender_state),
            kind: Some(e.kind),
            body: e.body.clone(),
        }
    }
}

impl From<&profile::Event> for Entry {
    fn from(e: &profile::Event) -> Self {
        Self {
            at: e.at,
            sender: e.sender.clone(),
            state: Some(e.sender_state),
            kind: Some(e.kind),
            body: e.body.clone(),
        }
    }
}

impl Entry {
    fn note(text: impl Into<String>) -> Self {
        Self {
            at: 0,
            sender: String::new(),
            state: None,
            kind: None,
            body: text.into(),
        }
    }

    fn is_text(&self) -> bool {
        self.kind == Some(HistoryKind::Text)
    }

    fn line(&self) -> Line<'static> {
        let time = Span::styled(clock(self.at), Style::new().fg(Color::DarkGray));
        let sender = sender_label(&self.sender, self.state);
        let sender_style = match self.state {
            Some(SenderState::Impostor) => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            Some(SenderState::Me) => Style::new().fg(Color::Cyan),
            Some(SenderState::Verified) => Style::new().fg(Color::Green),
            _ => Style::new().add_modifier(Modifier::BOLD),
        };
        match self.kind {
            None => Line::styled(format!("  » {}", self.body), Style::new().fg(Color::Yellow)),
            Some(HistoryKind::Text) => Line::from(vec![
                time,
                Span::styled(sender, sender_style),
                Span::raw(format!(": {}", self.body)),
            ]),
            _ => Line::styled(
                format!("{} * {sender} {}", clock(self.at), self.body),
                Style::new().fg(Color::DarkGray),
            ),
        }
    }
}

/// `HH:MM ` in local time.
fn clock(at: i64) -> String {
    use chrono::TimeZone;
    match chrono::Local.timestamp_opt(at, 0).single() {
        Some(time) => time.format("%H:%M ").to_string(),
        None => "--:-- ".into(),
    }
}

struct GroupView {
    id: String,
    name: Option<String>,
    /// The topic every member sees (the group's settings), if any.
    topic: Option<String>,
    /// We cannot go on in it (a commit we could not process): said in its title.
    broken: bool,
    entries: Vec<Entry>,
    unread: usize,
    /// Entries seen when we last left the group; those after arrived while we were away.
    seen: usize,
    /// Where "new" is marked while we look at the group: what arrived while we were away.
    new_from: Option<usize>,
}

impl GroupView {
    fn of(summary: &GroupSummary, entries: Vec<Entry>) -> Self {
        let mut view = Self {
            id: summary.id.clone(),
            name: None,
            topic: None,
            broken: false,
            seen: entries.len(),
            entries,
            unread: 0,
            new_from: None,
        };
        view.update(summary);
        view
    }

    /// What the group's summary says now: its name, topic and state.
    fn update(&mut self, summary: &GroupSummary) {
        self.name = summary.name.clone();
        self.topic = summary.topic.clone().filter(|t| !t.is_empty());
        self.broken = summary.state == GroupState::Broken;
    }

    /// Whether `event` is of this group (events name a group by its name, else its id).
    fn shows(&self, event: &profile::Event) -> bool {
        self.id == event.group || self.name.as_deref() == Some(&event.group)
    }

    fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.id[..8].to_owned())
    }

    /// The scrollback as lines: a line where the day changes, and one where what is new starts.
    fn lines(&self) -> Vec<Line<'static>> {
        let mut lines = Vec::new();
        let mut day = None;
        for (i, entry) in self.entries.iter().enumerate() {
            if self.new_from == Some(i) {
                lines.push(Line::styled(
                    "──── new ────",
                    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
                ));
            }
            let this_day = (entry.at > 0).then(|| date(entry.at)).flatten();
            if this_day.is_some() && this_day != day {
                lines.push(Line::styled(
                    format!("──── {} ────", this_day.as_deref().unwrap_or_default()),
                    Style::new().fg(Color::DarkGray),
                ));
                day = this_day;
            }
            lines.push(entry.line());
        }
        lines
    }
}

/// The day of `at` in local time, as people say it: "Monday 7 December 2026".
fn date(at: i64) -> Option<String> {
    use chrono::TimeZone;
    let time = chrono::Local.timestamp_opt(at, 0).single()?;
    Some(time.format("%A %-d %B %Y").to_string())
}

/// The full-screen chat's state: everything drawn comes from here.
struct Screen {
    groups: Vec<GroupView>,
    current: usize,
    input: Input,
    /// What was sent from this chat, oldest first, for Up and Down to recall; and, while
    /// recalling, which one is shown and what was being typed before.
    sent: Vec<String>,
    recalling: Option<(usize, String)>,
    /// Invitations waiting for our answer and alerts not acknowledged, from `status`.
    waiting: Vec<Invitation>,
    alerts: Vec<Alert>,
    /// Lines scrolled up from the bottom of the scrollback.
    scroll: usize,
    show_members: bool,
    members: Vec<MemberWithState>,
    /// The height of the scrollback when last drawn, for paging.
    page: usize,
}

/// What a key asks for.
enum Action {
    Nothing,
    Send(String),
    Command(String),
    Quit,
}

impl Screen {
    fn group(&mut self) -> &mut GroupView {
        &mut self.groups[self.current]
    }

    fn note(&mut self, text: impl Into<String>) {
        self.group().entries.push(Entry::note(text));
        self.scroll = 0;
    }

    fn switch(&mut self, to: usize) {
        let left = &mut self.groups[self.current];
        left.seen = left.entries.len();
        left.new_from = None;
        self.current = to;
        self.scroll = 0;
        let shown = &mut self.groups[to];
        shown.unread = 0;
        shown.new_from = (shown.entries.len() > shown.seen).then_some(shown.seen);
    }

    /// Up (`older`) or Down: the texts sent before, into the input line.
    fn recall(&mut self, older: bool) {
        let (at, typed) = match self.recalling.take() {
            Some(recalling) => recalling,
            None if older && !self.sent.is_empty() => (self.sent.len(), self.input.value().into()),
            None => return,
        };
        let at = if older { at.saturating_sub(1) } else { at + 1 };
        if at >= self.sent.len() {
            self.input = Input::new(typed);
        } else {
            self.input = Input::new(self.sent[at].clone());
            self.recalling = Some((at, typed));
        }
    }

    /// An event from the daemon. Returns whether to ring: someone else wrote.
    fn arrive(&mut self, event: &profile::Event) -> bool {
        let Some(at) = self.groups.iter().position(|g| g.shows(event)) else {
            return false;
        };
        let entry = Entry::from(event);
        let ring = entry.is_text() && entry.state != Some(SenderState::Me);
        if at != self.current && entry.is_text() {
            self.groups[at].unread += 1;
        }
        self.groups[at].entries.push(entry);
        ring
    }

    fn key(&mut self, key: event::KeyEvent) -> Action {
        if key.kind != KeyEventKind::Press {
            return Action::Nothing;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Char('c') if ctrl => return Action::Quit,
            KeyCode::Char('d') if ctrl && self.input.value().is_empty() => return Action::Quit,
            KeyCode::Enter => {
                let typed = std::mem::take(&mut self.input).value().trim().to_owned();
                self.recalling = None;
                if typed.is_empty() {
                    return Action::Nothing;
                }
                if self.sent.last() != Some(&typed) {
                    self.sent.push(typed.clone());
                }
                if let Some(command) = typed.strip_prefix('/') {
                    return Action::Command(command.to_owned());
                }
                return Action::Send(typed);
            }
            KeyCode::Up => self.recall(true),
            KeyCode::Down => self.recall(false),
            KeyCode::Tab => self.switch((self.current + 1) % self.groups.len()),
            KeyCode::BackTab => {
                self.switch((self.current + self.groups.len() - 1) % self.groups.len())
            }
            KeyCode::PageUp => self.scroll += self.page.max(1),
            KeyCode::PageDown => self.scroll = self.scroll.saturating_sub(self.page.max(1)),
            KeyCode::Esc => self.input.reset(),
            // Editing: tui-input's readline keys.
            _ => {
                self.input.handle_event(&Event::Key(key));
            }
        }
        Action::Nothing
    }

    fn draw(&mut self, frame: &mut Frame) {
        let [bar, body, input, hints] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(3),
            Constraint::Length(3),
            Constraint::Length(1),
        ])
        .areas(frame.area());

        let tabs: Vec<Span> = self
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let label = match g.unread {
                    0 => format!(" {} ", g.label()),
                    n => format!(" {} ({n}) ", g.label()),
                };
                if i == self.current {
                    Span::styled(label, Style::new().add_modifier(Modifier::REVERSED))
                } else if g.unread > 0 {
                    Span::styled(label, Style::new().add_modifier(Modifier::BOLD))
                } else {
                    Span::raw(label)
                }
            })
            .collect();
        frame.render_widget(Paragraph::new(Line::from(tabs)), bar);

        // The members beside the messages, narrower on a narrow screen, hidden on a tiny one.
        let (messages, members) = if self.show_members && body.width >= 60 {
            let side = (body.width / 3).min(36);
            let [m, side] =
                Layout::horizontal([Constraint::Min(20), Constraint::Length(side)]).areas(body);
            (m, Some(side))
        } else {
            (body, None)
        };
        let width = messages.width.saturating_sub(2) as usize;
        let height = messages.height.saturating_sub(2) as usize;
        self.page = height.saturating_sub(1);
        let lines: Vec<Line> = self.groups[self.current]
            .lines()
            .into_iter()
            .flat_map(|line| wrap(line, width))
            .collect();
        self.scroll = self.scroll.min(lines.len().saturating_sub(height));
        let end = lines.len() - self.scroll;
        let start = end.saturating_sub(height);
        let shown = &self.groups[self.current];
        let mut label = match &shown.topic {
            Some(topic) => format!("{} · {topic}", shown.label()),
            None => shown.label(),
        };
        if shown.broken {
            label.push_str(" · BROKEN: you cannot go on here; an admin starts it again");
        }
        let title = match self.scroll {
            0 => format!(" {label} "),
            n => format!(" {label} (scrolled up {n} lines: PgDn) "),
        };
        frame.render_widget(
            Paragraph::new(lines[start..end].to_vec()).block(Block::bordered().title(title)),
            messages,
        );
        if let Some(side) = members {
            let lines: Vec<Line> = self.members.iter().map(member_line).collect();
            frame.render_widget(
                Paragraph::new(lines).block(Block::bordered().title(" members ")),
                side,
            );
        }

        // The input line scrolls sideways to keep the cursor in view.
        let room = input.width.saturating_sub(5) as usize;
        let shift = self.input.visual_scroll(room);
        frame.render_widget(
            Paragraph::new(format!("> {}", self.input.value()))
                .scroll((0, shift as u16))
                .block(Block::bordered()),
            input,
        );
        let cursor = (self.input.visual_cursor().saturating_sub(shift)) as u16;
        frame.set_cursor_position(Position::new(input.x + 3 + cursor, input.y + 1));
        // What waits for us takes the place of the key hints.
        let hints_text = match self.waiting.is_empty() && self.alerts.is_empty() {
            true => "Enter send · /help · Tab next group · PgUp/PgDn history · Ctrl-C quit",
            false => "/help · Ctrl-C quit",
        };
        let mut line = vec![Span::styled(hints_text, Style::new().fg(Color::DarkGray))];
        let attention = Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD);
        if !self.waiting.is_empty() {
            let n = self.waiting.len();
            let s = if n == 1 { "" } else { "s" };
            line.push(Span::styled(
                format!(" · {n} invitation{s}: /requests"),
                attention,
            ));
        }
        if !self.alerts.is_empty() {
            let n = self.alerts.len();
            let s = if n == 1 { "" } else { "s" };
            line.push(Span::styled(format!(" · {n} alert{s}: /alerts"), attention));
        }
        frame.render_widget(Paragraph::new(Line::from(line)), hints);
    }

    /// What the daemon's `status` says waits for us.
    fn attention(&mut self, status: Status) {
        self.waiting = status
            .invitations
            .into_iter()
            .filter(|i| i.request == Some(RequestState::Waiting))
            .collect();
        self.alerts = status.alerts;
    }
}

/// A member as the side list shows it: what our contacts say of them first.
fn member_line(member: &MemberWithState) -> Line<'static> {
    let name = member.name.as_deref().unwrap_or("?");
    let (mark, style) = match member.state {
        SenderState::Me => ("  (you) ", Style::new().fg(Color::Cyan)),
        SenderState::Verified => ("✓ ", Style::new().fg(Color::Green)),
        SenderState::Contact => ("  ", Style::new()),
        SenderState::Impostor => (
            "! ",
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
        SenderState::Unknown => ("? ", Style::new().fg(Color::DarkGray)),
    };
    let mut text = match member.state {
        SenderState::Me => format!("{name}{mark}"),
        SenderState::Impostor => format!("{mark}{name} NOT your contact"),
        SenderState::Unknown => format!("{mark}{name} (not a contact)"),
        _ => format!("{mark}{name}"),
    };
    if member.admin {
        text.push_str(" (admin)");
    }
    if member.invited {
        text.push_str(" (invited)");
    }
    Line::styled(text, style)
}

/// Cuts a line into pieces of at most `width` characters, between words where it can (a word
/// longer than a line is cut where the line ends); styles are kept per piece.
fn wrap(line: Line<'static>, width: usize) -> Vec<Line<'static>> {
    if width == 0 || line.width() <= width {
        return vec![line];
    }
    // Words with the blanks after them, each with its span's style.
    let mut words: Vec<(String, Style)> = Vec::new();
    for span in &line.spans {
        let mut word = String::new();
        for c in span.content.chars() {
            if c != ' ' && word.ends_with(' ') {
                words.push((std::mem::take(&mut word), span.style));
            }
            word.push(c);
        }
        if !word.is_empty() {
            words.push((word, span.style));
        }
    }
    let mut out = Vec::new();
    let mut current: Vec<Span<'static>> = Vec::new();
    let mut used = 0;
    for (mut word, style) in words {
        let length = word.trim_end().chars().count();
        if used > 0 && used + length > width {
            out.push(Line::from(std::mem::take(&mut current)).style(line.style));
            used = 0;
        }
        while word.chars().count() > width - used && word.trim_end().chars().count() > width {
            let cut = word
                .char_indices()
                .nth(width - used)
                .map_or(word.len(), |(at, _)| at);
            let piece: String = word.drain(..cut).collect();
            current.push(Span::styled(piece, style));
            out.push(Line::from(std::mem::take(&mut current)).style(line.style));
            used = 0;
        }
        used += word.chars().count();
        current.push(Span::styled(word, style));
    }
    if !current.is_empty() {
        out.push(Line::from(current).style(line.style));
    }
    out
}

/// The full-screen chat, until /quit or Ctrl-C.
async fn screen(dir: &Path, start_in: Option<&str>) -> anyhow::Result<()> {
    let mut listener = daemon_client(dir).await?;
    let mut caller = daemon_client(dir).await?;
    let listed = chat_groups(&mut caller).await?;
    if listed.is_empty() {
        bail!("you are in no group yet: create one with `mlschat group create NAME`");
    }
    let current = match start_in {
        Some(handle) => {
            let found = find(&listed, handle).with_context(|| format!("no group {handle:?}"))?;
            listed.iter().position(|g| g.id == found.id).unwrap_or(0)
        }
        None => 0,
    };
    let mut groups = Vec::new();
    let mut last_seen = 0;
    for g in &listed {
        let (entries, last) = scrollback(&mut caller, g).await?;
        last_seen = last_seen.max(last);
        groups.push(GroupView::of(g, entries));
    }
    listener
        .call(&Call::Subscribe { after: last_seen })
        .await
        .map_err(refused)?;
    let mut screen = Screen {
        groups,
        current,
        input: Input::default(),
        sent: Vec::new(),
        recalling: None,
        waiting: Vec::new(),
        alerts: Vec::new(),
        scroll: 0,
        show_members: true,
        members: Vec::new(),
        page: 10,
    };
    screen.members = members(&mut caller, &screen.groups[current].id).await;
    screen.note("/help lists the commands");

    // Keys are read on a thread of their own; the loop below waits for them and for events.
    let (keys_tx, mut keys) = tokio::sync::mpsc::channel::<Event>(64);
    std::thread::spawn(move || {
        loop {
            match event::poll(Duration::from_millis(200)) {
                Ok(true) => match event::read() {
                    Ok(e) => {
                        if keys_tx.blocking_send(e).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                },
                Ok(false) if keys_tx.is_closed() => return,
                Ok(false) => {}
                Err(_) => return,
            }
        }
    });

    let mut terminal = ratatui::init();
    let mut refresh = tokio::time::interval(REFRESH);
    let result: anyhow::Result<()> = async {
        loop {
            terminal.draw(|f| screen.draw(f))?;
            let shown = screen.current;
            tokio::select! {
                note = listener.next() => {
                    let note = note.map_err(refused)?;
                    let Some(event) = event_of(&note) else { continue };
                    if !screen.groups.iter().any(|g| g.shows(&event)) {
                        // A group joined while the chat runs: its scrollback holds this event.
                        refresh_groups(&mut screen, &mut caller).await;
                        continue;
                    }
                    if screen.arrive(&event) {
                        let mut out = std::io::stdout();
                        out.write_all(b"\x07")?;
                        out.flush()?;
                    }
                    if event.kind == HistoryKind::Event {
                        // Members, the name or the topic may have changed.
                        refresh_groups(&mut screen, &mut caller).await;
                        let id = screen.groups[screen.current].id.clone();
                        screen.members = members(&mut caller, &id).await;
                    }
                }
                _ = refresh.tick() => {
                    if let Ok(status) = ask!(caller, Call::Status {}, Answer::Status) {
                        screen.attention(status);
                    }
                    refresh_groups(&mut screen, &mut caller).await;
                }
                key = keys.recv() => {
                    let Some(Event::Key(key)) = key else {
                        if key.is_none() { return Ok(()) }
                        continue;
                    };
                    match screen.key(key) {
                        Action::Nothing => {}
                        Action::Quit => return Ok(()),
                        Action::Send(text) => {
                            let id = screen.groups[screen.current].id.clone();
                            if let Err(e) = caller.call(&Call::Send { group: id, text }).await {
                                screen.note(failure(e));
                            }
                        }
                        Action::Command(command) => {
                            if command == "quit" {
                                return Ok(());
                            }
                            terminal.draw(|f| screen.draw(f))?;
                            run_command(&mut screen, &mut caller, &command).await;
                        }
                    }
                }
            }
            if screen.current != shown {
                let id = screen.groups[screen.current].id.clone();
                screen.members = members(&mut caller, &id).await;
            }
        }
    }
    .await;
    ratatui::restore();
    result
}

/// The groups the chat shows: those we are in (a broken one too, to read it).
async fn chat_groups(caller: &mut DaemonClient) -> anyhow::Result<Vec<GroupSummary>> {
    let mut listed = ask!(caller, Call::Groups {}, Answer::Groups)?;
    listed.retain(|g| matches!(g.state, GroupState::Active | GroupState::Broken));
    Ok(listed)
}

/// A group's recent history, and the newest event id in it.
async fn scrollback(
    caller: &mut DaemonClient,
    group: &GroupSummary,
) -> anyhow::Result<(Vec<Entry>, i64)> {
    let history = Call::History {
        group: group.id.clone(),
        limit: SCROLLBACK,
    };
    let history = ask!(caller, history, Answer::History)?;
    let last = history.iter().map(|e| e.seq).max().unwrap_or(0);
    Ok((history.iter().map(Entry::from).collect(), last))
}

/// Groups joined while the chat runs appear, with their scrollback; names, topics and states
/// are brought up to date.
async fn refresh_groups(screen: &mut Screen, caller: &mut DaemonClient) {
    let Ok(listed) = chat_groups(caller).await else {
        return;
    };
    for summary in listed {
        match screen.groups.iter_mut().find(|g| summary.id == g.id) {
            Some(view) => view.update(&summary),
            None => {
                let Ok((entries, _)) = scrollback(caller, &summary).await else {
                    continue;
                };
                let mut view = GroupView::of(&summary, entries);
                // All of it is new to us.
                view.unread = view.entries.iter().filter(|e| e.is_text()).count();
                view.seen = 0;
                let label = view.label();
                screen.groups.push(view);
                screen.note(format!("you are in a new group: {label} (Tab goes to it)"));
            }
        }
    }
}

async fn members(caller: &mut DaemonClient, group: &str) -> Vec<MemberWithState> {
    let group = group.to_owned();
    ask!(caller, Call::Members { group }, Answer::Members).unwrap_or_default()
}

/// A failed call, as a note: what happened and what to do come from the daemon's message.
fn failure(e: CallError) -> String {
    format!("failed: {e}")
}

async fn run_command(screen: &mut Screen, caller: &mut DaemonClient, command: &str) {
    let mut words = command.split_whitespace();
    let verb = words.next().unwrap_or_default();
    let args: Vec<String> = words.map(str::to_owned).collect();
    let id = screen.groups[screen.current].id.clone();
    let call = match (verb, args.as_slice()) {
        ("help", _) => {
            for line in HELP {
                screen.note(*line);
            }
            return;
        }
        ("members", _) => {
            screen.show_members = !screen.show_members;
            screen.members = members(caller, &id).await;
            for m in screen.members.clone() {
                screen.note(member_line(&m).to_string());
            }
            return;
        }
        ("group", [handle]) => {
            match screen
                .groups
                .iter()
                .position(|g| g.name.as_deref() == Some(handle) || g.id.starts_with(handle))
            {
                Some(at) => screen.switch(at),
                None => screen.note(format!("no group {handle:?} (Tab goes round them)")),
            }
            return;
        }
        ("requests", []) => {
            if screen.waiting.is_empty() {
                screen.note("no invitation waits for you");
            }
            for request in screen.waiting.clone() {
                let group = &request.group[..request.group.len().min(8)];
                let from = inviter(&request);
                screen.note(format!(
                    "group {group} from {from}: /accept {group} or /decline {group}"
                ));
            }
            return;
        }
        ("alerts", []) => {
            if screen.alerts.is_empty() {
                screen.note("no alerts");
            }
            for alert in screen.alerts.clone() {
                screen.note(format!("! {}", alert.text));
            }
            if let Some(last) = screen.alerts.last().map(|a| a.id) {
                let _ = caller.call(&Call::AlertsAck { up_to: Some(last) }).await;
                screen.alerts.clear();
            }
            return;
        }
        ("accept", [group]) => Call::RequestAccept {
            group: group.to_string(),
        },
        ("decline", [group]) => Call::RequestDecline {
            group: group.to_string(),
        },
        ("topic", words) if !words.is_empty() => Call::GroupSet {
            group: id.to_owned(),
            name: None,
            topic: Some(command.trim_start()["topic".len()..].trim().to_owned()),
            admin: Vec::new(),
            not_admin: Vec::new(),
        },
        ("add", who) if !who.is_empty() => Call::GroupAdd {
            group: id.to_owned(),
            who: who.iter().map(|w| w.to_string()).collect(),
        },
        ("remove", who) if !who.is_empty() => Call::GroupRemove {
            group: id.to_owned(),
            who: who.iter().map(|w| w.to_string()).collect(),
        },
        ("leave", []) => Call::GroupLeave {
            group: id.to_owned(),
        },
        ("verify", [name]) => Call::ContactVerify {
            name: name.to_string(),
            matches: None,
        },
        ("verify", [name, number @ ..]) => Call::ContactVerify {
            name: name.to_string(),
            matches: Some(number.join(" ")),
        },
        _ => {
            screen.note(format!("not a command: /{command} (/help lists them)"));
            return;
        }
    };
    screen.note(format!("{verb}…"));
    match caller.call(&call).await {
        Err(e) => screen.note(failure(e)),
        Ok(Answer::ContactVerify(answer)) => {
            let (name, number) = (answer.contact, answer.safety_number);
            if answer.changed_key {
                screen.note(format!(
                    "{name} was shown with ANOTHER key: accept it only if they read you this number"
                ));
            } else {
                screen.note(format!("your safety number with {name}:"));
            }
            screen.note(number.clone());
            if answer.verified {
                screen.note("verified: it matched when you compared it");
            } else {
                screen.note(format!(
                    "if {name} reads you the same, type: /verify {name} {number}"
                ));
            }
        }
        Ok(Answer::Leaving(_)) => {
            screen.note("asked to leave: a member's next commit removes you");
        }
        Ok(Answer::Declined(declined)) => {
            screen.waiting.retain(|r| r.group != declined.group);
            screen.note("declined");
        }
        Ok(Answer::Synced(_)) => {
            screen.note("accepted: the group appears once joined");
            refresh_groups(screen, caller).await;
        }
        Ok(Answer::Changed(Changed::Queued(_)) | Answer::SettingsChanged(Changed::Queued(_))) => {
            screen.note("queued: the connection went; it goes on once it is back");
        }
        Ok(
            Answer::Changed(Changed::Group(group)) | Answer::SettingsChanged(Changed::Group(group)),
        ) => {
            screen.note(format!(
                "done: epoch {}, {} members",
                group.epoch, group.members
            ));
            screen.members = members(caller, &id).await;
            refresh_groups(screen, caller).await;
        }
        Ok(other) => screen.note(format!("done: {other:?}")),
    }
}
