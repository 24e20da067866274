//! `bnetstat watch`'s screen. [`WatchState`] is what the viewer chose (sort,
//! filter, grouping, pause, scroll) and what just changed (new rows to
//! highlight, closed rows to fade out), driven by the model's [`Change`]s,
//! keys, and a `now` passed in. [`render`] draws it into a ratatui buffer.
//! Both are pure: no clock, no terminal, no kernel.

use std::{
    cmp::Ordering,
    collections::{BinaryHeap, HashMap},
    net::{IpAddr, SocketAddr},
};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::{
    buffer::Buffer,
    layout::Rect,
    style::{Color, Modifier, Style},
};

use crate::{
    decode::{Family, Owner, TcpState},
    escape::printable,
    model::{Brief, Change, End, Model, Sock},
    sockdiag::Proto,
    views::table::{self, Names, Selection, proto_name, state_name},
};

/// How long a new row stays highlighted.
pub const FRESH_NS: u64 = 2_000_000_000;
/// How long a closed row stays on screen, dimmed, with its last state.
pub const GHOST_NS: u64 = 3_000_000_000;

/// A column the table can be sorted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    Proto,
    Local,
    Remote,
    State,
    Pid,
    Program,
    /// Time in the current state.
    Age,
}

impl Column {
    const ALL: [Column; 7] = [
        Column::Proto,
        Column::Local,
        Column::Remote,
        Column::State,
        Column::Pid,
        Column::Program,
        Column::Age,
    ];

    fn title(self) -> &'static str {
        match self {
            Column::Proto => "Proto",
            Column::Local => "Local Address",
            Column::Remote => "Foreign Address",
            Column::State => "State",
            Column::Pid => "PID",
            Column::Program => "Program",
            Column::Age => "Age",
        }
    }

    /// The next column to the right (`by` 1) or left (`by` -1), wrapping.
    fn step(self, by: isize) -> Column {
        let n = Column::ALL.len() as isize;
        let at = Column::ALL.iter().position(|&c| c == self).unwrap_or(0) as isize;
        Column::ALL[(at + by).rem_euclid(n) as usize]
    }
}

/// How a row is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Steady,
    /// Opened less than [`FRESH_NS`] ago: highlighted.
    Fresh,
    /// Closed less than [`GHOST_NS`] ago: dimmed, with its last state.
    Gone,
}

/// One row as shown.
#[derive(Clone, Debug, PartialEq)]
pub struct Row<'a> {
    pub cookie: u64,
    pub sock: &'a Sock,
    pub mark: Mark,
    /// The moment its age is measured at: now, when it closed, or when the
    /// view was paused.
    pub at_ns: u64,
}

/// One screen line of the table body.
#[derive(Clone, Debug, PartialEq)]
pub enum Line<'a> {
    /// Heads a process's rows when grouping.
    Group {
        owner: Option<&'a Owner>,
        sockets: usize,
    },
    Row(Row<'a>),
}

/// What a key asks of the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Quit,
    Redraw,
    /// Not a key the screen uses.
    Same,
}

/// How much the last frame showed, for scrolling by keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shown {
    /// Body lines there are.
    pub lines: usize,
    /// Body lines that fit on the screen.
    pub page: usize,
}

/// Counters for the status line, measured by the loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub events_per_sec: u64,
    /// Events the kernel side could not deliver, since start.
    pub lost: u64,
    /// What the last frame cost to build and draw, in µs: bnetstat's own
    /// cost of watching, in plain sight.
    pub frame_us: Option<u64>,
}

/// A closed socket still on screen.
#[derive(Debug)]
struct Ghost {
    brief: Brief,
    sock: Sock,
    closed_ns: u64,
}

/// A row as it was when the view was paused: brief (with the cookie),
/// socket, mark, and the moment its age is measured at.
type FrozenRow = (Brief, Sock, Mark, u64);

/// Everything about the screen but the sockets themselves.
#[derive(Debug)]
pub struct WatchState {
    /// The command line's choice of sockets (protocol, family, namespace).
    select: table::Options,
    sort: Column,
    reverse: bool,
    filter: String,
    /// Keys go into the filter.
    typing: bool,
    grouped: bool,
    /// The rows as they were when the view was paused.
    frozen: Option<Vec<FrozenRow>>,
    /// When each recent row opened.
    fresh: HashMap<u64, u64>,
    ghosts: HashMap<u64, Ghost>,
    /// First body line on screen.
    scroll: usize,
    shown: Shown,
}

impl WatchState {
    /// A state showing the sockets `select` picks, sorted as netstat does.
    pub fn new(select: table::Options) -> WatchState {
        WatchState {
            select,
            sort: Column::Proto,
            reverse: false,
            filter: String::new(),
            typing: false,
            grouped: false,
            frozen: None,
            fresh: HashMap::new(),
            ghosts: HashMap::new(),
            scroll: 0,
            shown: Shown::default(),
        }
    }

    /// Takes note of what an event (or the expiry of a `TIME_WAIT`) did to
    /// the model at `now_ns`.
    pub fn note(&mut self, change: Change, now_ns: u64) {
        match change {
            Change::Opened(cookie) => {
                self.ghosts.remove(&cookie);
                self.fresh.insert(cookie, now_ns);
            }
            Change::Closed(cookie, sock) => {
                self.fresh.remove(&cookie);
                self.ghosts.insert(
                    cookie,
                    Ghost {
                        brief: Brief::of(cookie, &sock),
                        sock,
                        closed_ns: now_ns,
                    },
                );
            }
            Change::Changed(_) | Change::Nothing => {}
        }
    }

    /// Forgets highlights and ghosts that are over by `now_ns`; says
    /// whether any was, so the screen needs redrawing.
    pub fn expire(&mut self, now_ns: u64) -> bool {
        let before = self.fresh.len() + self.ghosts.len();
        self.fresh
            .retain(|_, &mut at| now_ns < at.saturating_add(FRESH_NS));
        self.ghosts
            .retain(|_, g| now_ns < g.closed_ns.saturating_add(GHOST_NS));
        before != self.fresh.len() + self.ghosts.len()
    }

    /// Whether the table is frozen.
    pub fn paused(&self) -> bool {
        self.frozen.is_some()
    }

    /// Remembers how much the last frame showed.
    pub fn shown(&mut self, shown: Shown) {
        self.shown = shown;
        self.scroll = self.scroll.min(self.last_scroll());
    }

    fn last_scroll(&self) -> usize {
        self.shown.lines.saturating_sub(self.shown.page)
    }

    /// Acts on a key; `model` and `now_ns` are what a pause freezes.
    pub fn key(&mut self, key: KeyEvent, model: &Model, now_ns: u64) -> Flow {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Flow::Quit;
        }
        if self.typing {
            match key.code {
                KeyCode::Enter => self.typing = false,
                KeyCode::Esc => {
                    self.typing = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) if !c.is_control() => self.filter.push(c),
                _ => return Flow::Same,
            }
            self.scroll = 0;
            return Flow::Redraw;
        }
        let page = self.shown.page.max(1) as isize;
        match key.code {
            KeyCode::Char('q') => return Flow::Quit,
            KeyCode::Char('s') | KeyCode::Right => self.sort = self.sort.step(1),
            KeyCode::Char('S') | KeyCode::Left => self.sort = self.sort.step(-1),
            KeyCode::Char('r') => self.reverse = !self.reverse,
            KeyCode::Char('/') => self.typing = true,
            KeyCode::Esc => self.filter.clear(),
            KeyCode::Char('g') => self.grouped = !self.grouped,
            KeyCode::Char('p' | ' ') => self.toggle_pause(model, now_ns),
            KeyCode::Up => self.scroll_by(-1),
            KeyCode::Down => self.scroll_by(1),
            KeyCode::PageUp => self.scroll_by(-page),
            KeyCode::PageDown => self.scroll_by(page),
            KeyCode::Home => self.scroll = 0,
            KeyCode::End => self.scroll = self.last_scroll(),
            _ => return Flow::Same,
        }
        Flow::Redraw
    }

    fn scroll_by(&mut self, by: isize) {
        self.scroll = self
            .scroll
            .saturating_add_signed(by)
            .min(self.last_scroll());
    }

    fn toggle_pause(&mut self, model: &Model, now_ns: u64) {
        if self.frozen.take().is_some() {
            return;
        }
        let rows = self
            .unmarked(model, now_ns)
            .map(|(brief, mut r)| {
                self.mark(&mut r, now_ns);
                (*brief, r.sock.clone(), r.mark, r.at_ns)
            })
            .collect();
        self.frozen = Some(rows);
    }

    /// Every row now, each with its brief: the model's and the ghosts'.
    fn unmarked<'a>(
        &'a self,
        model: &'a Model,
        now_ns: u64,
    ) -> impl Iterator<Item = (&'a Brief, Row<'a>)> {
        socks(model, now_ns).chain(self.fading(now_ns))
    }

    /// The closed rows still on screen at `now_ns`, each with its brief.
    fn fading(&self, now_ns: u64) -> impl Iterator<Item = (&Brief, Row<'_>)> {
        // Time decides, not `expire`, so a frame never shows a stale ghost.
        self.ghosts
            .values()
            .filter(move |g| now_ns < g.closed_ns.saturating_add(GHOST_NS))
            .map(|g| {
                let row = Row {
                    cookie: g.brief.cookie,
                    sock: &g.sock,
                    mark: Mark::Gone,
                    at_ns: g.closed_ns,
                };
                (&g.brief, row)
            })
    }

    /// Highlights a live row that is new at `now_ns`; a frozen row keeps
    /// the mark it had.
    fn mark(&self, r: &mut Row<'_>, now_ns: u64) {
        if self.frozen.is_none()
            && r.mark == Mark::Steady
            && let Some(&at) = self.fresh.get(&r.cookie)
            && now_ns < at.saturating_add(FRESH_NS)
        {
            r.mark = Mark::Fresh;
        }
    }

    /// The rows to show at `now_ns` (or as frozen), filtered and sorted.
    pub fn rows<'a>(&'a self, model: &'a Model, names: &dyn Names, now_ns: u64) -> Vec<Row<'a>> {
        self.top_rows(model, names, now_ns, usize::MAX).0
    }

    /// The first `k` rows in order, how many rows there are in all, and
    /// how many of those are sockets (not closed ones fading out). Each
    /// column's order is a key made of the brief, but for the program name.
    fn top_rows<'a>(
        &'a self,
        model: &'a Model,
        names: &dyn Names,
        now_ns: u64,
        k: usize,
    ) -> (Vec<Row<'a>>, usize, usize) {
        // netstat's order breaks ties: protocol, namespace, local end,
        // remote end, and the cookie, which no two rows share. Sorted by
        // protocol, it is the whole order.
        fn netstat(b: &Brief) -> (u8, u32, End, End, u64) {
            (proto_rank(b), b.netns, b.local(), b.remote(), b.cookie)
        }
        match self.sort {
            Column::Proto => self.top_by(model, names, now_ns, k, |b, _| netstat(b)),
            Column::Local => self.top_by(model, names, now_ns, k, |b, _| (b.local(), netstat(b))),
            Column::Remote => self.top_by(model, names, now_ns, k, |b, _| (b.remote(), netstat(b))),
            Column::State => {
                self.top_by(model, names, now_ns, k, |b, _| (state_rank(b), netstat(b)))
            }
            // Sockets with no known owner sort after those with one.
            Column::Pid => self.top_by(model, names, now_ns, k, |b, _| {
                (b.pid().map_or(u64::MAX, u64::from), netstat(b))
            }),
            Column::Program => self.top_by(model, names, now_ns, k, |b, r| {
                let name = r
                    .sock
                    .owner
                    .as_ref()
                    .map_or("\u{10ffff}", |o| o.comm.as_str());
                (name, netstat(b))
            }),
            // Youngest first; a socket older than bnetstat is oldest.
            Column::Age => self.top_by(model, names, now_ns, k, |b, r| {
                let age = age(b.since_ns(), r.at_ns).unwrap_or(u64::MAX);
                (age, netstat(b))
            }),
        }
    }

    /// [`Self::top_rows`], ranked by `key`. Only the rows on screen are
    /// kept, sorted and marked: one pass over 100,000 sockets with a heap
    /// of `k`, no copy of them all, which reads their briefs and not the
    /// sockets unless a filter or the key needs them.
    fn top_by<'a, K: Ord>(
        &'a self,
        model: &'a Model,
        names: &dyn Names,
        now_ns: u64,
        k: usize,
        key: impl Fn(&Brief, &Row<'a>) -> K,
    ) -> (Vec<Row<'a>>, usize, usize) {
        let mut top = Top {
            selection: Selection::new(&self.select),
            terms: self.terms(),
            names,
            key,
            k,
            reverse: self.reverse,
            best: BinaryHeap::new(),
            total: 0,
            showing: 0,
        };
        match &self.frozen {
            Some(rows) => rows.iter().map(thaw).for_each(|(b, r)| top.offer(b, r)),
            None => {
                socks(model, now_ns).for_each(|(b, r)| top.offer(b, r));
                self.fading(now_ns).for_each(|(b, r)| top.offer(b, r));
            }
        }
        let rows = top
            .best
            .into_sorted_vec()
            .into_iter()
            .map(|r| {
                let mut row = r.row;
                self.mark(&mut row, now_ns);
                row
            })
            .collect();
        (rows, top.total, top.showing)
    }

    /// The filter's words, lowercase.
    fn terms(&self) -> Vec<String> {
        self.filter
            .split_whitespace()
            .map(str::to_lowercase)
            .collect()
    }

    /// `rows` as screen lines: as they are, or grouped by process, groups
    /// in the order their first row has.
    pub fn lines<'a>(&self, rows: Vec<Row<'a>>) -> Vec<Line<'a>> {
        if !self.grouped {
            return rows.into_iter().map(Line::Row).collect();
        }
        let mut groups: Vec<Vec<Row<'a>>> = Vec::new();
        let mut index: HashMap<Option<(u32, &str)>, usize> = HashMap::new();
        for row in rows {
            let key = row.sock.owner.as_ref().map(|o| (o.pid, o.comm.as_str()));
            let at = *index.entry(key).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[at].push(row);
        }
        groups
            .into_iter()
            .flat_map(|rows| {
                let head = Line::Group {
                    owner: rows.first().and_then(|r| r.sock.owner.as_ref()),
                    sockets: rows.len(),
                };
                std::iter::once(head).chain(rows.into_iter().map(Line::Row))
            })
            .collect()
    }
}

/// The model's rows now, each with its brief, all `Steady` until
/// [`WatchState::mark`]ed: a frame marks only the rows it shows.
fn socks(model: &Model, now_ns: u64) -> impl Iterator<Item = (&Brief, Row<'_>)> {
    model.rows().map(move |(brief, sock)| {
        let row = Row {
            cookie: brief.cookie,
            sock,
            mark: Mark::Steady,
            at_ns: now_ns,
        };
        (brief, row)
    })
}

/// A frozen row as a row, with its brief.
fn thaw((brief, sock, mark, at_ns): &FrozenRow) -> (&Brief, Row<'_>) {
    let row = Row {
        cookie: brief.cookie,
        sock,
        mark: *mark,
        at_ns: *at_ns,
    };
    (brief, row)
}

/// One pass over the rows of a frame: which it lets through (the
/// selection, then the filter), how many, and the best `k` by `key`.
struct Top<'a, 'n, K, F> {
    selection: Selection<'a>,
    terms: Vec<String>,
    names: &'n dyn Names,
    key: F,
    k: usize,
    reverse: bool,
    best: BinaryHeap<Ranked<'a, K>>,
    total: usize,
    /// Of `total`, the sockets (not closed ones fading out).
    showing: usize,
}

impl<'a, K: Ord, F: Fn(&Brief, &Row<'a>) -> K> Top<'a, '_, K, F> {
    /// Counts `row` if it is let through, and keeps it if it is among the
    /// best `k`. The selection needs only the brief; a filter reads the
    /// socket. Inlined into each loop that offers rows, as it runs for
    /// every one of them.
    #[inline(always)]
    fn offer(&mut self, brief: &'a Brief, row: Row<'a>) {
        if !self.selection.picks(brief)
            || !(self.terms.is_empty() || matches(row.sock, &self.terms, self.names))
        {
            return;
        }
        self.total += 1;
        self.showing += usize::from(row.mark != Mark::Gone);
        let ranked = Ranked {
            key: (self.key)(brief, &row),
            reverse: self.reverse,
            row,
        };
        if self.best.len() < self.k || self.best.peek().is_some_and(|worst| ranked < *worst) {
            self.keep(ranked);
        }
    }

    /// Keeps `ranked` in place of the worst, if the heap is full. Rare once
    /// the heap is full, so kept out of the loop.
    #[inline(never)]
    fn keep(&mut self, ranked: Ranked<'a, K>) {
        if self.best.len() == self.k {
            self.best.pop();
        }
        self.best.push(ranked);
    }
}

/// A row with its sort key, ordered as the table is (reversed or not):
/// what the heap of rows on screen holds.
struct Ranked<'a, K> {
    key: K,
    reverse: bool,
    row: Row<'a>,
}

impl<K: Ord> Ord for Ranked<'_, K> {
    fn cmp(&self, other: &Self) -> Ordering {
        let by = self.key.cmp(&other.key);
        if self.reverse { by.reverse() } else { by }
    }
}

impl<K: Ord> PartialOrd for Ranked<'_, K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K: Ord> PartialEq for Ranked<'_, K> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<K: Ord> Eq for Ranked<'_, K> {}

/// [`proto_name`]'s order, as a number.
fn proto_rank(b: &Brief) -> u8 {
    match (b.proto, b.family) {
        (Proto::Tcp, Family::Inet) => 0,
        (Proto::Tcp, Family::Inet6) => 1,
        (Proto::Udp, Family::Inet) => 2,
        (Proto::Udp, Family::Inet6) => 3,
    }
}

/// [`state_name`]'s order, as a number.
fn state_rank(b: &Brief) -> u8 {
    use TcpState::*;
    match (b.proto, b.state) {
        // Unconnected UDP shows no state, which sorts first.
        (Proto::Udp, Established) => 4,
        (Proto::Udp, _) => 0,
        (Proto::Tcp, Close) => 1,
        (Proto::Tcp, CloseWait) => 2,
        (Proto::Tcp, Closing) => 3,
        (Proto::Tcp, Established) => 4,
        (Proto::Tcp, FinWait1) => 5,
        (Proto::Tcp, FinWait2) => 6,
        (Proto::Tcp, LastAck) => 7,
        (Proto::Tcp, Listen) => 8,
        (Proto::Tcp, SynRecv | NewSynRecv) => 9,
        (Proto::Tcp, SynSent) => 10,
        (Proto::Tcp, TimeWait) => 11,
    }
}

/// How long a row has been in its state at `at_ns`, if bnetstat saw it
/// enter it, at `since_ns`.
fn age(since_ns: Option<u64>, at_ns: u64) -> Option<u64> {
    since_ns.map(|since| at_ns.saturating_sub(since))
}

/// How long the row has been in its state, if bnetstat saw it enter it.
fn age_ns(r: &Row<'_>) -> Option<u64> {
    age(r.sock.since_ns, r.at_ns)
}

/// Whether every term appears, case-insensitively, in one of the row's
/// protocol, addresses (as numbers or names), ports, state, PID or program.
fn matches(s: &Sock, terms: &[String], names: &dyn Names) -> bool {
    let owner = s.owner.as_ref();
    let text = [
        proto_name(s).to_owned(),
        SocketAddr::new(s.laddr, s.lport).to_string(),
        SocketAddr::new(s.raddr, s.rport).to_string(),
        endpoint(s.laddr, s.lport, s.proto, names),
        endpoint(s.raddr, s.rport, s.proto, names),
        state_name(s).to_owned(),
        owner.map(|o| o.pid.to_string()).unwrap_or_default(),
        owner.map(|o| o.comm.clone()).unwrap_or_default(),
    ]
    .join(" ")
    .to_lowercase();
    terms.iter().all(|t| text.contains(t.as_str()))
}

/// `host:port`, named where names are known; IPv6 in brackets so the port
/// stands apart; port 0 as `*`.
fn endpoint(addr: IpAddr, port: u16, proto: Proto, names: &dyn Names) -> String {
    let host = match (addr.is_unspecified(), names.host(addr)) {
        (false, Some(name)) => printable(&name).into_owned(),
        _ => match addr {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        },
    };
    let port = match port {
        0 => "*".to_owned(),
        p => names
            .service(p, proto)
            .map_or_else(|| p.to_string(), |n| printable(&n).into_owned()),
    };
    format!("{host}:{port}")
}

/// `42s`, `3m07s`, `2h05m`, `4d03h`.
fn age_text(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// The keys, as the help line lists them.
const HELP: &str = "q quit  s/S/\u{2190}/\u{2192} sort  r reverse  / filter  g group by process  p pause  \u{2191}/\u{2193}/PgUp/PgDn scroll";

const FRESH_STYLE: Style = Style::new().fg(Color::Black).bg(Color::Green);
const GONE_STYLE: Style = Style::new().fg(Color::DarkGray).add_modifier(Modifier::DIM);
const HEADER_STYLE: Style = Style::new()
    .add_modifier(Modifier::REVERSED)
    .add_modifier(Modifier::BOLD);
const GROUP_STYLE: Style = Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD);
const STATUS_STYLE: Style = Style::new().add_modifier(Modifier::REVERSED);

/// A column on screen: what it shows, how wide, which side it sticks to.
struct Cell {
    column: Option<Column>,
    width: u16,
    right: bool,
}

/// The columns for `width` terminal columns: fixed ones at their size, the
/// two addresses sharing the rest.
fn layout(width: u16, netns: bool) -> Vec<Cell> {
    let fixed = |column, width, right| Cell {
        column: Some(column),
        width,
        right,
    };
    let mut cells = Vec::new();
    if netns {
        cells.push(Cell {
            column: None,
            width: 16,
            right: false,
        });
    }
    // Room for `Proto` and the sort arrow.
    cells.push(fixed(Column::Proto, 6, false));
    cells.push(fixed(Column::Local, 0, false));
    cells.push(fixed(Column::Remote, 0, false));
    cells.extend([
        fixed(Column::State, 11, false),
        fixed(Column::Pid, 7, true),
        fixed(Column::Program, 15, false),
        fixed(Column::Age, 6, true),
    ]);
    let taken: u16 = cells.iter().map(|c| c.width + 1).sum();
    let each = (width.saturating_sub(taken) / 2).max(12);
    for c in &mut cells {
        if c.width == 0 {
            c.width = each;
        }
    }
    cells
}

/// Writes `cells` across line `y` of `area`, cutting what does not fit.
fn put(buf: &mut Buffer, area: Rect, y: u16, layout: &[Cell], texts: &[String], style: Style) {
    buf.set_style(Rect::new(area.x, y, area.width, 1), style);
    let mut x = area.x;
    for (cell, text) in layout.iter().zip(texts) {
        if x >= area.right() {
            break;
        }
        let room = usize::from(cell.width.min(area.right() - x));
        let text = if cell.right {
            format!("{text:>room$}")
        } else {
            text.clone()
        };
        buf.set_stringn(x, y, text, room, style);
        x = x.saturating_add(cell.width + 1);
    }
}

/// Draws the screen into `buf` over `area`: column header, body, status
/// line, help (or the filter being typed). Says how much the body showed.
pub fn render(
    area: Rect,
    buf: &mut Buffer,
    model: &Model,
    state: &WatchState,
    names: &dyn Names,
    stats: Stats,
    now_ns: u64,
) -> Shown {
    let page = usize::from(area.height.saturating_sub(3));
    // Grouping needs every row in order; a flat table only the ones shown.
    let (lines, total, showing) = if state.grouped {
        let rows = state.rows(model, names, now_ns);
        let showing = rows.iter().filter(|r| r.mark != Mark::Gone).count();
        let lines = state.lines(rows);
        let total = lines.len();
        (lines, total, showing)
    } else {
        let window = state.scroll.saturating_add(page);
        let (rows, total, showing) = state.top_rows(model, names, now_ns, window);
        (state.lines(rows), total, showing)
    };
    if area.height >= 2 {
        let bottom = area.bottom() - 1;
        let help = if state.typing {
            format!(
                "filter: {}\u{2588}   Enter keep  Esc clear",
                printable(&state.filter)
            )
        } else {
            HELP.to_owned()
        };
        buf.set_stringn(area.x, bottom, help, usize::from(area.width), Style::new());
        let status = status(model, state, stats, showing);
        buf.set_style(Rect::new(area.x, bottom - 1, area.width, 1), STATUS_STYLE);
        buf.set_stringn(
            area.x,
            bottom - 1,
            status,
            usize::from(area.width),
            STATUS_STYLE,
        );
    }
    let netns = state.select.netns.is_none();
    let cells = layout(area.width, netns);
    if area.height >= 3 {
        let titles: Vec<String> = cells
            .iter()
            .map(|c| match c.column {
                None => "Netns".to_owned(),
                Some(col) if col == state.sort => {
                    let arrow = if state.reverse {
                        '\u{25bc}'
                    } else {
                        '\u{25b2}'
                    };
                    format!("{}{arrow}", col.title())
                }
                Some(col) => col.title().to_owned(),
            })
            .collect();
        put(buf, area, area.y, &cells, &titles, HEADER_STYLE);
    }
    let first = state.scroll.min(total.saturating_sub(page));
    for (i, line) in lines.iter().skip(first).take(page).enumerate() {
        let y = area.y + 1 + i as u16;
        match line {
            Line::Group { owner, sockets } => {
                let who = owner.map_or_else(
                    || "owner unknown".to_owned(),
                    |o| format!("{}/{}", o.pid, printable(&o.comm)),
                );
                let plural = if *sockets == 1 { "" } else { "s" };
                buf.set_stringn(
                    area.x,
                    y,
                    format!("\u{25be} {who}: {sockets} socket{plural}"),
                    usize::from(area.width),
                    GROUP_STYLE,
                );
            }
            Line::Row(row) => {
                let style = match row.mark {
                    Mark::Steady => Style::new(),
                    Mark::Fresh => FRESH_STYLE,
                    Mark::Gone => GONE_STYLE,
                };
                put(buf, area, y, &cells, &row_texts(row, names, netns), style);
            }
        }
    }
    Shown { lines: total, page }
}

/// The status line: how many sockets bnetstat tracks and shows, the event
/// rate, losses, and the viewer's choices.
fn status(model: &Model, state: &WatchState, stats: Stats, showing: usize) -> String {
    let frame = stats.frame_us.map_or_else(String::new, |us| {
        format!(" \u{2502} frame {:.1} ms", us as f64 / 1000.0)
    });
    let mut out = format!(
        " {} sockets tracked, {showing} shown \u{2502} {} events/s \u{2502} {} lost{frame} \u{2502} sort {} {}",
        model.len(),
        stats.events_per_sec,
        stats.lost,
        state.sort.title(),
        if state.reverse {
            "\u{25bc}"
        } else {
            "\u{25b2}"
        },
    );
    if !state.filter.is_empty() {
        out.push_str(&format!(
            " \u{2502} filter \"{}\"",
            printable(&state.filter)
        ));
    }
    if state.grouped {
        out.push_str(" \u{2502} by process");
    }
    if state.paused() {
        out.push_str(" \u{2502} PAUSED");
    }
    out
}

fn row_texts(row: &Row<'_>, names: &dyn Names, netns: bool) -> Vec<String> {
    let s = row.sock;
    let mut texts = Vec::new();
    if netns {
        let ns = names
            .netns(s.netns)
            .unwrap_or_else(|| format!("net:[{}]", s.netns));
        texts.push(printable(&ns).into_owned());
    }
    texts.extend([
        proto_name(s).to_owned(),
        endpoint(s.laddr, s.lport, s.proto, names),
        endpoint(s.raddr, s.rport, s.proto, names),
        state_name(s).to_owned(),
        s.owner
            .as_ref()
            .map_or_else(|| "-".to_owned(), |o| o.pid.to_string()),
        s.owner
            .as_ref()
            .map_or_else(|| "-".to_owned(), |o| printable(&o.comm).into_owned()),
        age_ns(row).map_or_else(|| "-".to_owned(), age_text),
    ]);
    texts
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use ratatui::{Terminal, backend::TestBackend};

    use super::*;
    use crate::{
        decode::{Event, StateChangeEvent},
        model::TIME_WAIT_NS,
    };

    /// All numbers, no names.
    struct Numeric;
    impl Names for Numeric {}

    const S: u64 = 1_000_000_000;
    const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const ANY: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

    fn owner(pid: u32, comm: &str) -> Option<Owner> {
        Some(Owner {
            pid,
            uid: 0,
            comm: comm.into(),
            cgroup: 0,
        })
    }

    fn sock(state: TcpState, lport: u16, raddr: IpAddr, rport: u16, who: Option<Owner>) -> Sock {
        Sock {
            proto: Proto::Tcp,
            family: Family::Inet,
            laddr: LO,
            lport,
            raddr,
            rport,
            state,
            netns: 1,
            owner: who,
            uid: Some(0),
            inode: None,
            recv_q: Some(0),
            send_q: Some(0),
            timer: None,
            since_ns: None,
            expires_ns: None,
        }
    }

    fn transition(
        cookie: u64,
        ts_ns: u64,
        (old, new): (TcpState, TcpState),
        (lport, rport): (u16, u16),
        who: Option<Owner>,
    ) -> Event {
        Event::StateChange(StateChangeEvent {
            ts_ns,
            sock: cookie,
            netns: 1,
            family: Family::Inet,
            laddr: LO,
            lport,
            raddr: LO,
            rport,
            old,
            new,
            ns_in_old: None,
            owner: who,
            error: 0,
            end: None,
        })
    }

    /// A web server listening on 8080 with one client, and an ssh daemon.
    fn scene() -> Model {
        let mut m = Model::default();
        m.seed(1, sock(TcpState::Listen, 8080, ANY, 0, owner(100, "web")));
        m.seed(
            2,
            sock(TcpState::Established, 8080, LO, 50000, owner(100, "web")),
        );
        m.seed(3, sock(TcpState::Listen, 22, ANY, 0, owner(7, "sshd")));
        m
    }

    fn state() -> WatchState {
        WatchState::new(table::Options {
            all: true,
            netns: Some(1),
            ..table::Options::default()
        })
    }

    fn press(st: &mut WatchState, m: &Model, code: KeyCode) -> Flow {
        st.key(KeyEvent::new(code, KeyModifiers::NONE), m, 0)
    }

    fn type_text(st: &mut WatchState, m: &Model, text: &str) {
        press(st, m, KeyCode::Char('/'));
        for c in text.chars() {
            press(st, m, KeyCode::Char(c));
        }
        press(st, m, KeyCode::Enter);
    }

    fn cookies(st: &WatchState, m: &Model, now: u64) -> Vec<u64> {
        st.rows(m, &Numeric, now).iter().map(|r| r.cookie).collect()
    }

    fn marks(st: &WatchState, m: &Model, now: u64) -> Vec<(u64, Mark)> {
        st.rows(m, &Numeric, now)
            .iter()
            .map(|r| (r.cookie, r.mark))
            .collect()
    }

    /// A client process connecting to the web server at `ts`.
    fn connect(m: &mut Model, st: &mut WatchState, cookie: u64, ts: u64) {
        let ev = transition(
            cookie,
            ts,
            (TcpState::Close, TcpState::SynSent),
            (0, 8080),
            owner(300, "curl"),
        );
        st.note(m.apply(&ev), ts);
        let ev = transition(
            cookie,
            ts,
            (TcpState::SynSent, TcpState::Established),
            (40000, 8080),
            owner(300, "curl"),
        );
        st.note(m.apply(&ev), ts);
    }

    #[test]
    fn a_new_connection_is_highlighted_for_two_seconds_then_shown_plainly() {
        let mut m = scene();
        let mut st = state();
        connect(&mut m, &mut st, 9, 10 * S);
        assert!(marks(&st, &m, 10 * S).contains(&(9, Mark::Fresh)));
        assert!(
            marks(&st, &m, 10 * S).contains(&(2, Mark::Steady)),
            "seeded rows are not new"
        );
        assert!(!st.expire(12 * S - 1));
        assert!(marks(&st, &m, 12 * S - 1).contains(&(9, Mark::Fresh)));
        assert!(st.expire(12 * S), "the highlight ends: redraw");
        assert!(marks(&st, &m, 12 * S).contains(&(9, Mark::Steady)));
    }

    #[test]
    fn a_closed_connection_stays_dimmed_with_its_last_state_for_three_seconds() {
        let mut m = scene();
        let mut st = state();
        connect(&mut m, &mut st, 9, 10 * S);
        let reset = transition(
            9,
            11 * S,
            (TcpState::Established, TcpState::Close),
            (40000, 8080),
            None,
        );
        let Event::StateChange(mut ev) = reset else {
            unreachable!()
        };
        ev.error = libc::ECONNRESET as u32;
        st.note(m.apply(&Event::StateChange(ev)), 11 * S);
        assert_eq!(m.len(), 3, "gone from the model");
        let rows = st.rows(&m, &Numeric, 11 * S);
        let ghost = rows.iter().find(|r| r.cookie == 9).expect("still shown");
        assert_eq!(
            (ghost.mark, ghost.sock.state),
            (Mark::Gone, TcpState::Established)
        );
        assert_eq!(age_ns(ghost), Some(S), "its age stops when it closed");
        assert!(cookies(&st, &m, 14 * S - 1).contains(&9));
        assert!(!cookies(&st, &m, 14 * S).contains(&9), "gone after 3 s");
        assert!(st.expire(14 * S));
        assert!(st.ghosts.is_empty());
    }

    #[test]
    fn an_expired_time_wait_fades_out_like_a_close() {
        let mut m = Model::default();
        let mut st = state();
        let fin = transition(
            5,
            S,
            (TcpState::FinWait2, TcpState::Close),
            (40000, 80),
            None,
        );
        st.note(m.apply(&fin), S);
        for (cookie, last) in m.prune(S + TIME_WAIT_NS) {
            st.note(Change::Closed(cookie, last), S + TIME_WAIT_NS);
        }
        let rows = st.rows(&m, &Numeric, S + TIME_WAIT_NS);
        assert_eq!(
            rows.iter()
                .map(|r| (r.mark, r.sock.state))
                .collect::<Vec<_>>(),
            [(Mark::Gone, TcpState::TimeWait)]
        );
    }

    #[test]
    fn a_state_change_updates_the_row_in_place() {
        let mut m = scene();
        let mut st = state();
        let ev = transition(
            2,
            S,
            (TcpState::Established, TcpState::CloseWait),
            (8080, 50000),
            None,
        );
        st.note(m.apply(&ev), S);
        let rows = st.rows(&m, &Numeric, S);
        let row = rows.iter().find(|r| r.cookie == 2).expect("row");
        assert_eq!(
            (row.mark, row.sock.state),
            (Mark::Steady, TcpState::CloseWait)
        );
        assert_eq!(rows.len(), 3);
    }

    #[test]
    fn sort_moves_across_columns_and_reverses() {
        let m = scene();
        let mut st = state();
        assert_eq!(cookies(&st, &m, 0), [3, 1, 2], "netstat's order first");
        for _ in 0..5 {
            press(&mut st, &m, KeyCode::Char('s'));
        }
        assert_eq!(st.sort, Column::Program);
        assert_eq!(cookies(&st, &m, 0), [3, 1, 2], "sshd before web");
        press(&mut st, &m, KeyCode::Char('r'));
        assert_eq!(cookies(&st, &m, 0), [2, 1, 3]);
        press(&mut st, &m, KeyCode::Left);
        assert_eq!(st.sort, Column::Pid);
        press(&mut st, &m, KeyCode::Char('r'));
        assert_eq!(cookies(&st, &m, 0), [3, 1, 2], "pid 7 before 100");
        press(&mut st, &m, KeyCode::Char('S'));
        press(&mut st, &m, KeyCode::Char('S'));
        assert_eq!(st.sort, Column::Remote);
        press(&mut st, &m, KeyCode::Right);
        assert_eq!(st.sort, Column::State);
        assert_eq!(cookies(&st, &m, 0), [2, 3, 1], "ESTABLISHED before LISTEN");
        for _ in 0..4 {
            press(&mut st, &m, KeyCode::Right);
        }
        assert_eq!(st.sort, Column::Proto, "wraps around");
    }

    #[test]
    fn sort_by_age_puts_the_youngest_first_and_the_unknown_last() {
        let mut m = scene();
        let mut st = state();
        connect(&mut m, &mut st, 8, S);
        connect(&mut m, &mut st, 9, 5 * S);
        st.sort = Column::Age;
        assert_eq!(cookies(&st, &m, 6 * S)[..2], [9, 8]);
    }

    #[test]
    fn the_filter_matches_address_port_program_and_state() {
        let mut m = scene();
        let mut st = state();
        connect(&mut m, &mut st, 9, S);
        for (filter, want) in [
            ("8080", &[1, 2, 9][..]),
            ("sshd", &[3]),
            ("listen", &[3, 1]),
            ("127.0.0.1:40000", &[9]),
            ("0.0.0.0", &[3, 1]),
            ("WEB established", &[2]),
            ("300", &[9]),
            ("nothing-like-this", &[]),
        ] {
            press(&mut st, &m, KeyCode::Esc);
            type_text(&mut st, &m, filter);
            assert_eq!(cookies(&st, &m, S), want, "filter {filter:?}");
        }
        press(&mut st, &m, KeyCode::Esc);
        assert_eq!(cookies(&st, &m, S).len(), 4, "Esc clears the filter");
    }

    #[test]
    fn keys_typed_into_the_filter_are_not_commands() {
        let m = scene();
        let mut st = state();
        press(&mut st, &m, KeyCode::Char('/'));
        assert_eq!(press(&mut st, &m, KeyCode::Char('q')), Flow::Redraw);
        press(&mut st, &m, KeyCode::Char('p'));
        press(&mut st, &m, KeyCode::Backspace);
        assert_eq!((st.filter.as_str(), st.paused()), ("q", false));
        press(&mut st, &m, KeyCode::Esc);
        assert_eq!(st.filter, "", "Esc while typing clears");
        assert_eq!(press(&mut st, &m, KeyCode::Char('q')), Flow::Quit);
        assert_eq!(
            st.key(
                KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL),
                &m,
                0
            ),
            Flow::Quit
        );
        assert_eq!(press(&mut st, &m, KeyCode::F(5)), Flow::Same);
    }

    #[test]
    fn grouping_puts_each_process_under_a_heading() {
        let m = scene();
        let mut st = state();
        press(&mut st, &m, KeyCode::Char('g'));
        let lines = st.lines(st.rows(&m, &Numeric, 0));
        let shape: Vec<String> = lines
            .iter()
            .map(|l| match l {
                Line::Group { owner, sockets } => {
                    format!("{}:{sockets}", owner.map_or("?", |o| o.comm.as_str()))
                }
                Line::Row(r) => r.cookie.to_string(),
            })
            .collect();
        assert_eq!(shape, ["sshd:1", "3", "web:2", "1", "2"]);
        press(&mut st, &m, KeyCode::Char('g'));
        assert_eq!(st.lines(st.rows(&m, &Numeric, 0)).len(), 3);
    }

    #[test]
    fn pause_freezes_what_is_shown_while_the_model_moves_on() {
        let mut m = scene();
        let mut st = state();
        press(&mut st, &m, KeyCode::Char('p'));
        assert!(st.paused());
        connect(&mut m, &mut st, 9, S);
        let gone = transition(3, S, (TcpState::Listen, TcpState::Close), (22, 0), None);
        st.note(m.apply(&gone), S);
        assert_eq!(m.len(), 3, "the model still follows the kernel");
        assert_eq!(cookies(&st, &m, S), [3, 1, 2], "the screen does not");
        press(&mut st, &m, KeyCode::Char('s'));
        assert_eq!(st.sort, Column::Local, "sorting a frozen view works");
        press(&mut st, &m, KeyCode::Char(' '));
        assert!(!st.paused());
        let now = marks(&st, &m, S);
        assert!(now.contains(&(9, Mark::Fresh)), "{now:?}");
        assert!(now.contains(&(3, Mark::Gone)), "{now:?}");
    }

    #[test]
    fn scrolling_stays_within_the_table() {
        let m = scene();
        let mut st = state();
        st.shown(Shown { lines: 10, page: 4 });
        press(&mut st, &m, KeyCode::Up);
        assert_eq!(st.scroll, 0);
        press(&mut st, &m, KeyCode::PageDown);
        assert_eq!(st.scroll, 4);
        press(&mut st, &m, KeyCode::PageDown);
        assert_eq!(st.scroll, 6, "the last page, full");
        press(&mut st, &m, KeyCode::Down);
        assert_eq!(st.scroll, 6);
        press(&mut st, &m, KeyCode::PageUp);
        press(&mut st, &m, KeyCode::Up);
        assert_eq!(st.scroll, 1);
        st.shown(Shown { lines: 3, page: 4 });
        assert_eq!(st.scroll, 0, "a table that shrank scrolls back");
    }

    fn draw(m: &Model, st: &WatchState, width: u16, height: u16, now: u64) -> (Buffer, Shown) {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
        let mut shown = Shown::default();
        terminal
            .draw(|f| {
                let stats = Stats {
                    events_per_sec: 42,
                    lost: 3,
                    frame_us: Some(2345),
                };
                shown = render(f.area(), f.buffer_mut(), m, st, &Numeric, stats, now);
            })
            .expect("draw");
        (terminal.backend().buffer().clone(), shown)
    }

    fn text(buf: &Buffer, y: u16) -> String {
        (0..buf.area.width)
            .map(|x| buf[(x, y)].symbol())
            .collect::<String>()
            .trim_end()
            .to_owned()
    }

    #[test]
    fn the_screen_has_a_header_rows_a_status_line_and_the_keys() {
        let mut m = scene();
        let mut st = state();
        connect(&mut m, &mut st, 9, 10 * S);
        let (buf, shown) = draw(&m, &st, 100, 8, 10 * S + S / 2);
        let lines: Vec<String> = (0..8).map(|y| text(&buf, y)).collect();
        assert_eq!(
            lines[0],
            "Proto\u{25b2} Local Address            Foreign Address          State           PID Program            Age"
        );
        assert_eq!(
            lines[1],
            "tcp    127.0.0.1:22             0.0.0.0:*                LISTEN            7 sshd                 -"
        );
        assert_eq!(
            lines[4],
            "tcp    127.0.0.1:40000          127.0.0.1:8080           ESTABLISHED     300 curl                0s"
        );
        assert_eq!(
            lines[6],
            " 4 sockets tracked, 4 shown \u{2502} 42 events/s \u{2502} 3 lost \u{2502} frame 2.3 ms \u{2502} sort Proto \u{25b2}"
        );
        assert!(lines[7].starts_with("q quit  s/S"), "{}", lines[7]);
        assert_eq!(shown, Shown { lines: 4, page: 5 });
        assert_eq!(buf[(0, 4)].bg, Color::Green, "the new row is highlighted");
        assert_eq!(buf[(99, 4)].bg, Color::Green, "across the whole line");
        assert_eq!(buf[(0, 3)].bg, Color::Reset, "the others are not");
        assert!(buf[(0, 0)].modifier.contains(Modifier::REVERSED));
        assert!(buf[(0, 6)].modifier.contains(Modifier::REVERSED));
    }

    #[test]
    fn a_closed_row_is_drawn_dimmed_and_the_status_says_paused_filtered_grouped() {
        let mut m = scene();
        let mut st = state();
        let gone = transition(
            2,
            S,
            (TcpState::Established, TcpState::Close),
            (8080, 50000),
            None,
        );
        let Event::StateChange(mut ev) = gone else {
            unreachable!()
        };
        ev.error = libc::ECONNRESET as u32;
        st.note(m.apply(&Event::StateChange(ev)), S);
        type_text(&mut st, &m, "web");
        press(&mut st, &m, KeyCode::Char('g'));
        press(&mut st, &m, KeyCode::Char('p'));
        let (buf, _) = draw(&m, &st, 120, 6, S);
        let lines: Vec<String> = (0..6).map(|y| text(&buf, y)).collect();
        assert_eq!(lines[1], "\u{25be} 100/web: 2 sockets");
        assert!(lines[3].contains("ESTABLISHED"), "{}", lines[3]);
        assert!(buf[(0, 3)].modifier.contains(Modifier::DIM));
        assert_eq!(
            lines[4],
            " 2 sockets tracked, 1 shown \u{2502} 42 events/s \u{2502} 3 lost \u{2502} frame 2.3 ms \u{2502} sort Proto \u{25b2} \u{2502} filter \"web\" \u{2502} by process \u{2502} PAUSED"
        );
    }

    #[test]
    fn a_narrow_or_short_screen_cuts_rather_than_breaks() {
        let m = scene();
        let mut st = state();
        let (buf, _) = draw(&m, &st, 30, 3, 0);
        assert_eq!(text(&buf, 0), "Proto\u{25b2} Local Addres Foreign Ad");
        assert_eq!(
            text(&buf, 2),
            "q quit  s/S/\u{2190}/\u{2192} sort  r revers"
        );
        press(&mut st, &m, KeyCode::Char('/'));
        press(&mut st, &m, KeyCode::Char('x'));
        let (buf, shown) = draw(&m, &st, 40, 2, 0);
        assert_eq!(text(&buf, 1), "filter: x\u{2588}   Enter keep  Esc clear");
        assert_eq!(shown.page, 0);
        draw(&m, &st, 1, 1, 0);
    }

    #[test]
    fn hostile_program_names_are_escaped() {
        let mut m = Model::default();
        m.seed(
            1,
            sock(TcpState::Listen, 80, ANY, 0, owner(1, "ev\x1b[2Jil")),
        );
        let mut st = state();
        press(&mut st, &m, KeyCode::Char('g'));
        let (buf, _) = draw(&m, &st, 120, 5, 0);
        assert_eq!(text(&buf, 1), "\u{25be} 1/ev\\x1b[2Jil: 1 socket");
        assert!(text(&buf, 2).contains("ev\\x1b[2Jil"), "{}", text(&buf, 2));
    }

    /// A few thousand sockets as a busy host might have them: TCP and UDP,
    /// IPv4 and IPv6, every state, with and without owners, in three
    /// namespaces, with ties for every column to break; some just opened,
    /// some changed by events, some just closed (and some closed long ago).
    fn crowd(now: u64) -> (Model, WatchState) {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut pick = |n: usize| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize % n
        };
        let v4 = [
            "0.0.0.0",
            "127.0.0.1",
            "10.0.0.1",
            "10.0.0.2",
            "192.168.1.9",
        ];
        let v6 = ["::", "::1", "::ffff:10.0.0.1", "fe80::1", "2001:db8::5"];
        let ports = [0, 22, 53, 80, 443, 8080];
        let comms = ["sshd", "web", "Web", "curl", "a"];
        let mut m = Model::default();
        let mut st = state();
        let mut cookies = Vec::new();
        for i in 0..3000 {
            let family = [Family::Inet, Family::Inet6][pick(2)];
            let mut addr = || -> IpAddr {
                match family {
                    Family::Inet => v4[pick(v4.len())].parse::<Ipv4Addr>().expect("v4").into(),
                    Family::Inet6 => v6[pick(v6.len())].parse::<Ipv6Addr>().expect("v6").into(),
                }
            };
            let (laddr, raddr) = (addr(), addr());
            let mut port = || match pick(3) {
                0 => 30000 + pick(50) as u16,
                _ => ports[pick(ports.len())],
            };
            let (lport, rport) = (port(), port());
            let proto = [Proto::Tcp, Proto::Udp][pick(2)];
            let state = match proto {
                Proto::Tcp => TcpState::ALL[pick(TcpState::ALL.len())],
                Proto::Udp => [TcpState::Close, TcpState::Established][pick(2)],
            };
            let who = match pick(5) {
                0 => None,
                _ => owner([1, 7, 100, 300, 4242][pick(5)], comms[pick(comms.len())]),
            };
            let since_ns = match pick(6) {
                0 => None,
                // An event stamped after the frame's clock: age 0.
                1 => Some(now + pick(3) as u64 * S),
                _ => Some(now - pick(100) as u64 * S / 10),
            };
            let cookie = i * 7919 + pick(7919) as u64;
            m.seed(
                cookie,
                Sock {
                    proto,
                    family,
                    laddr,
                    raddr,
                    netns: 1 + pick(3) as u32,
                    since_ns,
                    ..sock(state, lport, raddr, rport, who)
                },
            );
            cookies.push(cookie);
        }
        for i in 0..300 {
            // Half of them open new rows.
            let cookie = match pick(2) {
                0 => 1 << 40 | i,
                _ => cookies[pick(cookies.len())],
            };
            let ts = now - pick(40) as u64 * S / 10;
            let (old, new) = [
                (TcpState::Established, TcpState::CloseWait),
                (TcpState::Close, TcpState::SynSent),
                (TcpState::SynRecv, TcpState::Established),
            ][pick(3)];
            let ev = transition(
                cookie,
                ts,
                (old, new),
                (pick(3) as u16, 80),
                owner(9, "moved"),
            );
            st.note(m.apply(&ev), ts);
        }
        for _ in 0..200 {
            let cookie = cookies[pick(cookies.len())];
            let ts = now - pick(50) as u64 * S / 10;
            let Event::StateChange(mut ev) = transition(
                cookie,
                ts,
                (TcpState::Established, TcpState::Close),
                (1, 2),
                None,
            ) else {
                unreachable!()
            };
            ev.error = libc::ECONNRESET as u32;
            st.note(m.apply(&Event::StateChange(ev)), ts);
        }
        (m, st)
    }

    /// The key of the ranking the view had before briefs, read off the
    /// socket: the column's value, then netstat's order.
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    enum PlainKey<'a> {
        Text(&'a str),
        Endpoint(IpAddr, u16),
        Number(u64),
    }

    type PlainRow<'a> = (u64, &'a Sock, Mark, u64);
    type PlainNetstat = (&'static str, u32, IpAddr, u16, IpAddr, u16, u64);

    fn plain_key<'a>(
        column: Column,
        &(cookie, s, _, at_ns): &PlainRow<'a>,
    ) -> (PlainKey<'a>, PlainNetstat) {
        let by = match column {
            Column::Proto => PlainKey::Text(proto_name(s)),
            Column::Local => PlainKey::Endpoint(s.laddr, s.lport),
            Column::Remote => PlainKey::Endpoint(s.raddr, s.rport),
            Column::State => PlainKey::Text(state_name(s)),
            Column::Pid => PlainKey::Number(s.owner.as_ref().map_or(u64::MAX, |o| o.pid.into())),
            Column::Program => PlainKey::Text(s.owner.as_ref().map_or("\u{10ffff}", |o| &o.comm)),
            Column::Age => PlainKey::Number(
                s.since_ns
                    .map_or(u64::MAX, |since| at_ns.saturating_sub(since)),
            ),
        };
        let netstat = (
            proto_name(s),
            s.netns,
            s.laddr,
            s.lport,
            s.raddr,
            s.rport,
            cookie,
        );
        (by, netstat)
    }

    /// What the table shows at `now`, by a plain sort of every row there
    /// is: its cookies and marks, how many rows, and how many are sockets.
    fn plainly(st: &WatchState, m: &Model, now: u64) -> (Vec<(u64, Mark)>, usize, usize) {
        let fresh = |c| st.fresh.get(&c).is_some_and(|&at| now < at + FRESH_NS);
        let live = m.iter().map(|(c, s)| {
            let mark = if fresh(c) { Mark::Fresh } else { Mark::Steady };
            (c, s, mark, now)
        });
        let ghosts = st
            .ghosts
            .iter()
            .filter(|(_, g)| now < g.closed_ns + GHOST_NS)
            .map(|(&c, g)| (c, &g.sock, Mark::Gone, g.closed_ns));
        let terms = st.terms();
        let mut rows: Vec<PlainRow<'_>> = live
            .chain(ghosts)
            .filter(|&(c, s, ..)| {
                Selection::new(&st.select).picks(&Brief::of(c, s))
                    && (terms.is_empty() || matches(s, &terms, &Numeric))
            })
            .collect();
        rows.sort_by(|a, b| {
            let by = plain_key(st.sort, a).cmp(&plain_key(st.sort, b));
            if st.reverse { by.reverse() } else { by }
        });
        let showing = rows.iter().filter(|r| r.2 != Mark::Gone).count();
        let shown = rows.iter().map(|r| (r.0, r.2)).collect();
        (shown, rows.len(), showing)
    }

    /// The same rows, with the same marks, in the same order; if not, the
    /// first that differs.
    fn assert_same(got: &[Row<'_>], want: &[(u64, Mark)], what: &str) {
        let got: Vec<_> = got.iter().map(|r| (r.cookie, r.mark)).collect();
        let at = (0..got.len().max(want.len())).find(|&i| got.get(i) != want.get(i));
        assert!(
            at.is_none(),
            "{what}: row {at:?} of {} is {:?}, not {:?}",
            got.len(),
            at.and_then(|i| got.get(i)),
            at.and_then(|i| want.get(i))
        );
    }

    /// `top_rows` of `k` and `rows` against a plain sort, in every order.
    fn assert_ranked_plainly(st: &mut WatchState, m: &Model, now: u64, what: &str) {
        for sort in Column::ALL {
            for reverse in [false, true] {
                (st.sort, st.reverse) = (sort, reverse);
                let what = format!("{what}, by {sort:?}, reversed {reverse}");
                let (want, total, showing) = plainly(st, m, now);
                let got: Vec<_> = st.rows(m, &Numeric, now);
                assert_same(&got, &want, &format!("{what}: all rows"));
                for k in [0, 1, 47, total + 1] {
                    let (top, t, s) = st.top_rows(m, &Numeric, now, k);
                    assert_same(&top, &want[..k.min(total)], &format!("{what}: top {k}"));
                    assert_eq!((t, s), (total, showing), "{what}: counts");
                }
            }
        }
    }

    #[test]
    fn a_crowd_is_ranked_from_briefs_as_a_plain_sort_of_its_sockets_would_be() {
        let now = 100 * S;
        let (mut m, mut st) = crowd(now);
        let options = |f: fn(&mut table::Options)| {
            let mut o = table::Options::default();
            f(&mut o);
            o
        };
        st.select = options(|o| o.all = true);
        let (all, total, showing) = plainly(&st, &m, now);
        assert!(total > 2000 && showing < total, "ghosts shown");
        assert!(all.iter().any(|&(_, mark)| mark == Mark::Fresh));
        let selections = [
            options(|o| o.all = true),
            options(|_| {}),
            options(|o| o.listening = true),
            options(|o| (o.all, o.tcp) = (true, true)),
            options(|o| (o.all, o.udp, o.family) = (true, true, Some(Family::Inet6))),
            options(|o| (o.all, o.netns) = (true, Some(2))),
            options(|o| (o.all, o.ports) = (true, vec![80, 30007])),
            options(|o| (o.listening, o.pids) = (true, vec![7, 4242])),
            options(|o| (o.all, o.states) = (true, vec![TcpState::Established])),
        ];
        for select in selections {
            let what = format!("{select:?}");
            st.select = select;
            assert_ranked_plainly(&mut st, &m, now, &what);
        }
        st.select = options(|o| o.all = true);
        // A filter reads the sockets themselves.
        st.filter = "web".into();
        assert_ranked_plainly(&mut st, &m, now, "filter \"web\"");
        // Paused, it shows the rows as they were, at the ages they had,
        // while the model moves on.
        (st.filter, st.reverse) = (String::new(), false);
        let before: Vec<_> = Column::ALL
            .iter()
            .map(|&sort| {
                st.sort = sort;
                plainly(&st, &m, now)
            })
            .collect();
        st.toggle_pause(&m, now);
        let gone: Vec<u64> = m.iter().map(|(c, _)| c).take(500).collect();
        for cookie in gone {
            let ev = transition(
                cookie,
                now,
                (TcpState::LastAck, TcpState::Close),
                (1, 2),
                None,
            );
            st.note(m.apply(&ev), now);
        }
        for (sort, (want, total, showing)) in Column::ALL.into_iter().zip(before) {
            st.sort = sort;
            let (top, t, s) = st.top_rows(&m, &Numeric, now + 10 * S, 47);
            assert_same(&top, &want[..47], &format!("paused, by {sort:?}"));
            assert_eq!((t, s), (total, showing), "paused, by {sort:?}");
        }
    }

    #[test]
    fn protocols_and_states_rank_as_their_names_sort() {
        let mut socks = Vec::new();
        for proto in [Proto::Tcp, Proto::Udp] {
            for family in [Family::Inet, Family::Inet6] {
                for state in TcpState::ALL {
                    socks.push(Sock {
                        proto,
                        family,
                        ..sock(state, 0, ANY, 0, None)
                    });
                }
            }
        }
        for a in &socks {
            for b in &socks {
                let (ba, bb) = (Brief::of(1, a), Brief::of(2, b));
                let what = format!("{a:?} against {b:?}");
                assert_eq!(
                    proto_rank(&ba).cmp(&proto_rank(&bb)),
                    proto_name(a).cmp(proto_name(b)),
                    "{what}"
                );
                assert_eq!(
                    state_rank(&ba).cmp(&state_rank(&bb)),
                    state_name(a).cmp(state_name(b)),
                    "{what}"
                );
            }
        }
    }
}
