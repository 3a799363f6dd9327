//! What the full-screen chat shows and how keys change it: groups with unread counts, the
//! scrollback with days and a marker of what is new, members, the input line. No I/O: the
//! session feeds it events and answers and draws it.

use mlschat_node::daemon::{MemberWithState, Status};
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
use tui_input::Input;
use tui_input::backend::crossterm::EventHandler as _;

use crate::report::sender_label;

/// One line of a group's scrollback.
pub(super) struct Entry {
    pub(super) at: i64,
    pub(super) sender: String,
    pub(super) state: Option<SenderState>,
    /// A text or an event of the group; none for a note of ours (help, answers to commands).
    pub(super) kind: Option<HistoryKind>,
    pub(super) body: String,
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
    pub(super) fn note(text: impl Into<String>) -> Self {
        Self {
            at: 0,
            sender: String::new(),
            state: None,
            kind: None,
            body: text.into(),
        }
    }

    pub(super) fn is_text(&self) -> bool {
        self.kind == Some(HistoryKind::Text)
    }

    pub(super) fn line(&self) -> Line<'static> {
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

pub(super) struct GroupView {
    pub(super) id: String,
    pub(super) name: Option<String>,
    /// The topic every member sees (the group's settings), if any.
    pub(super) topic: Option<String>,
    /// We cannot go on in it (a commit we could not process): said in its title.
    pub(super) broken: bool,
    pub(super) entries: Vec<Entry>,
    pub(super) unread: usize,
    /// Entries seen when we last left the group; those after arrived while we were away.
    pub(super) seen: usize,
    /// Where "new" is marked while we look at the group: what arrived while we were away.
    pub(super) new_from: Option<usize>,
}

impl GroupView {
    pub(super) fn of(summary: &GroupSummary, entries: Vec<Entry>) -> Self {
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
    pub(super) fn update(&mut self, summary: &GroupSummary) {
        self.name = summary.name.clone();
        self.topic = summary.topic.clone().filter(|t| !t.is_empty());
        self.broken = summary.state == GroupState::Broken;
    }

    /// Whether `event` is of this group (events name a group by its name, else its id).
    pub(super) fn shows(&self, event: &profile::Event) -> bool {
        self.id == event.group || self.name.as_deref() == Some(&event.group)
    }

    pub(super) fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.id[..8].to_owned())
    }

    /// The scrollback as lines: a line where the day changes, and one where what is new starts.
    pub(super) fn lines(&self) -> Vec<Line<'static>> {
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
pub(super) struct Screen {
    pub(super) groups: Vec<GroupView>,
    pub(super) current: usize,
    pub(super) input: Input,
    /// What was sent from this chat, oldest first, for Up and Down to recall; and, while
    /// recalling, which one is shown and what was being typed before.
    pub(super) sent: Vec<String>,
    pub(super) recalling: Option<(usize, String)>,
    /// Invitations waiting for our answer and alerts not acknowledged, from `status`.
    pub(super) waiting: Vec<Invitation>,
    pub(super) alerts: Vec<Alert>,
    /// Lines scrolled up from the bottom of the scrollback.
    pub(super) scroll: usize,
    pub(super) show_members: bool,
    pub(super) members: Vec<MemberWithState>,
    /// The height of the scrollback when last drawn, for paging.
    pub(super) page: usize,
}

/// What a key asks for.
pub(super) enum Action {
    Nothing,
    Send(String),
    Command(String),
    Quit,
}

impl Screen {
    pub(super) fn new(groups: Vec<GroupView>, current: usize) -> Self {
        Self {
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
        }
    }

    pub(super) fn group(&mut self) -> &mut GroupView {
        &mut self.groups[self.current]
    }

    pub(super) fn note(&mut self, text: impl Into<String>) {
        self.group().entries.push(Entry::note(text));
        self.scroll = 0;
    }

    pub(super) fn switch(&mut self, to: usize) {
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
    pub(super) fn recall(&mut self, older: bool) {
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
    pub(super) fn arrive(&mut self, event: &profile::Event) -> bool {
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

    pub(super) fn key(&mut self, key: event::KeyEvent) -> Action {
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

    pub(super) fn draw(&mut self, frame: &mut Frame) {
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
    pub(super) fn attention(&mut self, status: Status) {
        self.waiting = status
            .invitations
            .into_iter()
            .filter(|i| i.request == Some(RequestState::Waiting))
            .collect();
        self.alerts = status.alerts;
    }
}

/// A member as the side list shows it: what our contacts say of them first.
pub(super) fn member_line(member: &MemberWithState) -> Line<'static> {
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
