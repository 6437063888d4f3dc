//! One vsock stream between a guest port and a host Unix socket: its state, the credit each side
//! has given the other, and the next packet it owes the guest.
//!
//! Flow control follows the virtio-vsock rules. Towards the host, the VMM advertises
//! [`TX_BUF_SIZE`] bytes of buffer; what the host socket does not take at once waits in a
//! [`TxBuf`] of exactly that size, so a guest honouring the credit never overflows it and one that
//! does not gets reset. Towards the guest nothing is buffered: host bytes are read only when the
//! guest has both a free rx buffer and credit for them.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use super::packet::*;
use super::txbuf::TxBuf;

/// Receive buffer the VMM advertises per connection (bytes from the guest not yet taken by the host).
pub const TX_BUF_SIZE: u32 = 256 << 10;
/// Send a credit update once the host has taken this much since the last one.
const CREDIT_UPDATE_THRESHOLD: u32 = 64 << 10;

const P_REQUEST: u8 = 1;
const P_RESPONSE: u8 = 2;
const P_RST: u8 = 4;
const P_SHUTDOWN: u8 = 8;
const P_CREDIT_UPDATE: u8 = 16;
const P_CREDIT_REQUEST: u8 = 32;

/// Where the connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Host-initiated: REQUEST sent (or owed), waiting for the guest's RESPONSE.
    LocalInit,
    /// Data flows.
    Established,
    /// Done: owes the guest an RST (if flagged), then goes away.
    Closed,
}

/// What the muxer should do after a guest packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it.
    Keep,
    /// Forget it now (the guest reset it).
    Remove,
}

/// A stream connection.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    /// Host-side port.
    pub local_port: u32,
    /// Guest-side port.
    pub peer_port: u32,
    guest_cid: u64,
    state: State,
    pending: u8,
    txbuf: TxBuf,
    fwd_cnt: Wrapping<u32>,
    last_fwd_cnt_sent: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    rx_cnt: Wrapping<u32>,
    host_readable: bool,
    host_eof: bool,
    peer_shutdown: u32,
    shut_host_write: bool,
    credit_requested: bool,
    prefix: Vec<u8>,
    /// When the guest must have answered a REQUEST by.
    pub deadline: Option<Instant>,
    /// Queued on the muxer's rx list.
    pub queued: bool,
}

impl Connection {
    /// A host-initiated connection to guest port `peer_port`; `prefix` holds host bytes already
    /// read past the `CONNECT` line.
    pub fn local(
        stream: UnixStream,
        guest_cid: u64,
        local_port: u32,
        peer_port: u32,
        prefix: Vec<u8>,
        deadline: Instant,
    ) -> Self {
        let mut c = Self::new(stream, guest_cid, local_port, peer_port, State::LocalInit);
        c.pending = P_REQUEST;
        c.prefix = prefix;
        c.deadline = Some(deadline);
        c
    }

    /// A guest-initiated connection, accepted: owes the guest a RESPONSE.
    pub fn peer(stream: UnixStream, guest_cid: u64, h: &Header) -> Self {
        let mut c = Self::new(
            stream,
            guest_cid,
            h.dst_port,
            h.src_port,
            State::Established,
        );
        c.pending = P_RESPONSE;
        c.update_peer_credit(h);
        c
    }

    fn new(
        stream: UnixStream,
        guest_cid: u64,
        local_port: u32,
        peer_port: u32,
        state: State,
    ) -> Self {
        Self {
            stream,
            local_port,
            peer_port,
            guest_cid,
            state,
            pending: 0,
            txbuf: TxBuf::new(TX_BUF_SIZE as usize),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            rx_cnt: Wrapping(0),
            host_readable: true,
            host_eof: false,
            peer_shutdown: 0,
            shut_host_write: false,
            credit_requested: false,
            prefix: Vec::new(),
            deadline: None,
            queued: false,
        }
    }

    /// The host socket.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// The state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Bytes waiting for the host.
    pub fn tx_pending(&self) -> usize {
        self.txbuf.len()
    }

    fn update_peer_credit(&mut self, h: &Header) {
        if h.fwd_cnt != self.peer_fwd_cnt.0 || h.buf_alloc != self.peer_buf_alloc {
            self.credit_requested = false;
        }
        self.peer_buf_alloc = h.buf_alloc;
        self.peer_fwd_cnt = Wrapping(h.fwd_cnt);
    }

    /// Bytes the guest can take now.
    pub fn peer_free(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Ends the connection with an RST to the guest.
    pub fn kill(&mut self) {
        self.state = State::Closed;
        self.pending = P_RST;
    }

    /// True when the muxer should drop it: closed with nothing left to tell the guest.
    pub fn is_done(&self) -> bool {
        self.state == State::Closed && self.pending == 0
    }

    /// Handles a checked packet from the guest; `payload` yields exactly `h.len` bytes.
    pub fn on_packet(&mut self, h: &Header, payload: &mut dyn Read, scratch: &mut [u8]) -> Verdict {
        self.update_peer_credit(h);
        match (self.state, h.op) {
            (_, OP_RST) => return Verdict::Remove,
            (State::Closed, _) => {}
            (State::LocalInit, OP_RESPONSE) => {
                self.state = State::Established;
                self.deadline = None;
                let ok = format!("OK {}\n", self.local_port);
                if self.stream.write_all(ok.as_bytes()).is_err() {
                    self.kill();
                }
            }
            (State::Established, OP_RW) => self.take_guest_data(h.len as usize, payload, scratch),
            (State::Established, OP_CREDIT_UPDATE) => {}
            (State::Established, OP_CREDIT_REQUEST) => self.pending |= P_CREDIT_UPDATE,
            (State::Established, OP_SHUTDOWN) => {
                self.peer_shutdown |= h.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
                self.after_tx_progress();
            }
            // REQUEST on a live connection, RESPONSE when not asked, data before RESPONSE...
            _ => self.kill(),
        }
        Verdict::Keep
    }

    fn take_guest_data(&mut self, len: usize, payload: &mut dyn Read, scratch: &mut [u8]) {
        if self.peer_shutdown & SHUTDOWN_SEND != 0 {
            return self.kill();
        }
        let mut left = len;
        while left > 0 {
            let n = left.min(scratch.len());
            if payload.read_exact(&mut scratch[..n]).is_err() {
                return self.kill();
            }
            left -= n;
            let mut data = &scratch[..n];
            if self.txbuf.is_empty() {
                match write_some(&mut self.stream, data) {
                    Ok(k) => {
                        self.fwd_cnt += Wrapping(k as u32);
                        data = &data[k..];
                    }
                    Err(_) => return self.kill(),
                }
            }
            if !data.is_empty() && self.txbuf.push(data).is_err() {
                // The guest sent more than the credit it was given.
                return self.kill();
            }
        }
        self.after_tx_progress();
    }

    /// The host socket became writable.
    pub fn on_writable(&mut self) {
        if self.state == State::Closed || self.txbuf.is_empty() {
            return;
        }
        match self.txbuf.flush_to(&mut self.stream) {
            Ok(n) => self.fwd_cnt += Wrapping(n as u32),
            Err(_) => return self.kill(),
        }
        self.after_tx_progress();
    }

    /// The host socket became readable (or hung up).
    pub fn on_readable(&mut self) {
        self.host_readable = true;
    }

    fn after_tx_progress(&mut self) {
        if (self.fwd_cnt - self.last_fwd_cnt_sent).0 >= CREDIT_UPDATE_THRESHOLD {
            self.pending |= P_CREDIT_UPDATE;
        }
        if !self.txbuf.is_empty() {
            return;
        }
        if self.peer_shutdown == SHUTDOWN_RCV | SHUTDOWN_SEND {
            // The guest closed: everything it sent is delivered; confirm with an RST.
            self.kill();
        } else if self.peer_shutdown & SHUTDOWN_SEND != 0 && !self.shut_host_write {
            self.shut_host_write = true;
            let _ = self.stream.shutdown(Shutdown::Write);
        }
    }

    fn wants_data_rx(&self) -> bool {
        self.state == State::Established
            && !self.host_eof
            && self.peer_shutdown & SHUTDOWN_RCV == 0
            && (self.host_readable || !self.prefix.is_empty())
    }

    /// True when the connection has a packet for the guest.
    pub fn has_rx(&self) -> bool {
        self.pending != 0
            || (self.wants_data_rx() && (self.peer_free() > 0 || !self.credit_requested))
    }

    fn header(&self, op: u16, len: u32, flags: u32) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len,
            kind: TYPE_STREAM,
            op,
            flags,
            buf_alloc: TX_BUF_SIZE,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    fn control(&mut self, bit: u8, op: u16, flags: u32) -> Header {
        self.pending &= !bit;
        self.last_fwd_cnt_sent = self.fwd_cnt;
        self.header(op, 0, flags)
    }

    /// The next packet for the guest, with up to `buf.len()` payload bytes read into `buf`.
    pub fn next_rx(&mut self, buf: &mut [u8]) -> Option<(Header, usize)> {
        if self.pending & P_RST != 0 {
            self.pending = 0;
            return Some((self.header(OP_RST, 0, 0), 0));
        }
        if self.pending & P_REQUEST != 0 {
            return Some((self.control(P_REQUEST, OP_REQUEST, 0), 0));
        }
        if self.pending & P_RESPONSE != 0 {
            return Some((self.control(P_RESPONSE, OP_RESPONSE, 0), 0));
        }
        if self.pending & P_SHUTDOWN != 0 {
            return Some((self.control(P_SHUTDOWN, OP_SHUTDOWN, SHUTDOWN_SEND), 0));
        }
        if self.pending & P_CREDIT_UPDATE != 0 {
            return Some((self.control(P_CREDIT_UPDATE, OP_CREDIT_UPDATE, 0), 0));
        }
        if self.pending & P_CREDIT_REQUEST != 0 {
            return Some((self.control(P_CREDIT_REQUEST, OP_CREDIT_REQUEST, 0), 0));
        }
        if !self.wants_data_rx() {
            return None;
        }
        let room = (self.peer_free().min(MAX_PAYLOAD) as usize).min(buf.len());
        if room == 0 {
            if self.peer_free() == 0 && !self.credit_requested {
                self.credit_requested = true;
                return Some((self.header(OP_CREDIT_REQUEST, 0, 0), 0));
            }
            return None;
        }
        let n = if !self.prefix.is_empty() {
            let n = room.min(self.prefix.len());
            buf[..n].copy_from_slice(&self.prefix[..n]);
            self.prefix.drain(..n);
            n
        } else {
            match self.stream.read(&mut buf[..room]) {
                Ok(0) => {
                    self.host_eof = true;
                    self.host_readable = false;
                    return Some((self.control(P_SHUTDOWN, OP_SHUTDOWN, SHUTDOWN_SEND), 0));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.host_readable = false;
                    return None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return None,
                Err(_) => {
                    self.state = State::Closed;
                    self.pending = 0;
                    return Some((self.header(OP_RST, 0, 0), 0));
                }
            }
        };
        self.rx_cnt += Wrapping(n as u32);
        self.last_fwd_cnt_sent = self.fwd_cnt;
        Some((self.header(OP_RW, n as u32, 0), n))
    }
}

/// Writes what the socket takes without blocking (0 when it would block).
fn write_some(s: &mut UnixStream, data: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < data.len() {
        match s.write(&data[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests;
