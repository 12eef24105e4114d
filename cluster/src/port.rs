//! A listening port: accepts connections within budgets, each served on its own task, with a
//! graceful stop (stop accepting, let open connections finish their work) and a hard close.
//!
//! Every connection starts as a client's. One that identifies as a peer (the protocol layer
//! calls [`Conn::identify_peer`] on its first message from a node of the cluster) moves to a
//! separate budget: peers are never closed to make room for clients, nor for being idle, so a
//! client flood cannot cut replication. When the client budget is full, a new connection
//! closes the client connection that has been quiet longest (nothing received whole and
//! nothing sent for at least [`EVICT_QUIET`]); if every client is busy the new one is refused.
//! A frame begun must arrive whole within [`ConnLimits::frame`] (slow senders are closed), a
//! client quiet for [`ConnLimits::idle`] is closed, and the bytes held in unfinished frames
//! across the port's connections are capped by [`ConnLimits::buffered`]: a frame that would
//! take the port over it closes its connection.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};

/// How a port treats its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    /// Client connections open at once (every connection counts as a client's until it
    /// identifies as a peer's).
    pub clients: usize,
    /// Peer connections open at once; a connection identifying as a peer beyond it stays a
    /// client's.
    pub peers: usize,
    /// A client connection that received no whole frame and sent nothing for this long is
    /// closed; `None`: never.
    pub idle: Option<Duration>,
    /// A frame begun must arrive whole within this long, or its connection is closed.
    pub frame: Duration,
    /// Bytes the port's connections may hold in unfinished frames, summed.
    pub buffered: usize,
}

/// A connection quiet for less than this is not closed to make room for a new one.
pub const EVICT_QUIET: Duration = Duration::from_secs(1);

/// What the port's connections share.
#[derive(Debug)]
struct Shared {
    limits: ConnLimits,
    /// Bytes held in unfinished frames, all connections together.
    buffered: AtomicUsize,
    /// Connections identified as peers' and still open.
    peers: AtomicUsize,
    over_budget: Mutex<Throttle>,
}

/// One connection as the port sees it: what it is, when it was last active, what it holds.
#[derive(Debug)]
pub struct Conn {
    shared: Arc<Shared>,
    state: Mutex<ConnState>,
}

#[derive(Debug)]
struct ConnState {
    /// When a whole frame last arrived or bytes were last sent (or the connection opened).
    active: Instant,
    /// When the frame being received began, if one is part-way.
    partial_since: Option<Instant>,
    /// Bytes charged to the port for the unfinished frame.
    held: usize,
    peer: bool,
    closed: bool,
}

/// Why the port closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expired {
    Idle,
    SlowFrame,
}

impl Conn {
    fn new(shared: Arc<Shared>, now: Instant) -> Self {
        let state =
            ConnState { active: now, partial_since: None, held: 0, peer: false, closed: false };
        Self { shared, state: Mutex::new(state) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A whole frame arrived, or bytes were sent.
    pub fn active(&self) {
        self.state().active = Instant::now();
    }

    /// Whether a frame is part-way: `true` starts its clock (if not running), `false` stops it
    /// and releases what it held.
    pub fn partial(&self, part_way: bool) {
        let mut state = self.state();
        match (part_way, state.partial_since) {
            (true, None) => state.partial_since = Some(Instant::now()),
            (false, Some(_)) => {
                state.partial_since = None;
                let held = std::mem::take(&mut state.held);
                self.shared.buffered.fetch_sub(held, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// Charges the unfinished frame at `bytes` (replacing its previous charge). Fails, and the
    /// connection is to be closed, if that takes the port over its budget.
    pub fn hold(&self, bytes: usize) -> io::Result<()> {
        let mut state = self.state();
        if state.closed {
            return Err(io::Error::other("the connection was closed by its port"));
        }
        // One adjustment of the port's total, by the change in this connection's charge.
        let before = std::mem::replace(&mut state.held, bytes);
        let total = if bytes >= before {
            self.shared.buffered.fetch_add(bytes - before, Ordering::Relaxed) + (bytes - before)
        } else {
            self.shared.buffered.fetch_sub(before - bytes, Ordering::Relaxed) - (before - bytes)
        };
        let budget = self.shared.limits.buffered;
        if total <= budget {
            return Ok(());
        }
        let mut throttle = self.shared.over_budget.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = throttle.note(Instant::now()) {
            tracing::warn!(
                budget,
                closed = count,
                "unfinished frames would exceed the port's buffer budget \
                 (limits.max_buffered_bytes); closing the connections sending them"
            );
        }
        Err(io::Error::other(format!(
            "unfinished frames would hold more than the port's {budget} bytes"
        )))
    }

    /// The connection's first message came from a node of the cluster: it moves to the peers'
    /// budget if there is room. Returns whether it is now a peer's.
    pub fn identify_peer(&self) -> bool {
        let mut state = self.state();
        if state.peer {
            return true;
        }
        if state.closed {
            return false;
        }
        let max = self.shared.limits.peers;
        let room = self
            .shared
            .peers
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1));
        state.peer = room.is_ok();
        state.peer
    }

    /// Whether the connection is a peer's.
    pub fn is_peer(&self) -> bool {
        self.state().peer
    }

    /// Releases what the connection holds; it counts no more.
    fn close(&self) {
        let mut state = self.state();
        if std::mem::replace(&mut state.closed, true) {
            return;
        }
        self.shared.buffered.fetch_sub(std::mem::take(&mut state.held), Ordering::Relaxed);
        if state.peer {
            self.shared.peers.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The port could not run for `gap` (its process was stopped, or starved of CPU), so it
    /// read nothing meanwhile: that time does not count against the connection's limits. A
    /// node resumed after a SIGSTOP finds frames begun before the stop still part-way only
    /// because it has not read the rest yet; closing them would cut its peers off.
    fn excuse(&self, gap: Duration, now: Instant) {
        let mut state = self.state();
        state.active = (state.active + gap).min(now);
        state.partial_since = state.partial_since.map(|since| (since + gap).min(now));
    }

    /// Whether the connection has outstayed a limit at `now`.
    fn expired(&self, now: Instant) -> Option<Expired> {
        let state = self.state();
        let limits = &self.shared.limits;
        if state.partial_since.is_some_and(|since| now.duration_since(since) > limits.frame) {
            return Some(Expired::SlowFrame);
        }
        let idle = limits.idle.is_some_and(|idle| now.duration_since(state.active) > idle);
        (idle && !state.peer).then_some(Expired::Idle)
    }

    /// How long a client connection that may make room for a new one has been quiet.
    fn evictable(&self, now: Instant) -> Option<Duration> {
        let state = self.state();
        let quiet = now.duration_since(state.active);
        (!state.peer && !state.closed && quiet >= EVICT_QUIET).then_some(quiet)
    }

    fn counts_as_client(&self) -> bool {
        let state = self.state();
        !state.peer && !state.closed
    }
}

/// A port being served.
#[derive(Debug)]
pub struct Port {
    task: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl Port {
    /// Serves `listener` within `limits`: each accepted connection runs `serve` on its own
    /// task; a connection that finds no room is sent `refusal` (if any) and closed.
    pub fn spawn<F, Fut>(
        listener: TcpListener,
        limits: ConnLimits,
        refusal: Option<&'static [u8]>,
        serve: F,
    ) -> Self
    where
        F: Fn(TcpStream, Arc<Conn>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, mut stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            limits,
            buffered: AtomicUsize::new(0),
            peers: AtomicUsize::new(0),
            over_budget: Mutex::new(Throttle::new(WARN_EVERY)),
        });
        let task = tokio::spawn(async move {
            // Owned by this task: closing the port aborts every connection with it.
            let mut connections = JoinSet::new();
            let mut open: HashMap<tokio::task::Id, (Arc<Conn>, AbortHandle)> = HashMap::new();
            let mut refused = Throttle::new(WARN_EVERY);
            let mut evicted = Throttle::new(WARN_EVERY);
            let mut expired = Throttle::new(WARN_EVERY);
            let period = sweep_period(&limits);
            let mut sweep = tokio::time::interval(period);
            sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut swept = Instant::now();
            loop {
                let (mut stream, peer) = tokio::select! {
                    biased;
                    _ = stopped.changed() => break,
                    Some(done) = connections.join_next_with_id() => {
                        let id = match done {
                            Ok((id, ())) => id,
                            Err(e) => e.id(),
                        };
                        if let Some((conn, _)) = open.remove(&id) {
                            conn.close();
                        }
                        continue;
                    }
                    _ = sweep.tick() => {
                        let now = Instant::now();
                        // A tick over a period late: the port did not run (see `Conn::excuse`).
                        let late = now.duration_since(swept).saturating_sub(period);
                        swept = now;
                        if late > period {
                            for (conn, _) in open.values() {
                                conn.excuse(late, now);
                            }
                        }
                        for (conn, abort) in open.values() {
                            let Some(why) = conn.expired(now) else { continue };
                            conn.close();
                            abort.abort();
                            if let Some(count) = expired.note(now) {
                                tracing::info!(
                                    reason = ?why,
                                    closed = count,
                                    "closing connections that outstayed a limit \
                                     (limits.idle_timeout_ms, limits.frame_timeout_ms)"
                                );
                            }
                        }
                        continue;
                    }
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                let now = Instant::now();
                let clients = open.values().filter(|(conn, _)| conn.counts_as_client()).count();
                if clients >= limits.clients {
                    let quietest = open
                        .values()
                        .filter_map(|(conn, abort)| Some((conn.evictable(now)?, conn, abort)))
                        .max_by_key(|(quiet, _, _)| *quiet);
                    if let Some((_, conn, abort)) = quietest {
                        conn.close();
                        abort.abort();
                        if let Some(count) = evicted.note(now) {
                            tracing::info!(
                                closed = count,
                                "connection limit reached; closing the quietest client \
                                 connections to make room"
                            );
                        }
                    } else {
                        if let Some(count) = refused.note(now) {
                            tracing::warn!(
                                %peer,
                                refused = count,
                                "connection limit reached and every client busy; \
                                 refusing new connections"
                            );
                        }
                        if let Some(refusal) = refusal {
                            let _ = stream.write_all(refusal).await;
                        }
                        continue;
                    }
                }
                let _ = stream.set_nodelay(true);
                let conn = Arc::new(Conn::new(shared.clone(), now));
                let abort = connections.spawn(serve(stream, conn.clone()));
                open.insert(abort.id(), (conn, abort));
            }
            // Stopped: no new connections; the open ones go on until the port is closed.
            drop(listener);
            while connections.join_next().await.is_some() {}
        });
        Self { task, stop }
    }

    /// Stops accepting connections; open ones keep being served.
    pub fn stop_accepting(&self) {
        let _ = self.stop.send(true);
    }

    /// Closes the port and every open connection at once.
    pub fn close(self) {
        self.task.abort();
    }
}

/// How often a port looks for connections that outstayed a limit: often enough to close
/// them within a quarter of the limit, at most every second.
fn sweep_period(limits: &ConnLimits) -> Duration {
    let shortest = limits.idle.map_or(limits.frame, |idle| idle.min(limits.frame));
    (shortest / 4).clamp(Duration::from_millis(5), Duration::from_secs(1))
}

/// A length-delimited stream (4-byte big-endian lengths, as the RPC codec frames it) that
/// tells its [`Conn`] where frames begin and end as bytes pass through: the port can then
/// time a part-way frame and charge its declared length — which the codec reserves at once —
/// to the port's buffer budget. Sending counts as activity.
#[derive(Debug)]
pub struct Framed<S> {
    inner: S,
    conn: Arc<Conn>,
    max_frame: usize,
    head: [u8; 4],
    head_len: usize,
    body_left: usize,
}

impl<S> Framed<S> {
    /// Watches `inner` for `conn`; frames over `max_frame` are left to the codec to refuse.
    pub fn new(inner: S, conn: Arc<Conn>, max_frame: usize) -> Self {
        Self { inner, conn, max_frame, head: [0; 4], head_len: 0, body_left: 0 }
    }

    fn observe(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.body_left == 0 {
                if self.head_len == 0 {
                    self.conn.partial(true);
                }
                let take = (4 - self.head_len).min(bytes.len());
                self.head[self.head_len..self.head_len + take].copy_from_slice(&bytes[..take]);
                self.head_len += take;
                bytes = &bytes[take..];
                if self.head_len < 4 {
                    continue;
                }
                self.head_len = 0;
                self.body_left = u32::from_be_bytes(self.head) as usize;
                if self.body_left == 0 {
                    self.ended();
                } else if self.body_left <= self.max_frame {
                    self.conn.hold(self.body_left)?;
                }
            } else {
                let take = self.body_left.min(bytes.len());
                self.body_left -= take;
                bytes = &bytes[take..];
                if self.body_left == 0 {
                    self.ended();
                }
            }
        }
        Ok(())
    }

    fn ended(&self) {
        self.conn.partial(false);
        self.conn.active();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Framed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        Poll::Ready(this.observe(&buf.filled()[before..]))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Framed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, data))?;
        if written > 0 {
            this.conn.active();
        }
        Poll::Ready(Ok(written))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// How often a repeated warning is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A warning logged at most once per period, with how many times it happened meanwhile.
#[derive(Debug)]
pub(crate) struct Throttle {
    period: Duration,
    last: Option<Instant>,
    count: u64,
}

impl Throttle {
    /// A throttle logging at most once per `period`.
    pub(crate) fn new(period: Duration) -> Self {
        Self { period, last: None, count: 0 }
    }

    /// The thing happened at `now`: the number of times it happened since it was last
    /// logged (this one included) if it is to be logged now, else `None`.
    pub(crate) fn note(&mut self, now: Instant) -> Option<u64> {
        self.count += 1;
        if self.last.is_some_and(|last| now.duration_since(last) < self.period) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(limits: ConnLimits) -> (Arc<Shared>, Conn) {
        let shared = Arc::new(Shared {
            limits,
            buffered: AtomicUsize::new(0),
            peers: AtomicUsize::new(0),
            over_budget: Mutex::new(Throttle::new(WARN_EVERY)),
        });
        let conn = Conn::new(shared.clone(), Instant::now());
        (shared, conn)
    }

    const LIMITS: ConnLimits = ConnLimits {
        clients: 4,
        peers: 1,
        idle: Some(Duration::from_secs(60)),
        frame: Duration::from_secs(10),
        buffered: 1000,
    };

    #[test]
    fn unfinished_frames_share_one_budget_and_release_it_when_whole_or_closed() {
        let (shared, a) = conn(LIMITS);
        let b = Conn::new(shared.clone(), Instant::now());
        a.partial(true);
        a.hold(600).expect("within the budget");
        b.partial(true);
        assert!(b.hold(500).is_err(), "600 + 500 is over 1000");
        b.hold(400).expect("600 + 400 fits");
        assert_eq!(shared.buffered.load(Ordering::Relaxed), 1000);
        a.partial(false);
        assert_eq!(shared.buffered.load(Ordering::Relaxed), 400, "a whole frame releases");
        b.close();
        assert_eq!(shared.buffered.load(Ordering::Relaxed), 0, "a closed connection releases");
        assert!(b.hold(1).is_err(), "a closed connection holds nothing more");
    }

    #[test]
    fn time_the_port_could_not_run_does_not_count_against_a_connection() {
        let (_, conn) = conn(LIMITS);
        conn.partial(true);
        let started = Instant::now();
        // The process was stopped for a minute just after the frame began.
        let resumed = started + Duration::from_secs(61);
        assert_eq!(conn.expired(resumed), Some(Expired::SlowFrame));
        conn.excuse(Duration::from_secs(60), resumed);
        assert_eq!(conn.expired(resumed), None, "the frame had the port for a second");
        assert_eq!(conn.expired(resumed + Duration::from_secs(10)), Some(Expired::SlowFrame));
        // Never beyond now: an excuse longer than the connection's life makes it fresh.
        conn.excuse(Duration::from_secs(3600), resumed);
        assert_eq!(conn.state().partial_since, Some(resumed));
        assert_eq!(conn.state().active, resumed);
    }

    #[test]
    fn a_slow_frame_expires_and_an_idle_client_does_but_an_idle_peer_does_not() {
        let (shared, client) = conn(LIMITS);
        let now = Instant::now();
        assert_eq!(client.expired(now + Duration::from_secs(59)), None);
        assert_eq!(client.expired(now + Duration::from_secs(61)), Some(Expired::Idle));
        client.partial(true);
        assert_eq!(client.expired(now + Duration::from_secs(11)), Some(Expired::SlowFrame));

        let peer = Conn::new(shared.clone(), now);
        assert!(peer.identify_peer());
        assert_eq!(peer.expired(now + Duration::from_secs(3600)), None, "peers are never idle");
        assert_eq!(peer.evictable(now + Duration::from_secs(3600)), None);
        let second = Conn::new(shared.clone(), now);
        assert!(!second.identify_peer(), "the peers' budget is one connection");
        assert!(second.counts_as_client());
        peer.close();
        assert!(second.identify_peer(), "a closed peer frees its place");
    }

    #[test]
    fn only_a_client_quiet_for_a_while_makes_room() {
        let (shared, _) = conn(LIMITS);
        let now = Instant::now();
        let client = Conn::new(shared, now);
        assert_eq!(client.evictable(now), None, "just active");
        assert_eq!(client.evictable(now + EVICT_QUIET), Some(EVICT_QUIET));
    }

    #[test]
    fn the_framing_watcher_follows_frames_split_anywhere() {
        let (shared, conn) = conn(LIMITS);
        let mut framed = Framed::new(tokio::io::empty(), Arc::new(conn), 5000);
        // Two frames (3 bytes, then 0 bytes) and the head of a third (200 bytes).
        let stream = [&[0, 0, 0, 3, 1, 2, 3][..], &[0, 0, 0, 0], &[0, 0, 0, 200, 9]].concat();
        for byte in stream.chunks(1) {
            framed.observe(byte).expect("within the budget");
        }
        assert_eq!(shared.buffered.load(Ordering::Relaxed), 200, "the third frame's length");
        assert!(framed.conn.state().partial_since.is_some());
        framed.observe(&[7; 199]).expect("the rest");
        assert_eq!(shared.buffered.load(Ordering::Relaxed), 0);
        assert!(framed.conn.state().partial_since.is_none());
        assert!(framed.observe(&[0, 0, 3, 255]).is_err(), "1023 bytes: over the budget");
    }

    #[test]
    fn a_throttled_warning_goes_out_once_a_period_with_the_count_since() {
        let mut throttle = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(throttle.note(t0), Some(1), "the first one at once");
        for s in 1..10 {
            assert_eq!(throttle.note(t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(throttle.note(t0 + Duration::from_secs(10)), Some(10));
        assert_eq!(throttle.note(t0 + Duration::from_secs(11)), None);
        assert_eq!(throttle.note(t0 + Duration::from_secs(30)), Some(2));
    }
}
