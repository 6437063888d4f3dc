//! The host side of vsock: the hybrid Unix socket. Host processes connect to the socket and ask
//! for a guest port (`CONNECT <port>\n`, answered `OK <hostport>\n` once the guest accepts);
//! guest connections to host port P are connected to `<socket>_P`. The muxer owns every
//! connection, decides which one speaks next to the guest, and keeps all of it bounded.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::connection::{Connection, State, Verdict};
use super::packet::*;
use crate::metrics::Metrics;

/// Most live connections; more are refused.
pub const MAX_CONNECTIONS: usize = 1024;
/// Most host connections still sending their `CONNECT` line.
const MAX_HANDSHAKES: usize = 64;
/// Longest `CONNECT` line.
const MAX_LINE: usize = 32;
/// How long a host connection may take to send `CONNECT`, and the guest to answer it.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most RSTs queued for packets that match no connection.
const MAX_STRAY: usize = 64;
/// Host ports handed to host-initiated connections start here.
const FIRST_LOCAL_PORT: u32 = 1 << 30;

const TOKEN_LISTENER: u64 = 0;

/// Errors creating the muxer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket could not be bound.
    #[error("cannot listen on vsock socket {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// epoll failed.
    #[error("epoll: {0}")]
    Epoll(io::Error),
}

struct Handshake {
    stream: UnixStream,
    buf: Vec<u8>,
    deadline: Instant,
}

/// Parses a complete `CONNECT <port>` line (either case, trailing `\r` allowed).
pub fn parse_connect(line: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let (verb, port) = s.split_once(' ')?;
    if verb != "CONNECT" && verb != "connect" {
        return None;
    }
    port.trim().parse().ok()
}

/// The hybrid vsock backend.
pub struct Muxer {
    path: PathBuf,
    guest_cid: u64,
    listener: UnixListener,
    epoll: Epoll,
    handshakes: HashMap<u64, Handshake>,
    conns: HashMap<u64, Connection>,
    by_key: HashMap<(u32, u32), u64>,
    rxq: VecDeque<u64>,
    stray: VecDeque<Header>,
    next_id: u64,
    next_local_port: u32,
    scratch: Vec<u8>,
    metrics: Arc<Metrics>,
}

impl Muxer {
    /// Listens on `path` for host connections to a guest with `guest_cid`.
    pub fn new(path: &Path, guest_cid: u64, metrics: Arc<Metrics>) -> Result<Self, Error> {
        let listener = UnixListener::bind(path).map_err(|source| Error::Bind {
            path: path.to_path_buf(),
            source,
        })?;
        let m = Self::with_listener(path, listener, guest_cid, metrics);
        if m.is_err() {
            let _ = std::fs::remove_file(path);
        }
        m
    }

    fn with_listener(
        path: &Path,
        listener: UnixListener,
        guest_cid: u64,
        metrics: Arc<Metrics>,
    ) -> Result<Self, Error> {
        listener.set_nonblocking(true).map_err(Error::Epoll)?;
        let epoll = Epoll::new().map_err(Error::Epoll)?;
        epoll
            .ctl(
                ControlOperation::Add,
                listener.as_raw_fd(),
                EpollEvent::new(EventSet::IN, TOKEN_LISTENER),
            )
            .map_err(Error::Epoll)?;
        Ok(Self {
            path: path.to_path_buf(),
            guest_cid,
            listener,
            epoll,
            handshakes: HashMap::new(),
            conns: HashMap::new(),
            by_key: HashMap::new(),
            rxq: VecDeque::new(),
            stray: VecDeque::new(),
            next_id: 1,
            next_local_port: FIRST_LOCAL_PORT,
            scratch: vec![0u8; MAX_PAYLOAD as usize],
            metrics,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The muxer's epoll fd: readable when any of its sockets needs attention.
    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Live connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    fn watch(&self, fd: RawFd, id: u64) -> io::Result<()> {
        let ev = EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED;
        self.epoll
            .ctl(ControlOperation::Add, fd, EpollEvent::new(ev, id))
    }

    fn alloc_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn add_conn(&mut self, conn: Connection) -> Option<u64> {
        let id = self.alloc_id();
        if self.watch(conn.stream().as_raw_fd(), id).is_err() {
            return None;
        }
        self.by_key.insert((conn.local_port, conn.peer_port), id);
        self.conns.insert(id, conn);
        self.schedule(id);
        Some(id)
    }

    fn remove_conn(&mut self, id: u64) {
        if let Some(c) = self.conns.remove(&id) {
            self.by_key.remove(&(c.local_port, c.peer_port));
            // Dropping the stream closes it and removes it from the epoll set.
        }
    }

    fn schedule(&mut self, id: u64) {
        if let Some(c) = self.conns.get_mut(&id)
            && !c.queued
            && c.has_rx()
        {
            c.queued = true;
            self.rxq.push_back(id);
        }
    }

    fn stray_rst(&mut self, h: &Header) {
        if self.stray.len() >= MAX_STRAY || h.op == OP_RST {
            return;
        }
        Metrics::inc(&self.metrics.vsock.resets);
        self.stray.push_back(Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: h.dst_port,
            dst_port: h.src_port,
            len: 0,
            kind: TYPE_STREAM,
            op: OP_RST,
            flags: 0,
            buf_alloc: 0,
            fwd_cnt: 0,
        });
    }

    /// Handles everything ready on the muxer's sockets.
    pub fn process_events(&mut self) {
        let mut events = [EpollEvent::default(); 32];
        loop {
            let n = match self.epoll.wait(0, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            for ev in &events[..n] {
                self.on_event(ev.data(), ev.event_set());
            }
            if n < events.len() {
                return;
            }
        }
    }

    fn on_event(&mut self, token: u64, set: EventSet) {
        if token == TOKEN_LISTENER {
            return self.accept_all();
        }
        if self.handshakes.contains_key(&token) {
            return self.read_handshake(token);
        }
        if let Some(c) = self.conns.get_mut(&token) {
            if set.intersects(EventSet::OUT | EventSet::ERROR | EventSet::HANG_UP) {
                c.on_writable();
            }
            if set.intersects(
                EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP | EventSet::ERROR,
            ) {
                c.on_readable();
            }
            self.schedule(token);
        }
    }

    fn accept_all(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return, // WouldBlock, or out of fds: try again on the next event
            };
            if self.handshakes.len() >= MAX_HANDSHAKES
                || self.conns.len() >= MAX_CONNECTIONS
                || stream.set_nonblocking(true).is_err()
            {
                continue; // dropped: the host sees the connection closed
            }
            let id = self.alloc_id();
            if self.watch(stream.as_raw_fd(), id).is_err() {
                continue;
            }
            self.handshakes.insert(
                id,
                Handshake {
                    stream,
                    buf: Vec::with_capacity(MAX_LINE),
                    deadline: Instant::now() + CONNECT_TIMEOUT,
                },
            );
        }
    }

    fn read_handshake(&mut self, id: u64) {
        let Some(h) = self.handshakes.get_mut(&id) else {
            return;
        };
        let mut chunk = [0u8; MAX_LINE];
        let done = loop {
            match h.stream.read(&mut chunk) {
                Ok(0) => break Err(()),
                Ok(n) => {
                    h.buf.extend_from_slice(&chunk[..n]);
                    if h.buf.contains(&b'\n') {
                        break Ok(());
                    }
                    if h.buf.len() >= MAX_LINE {
                        break Err(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break Err(()),
            }
        };
        let Some(h) = self.handshakes.remove(&id) else {
            return;
        };
        if done.is_err() {
            return; // closed: bad or no request
        }
        let nl = h
            .buf
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(h.buf.len());
        let Some(port) = parse_connect(&h.buf[..nl]) else {
            return;
        };
        let prefix = h.buf[nl + 1..].to_vec();
        let local_port = self.alloc_local_port();
        // The stream is re-registered under the connection's own id.
        let _ = self.epoll.ctl(
            ControlOperation::Delete,
            h.stream.as_raw_fd(),
            EpollEvent::default(),
        );
        Metrics::inc(&self.metrics.vsock.connections);
        let conn = Connection::local(
            h.stream,
            self.guest_cid,
            local_port,
            port,
            prefix,
            Instant::now() + CONNECT_TIMEOUT,
        );
        self.add_conn(conn);
    }

    fn alloc_local_port(&mut self) -> u32 {
        loop {
            let p = self.next_local_port;
            self.next_local_port = self.next_local_port.wrapping_add(1).max(FIRST_LOCAL_PORT);
            if !self.by_key.keys().any(|(l, _)| *l == p) {
                return p;
            }
        }
    }

    /// Handles a checked packet from the guest; `payload` yields exactly `h.len` bytes.
    pub fn handle_tx(&mut self, h: &Header, payload: &mut dyn Read) {
        Metrics::inc(&self.metrics.vsock.tx_packets);
        Metrics::add(&self.metrics.vsock.tx_bytes, u64::from(h.len));
        let key = (h.dst_port, h.src_port);
        let Some(&id) = self.by_key.get(&key) else {
            if h.op == OP_REQUEST {
                self.guest_connect(h);
            } else {
                self.stray_rst(h);
            }
            return;
        };
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let verdict = c.on_packet(h, payload, &mut self.scratch);
        if verdict == Verdict::Remove {
            self.remove_conn(id);
        } else {
            self.schedule(id);
        }
    }

    /// A packet that failed its checks but names a connection: reset that connection (or answer
    /// with an RST if there is none), so the guest's socket does not hang.
    pub fn reject(&mut self, h: &Header) {
        Metrics::inc(&self.metrics.vsock.tx_packets);
        match self.by_key.get(&(h.dst_port, h.src_port)).copied() {
            Some(id) => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.kill();
                }
                self.schedule(id);
            }
            None => self.stray_rst(h),
        }
    }

    fn guest_connect(&mut self, h: &Header) {
        if self.conns.len() >= MAX_CONNECTIONS {
            return self.stray_rst(h);
        }
        let mut target = self.path.clone().into_os_string();
        target.push(format!("_{}", h.dst_port));
        let stream = match UnixStream::connect(&target) {
            Ok(s) if s.set_nonblocking(true).is_ok() => s,
            _ => return self.stray_rst(h),
        };
        Metrics::inc(&self.metrics.vsock.connections);
        if self
            .add_conn(Connection::peer(stream, self.guest_cid, h))
            .is_none()
        {
            self.stray_rst(h);
        }
    }

    /// True when there is a packet for the guest.
    pub fn has_rx(&self) -> bool {
        !self.stray.is_empty() || !self.rxq.is_empty()
    }

    /// The next packet for the guest, its payload at most `room` bytes, copied by `emit`.
    /// Returns false when nothing was produced.
    pub fn next_rx(&mut self, room: usize, emit: &mut dyn FnMut(&Header, &[u8])) -> bool {
        if let Some(h) = self.stray.pop_front() {
            emit(&h, &[]);
            return true;
        }
        while let Some(id) = self.rxq.pop_front() {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            c.queued = false;
            let room = room.min(self.scratch.len());
            let packet = c.next_rx(&mut self.scratch[..room]);
            if let Some((h, n)) = packet {
                Metrics::inc(&self.metrics.vsock.rx_packets);
                match h.op {
                    OP_RST => Metrics::inc(&self.metrics.vsock.resets),
                    OP_RW => Metrics::add(&self.metrics.vsock.rx_bytes, n as u64),
                    _ => {}
                }
                emit(&h, &self.scratch[..n]);
                if c.is_done() || h.op == OP_RST {
                    self.remove_conn(id);
                } else {
                    // Round robin: back of the queue if it has more to say.
                    self.schedule(id);
                }
                return true;
            }
            if c.is_done() {
                self.remove_conn(id);
            }
        }
        false
    }

    /// The earliest deadline (handshakes, unanswered requests).
    pub fn next_deadline(&self) -> Option<Instant> {
        let h = self.handshakes.values().map(|h| h.deadline);
        let c = self.conns.values().filter_map(|c| c.deadline);
        h.chain(c).min()
    }

    /// Drops handshakes and requests whose time is up.
    pub fn expire(&mut self, now: Instant) {
        self.handshakes.retain(|_, h| h.deadline > now);
        let late: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now) && c.state() == State::LocalInit)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(c) = self.conns.get_mut(&id) {
                // Tell the guest in case it answers late, then forget it (closing the host side).
                c.deadline = None;
                c.kill();
                self.schedule(id);
            }
        }
    }

    /// Drops every connection (device reset); keeps listening.
    pub fn reset(&mut self) {
        self.conns.clear();
        self.by_key.clear();
        self.rxq.clear();
        self.stray.clear();
    }
}

impl Drop for Muxer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests;
