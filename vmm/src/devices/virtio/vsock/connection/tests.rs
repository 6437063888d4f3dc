use super::*;
use std::io::{Read, Write};
use std::time::Duration;

const GUEST: u64 = 3;

fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    (a, b)
}

fn guest(op: u16, len: u32, flags: u32, buf_alloc: u32, fwd_cnt: u32) -> Header {
    Header {
        src_cid: GUEST,
        dst_cid: HOST_CID,
        src_port: 5000,
        dst_port: 1 << 30,
        len,
        kind: TYPE_STREAM,
        op,
        flags,
        buf_alloc,
        fwd_cnt,
    }
}

fn established() -> (Connection, UnixStream) {
    let (a, mut host) = pair();
    let mut c = Connection::local(a, GUEST, 1 << 30, 5000, Vec::new(), Instant::now());
    let mut buf = [0u8; 64];
    let (h, _) = c.next_rx(&mut buf).unwrap();
    assert_eq!(h.op, OP_REQUEST);
    assert_eq!(
        (h.src_port, h.dst_port, h.buf_alloc),
        (1 << 30, 5000, TX_BUF_SIZE)
    );
    let v = c.on_packet(
        &guest(OP_RESPONSE, 0, 0, 4096, 0),
        &mut std::io::empty(),
        &mut [0; 64],
    );
    assert_eq!(v, Verdict::Keep);
    let mut ok = [0u8; 14];
    host.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"OK 1073741824\n");
    assert_eq!(c.state(), State::Established);
    (c, host)
}

#[test]
fn data_flows_both_ways_within_credit() {
    let (mut c, mut host) = established();
    // Guest -> host.
    let mut payload: &[u8] = b"hello host";
    c.on_packet(&guest(OP_RW, 10, 0, 4096, 0), &mut payload, &mut [0; 64]);
    let mut got = [0u8; 10];
    host.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello host");
    // Host -> guest, limited by the guest's 4096-byte buffer.
    host.write_all(&vec![7u8; 10000]).unwrap();
    c.on_readable();
    let mut buf = vec![0u8; 64 << 10];
    let (h, n) = c.next_rx(&mut buf).unwrap();
    assert_eq!((h.op, n, h.len), (OP_RW, 4096, 4096));
    assert_eq!(h.fwd_cnt, 10, "carries our forward count");
    assert_eq!(c.peer_free(), 0);
    // Out of credit: one credit request, then silence.
    let (h, _) = c.next_rx(&mut buf).unwrap();
    assert_eq!(h.op, OP_CREDIT_REQUEST);
    assert!(!c.has_rx());
    // The guest consumed it: more flows.
    c.on_packet(
        &guest(OP_CREDIT_UPDATE, 0, 0, 4096, 4096),
        &mut std::io::empty(),
        &mut [0; 64],
    );
    assert!(c.has_rx());
    let (h, n) = c.next_rx(&mut buf).unwrap();
    assert_eq!((h.op, n), (OP_RW, 4096));
}

#[test]
fn guest_exceeding_credit_is_reset_not_buffered_forever() {
    let (mut c, host) = established();
    // Fill the host socket so writes would block, then send more than TX_BUF_SIZE.
    let chunk = vec![1u8; 60 << 10];
    let mut sent = 0u64;
    while sent < 8 << 20 && c.state() == State::Established {
        let mut p: &[u8] = &chunk;
        c.on_packet(
            &guest(OP_RW, chunk.len() as u32, 0, 4096, 0),
            &mut p,
            &mut vec![0; 64 << 10],
        );
        sent += chunk.len() as u64;
        assert!(c.tx_pending() <= TX_BUF_SIZE as usize);
    }
    assert_eq!(c.state(), State::Closed);
    let (h, _) = c.next_rx(&mut [0u8; 16]).unwrap();
    assert_eq!(h.op, OP_RST);
    assert!(c.is_done());
    drop(host);
}

#[test]
fn slow_host_gets_buffered_bytes_later_and_credit_updates_follow() {
    let (mut c, mut host) = established();
    let chunk = vec![9u8; 60 << 10];
    let mut total = 0usize;
    // Send up to the advertised credit; the socket buffer plus TxBuf absorb it.
    while total + chunk.len() <= TX_BUF_SIZE as usize {
        let mut p: &[u8] = &chunk;
        c.on_packet(
            &guest(OP_RW, chunk.len() as u32, 0, 4096, 0),
            &mut p,
            &mut vec![0; 64 << 10],
        );
        total += chunk.len();
    }
    assert_eq!(c.state(), State::Established);
    // Host drains; the connection flushes its buffer on writability.
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    while got < total {
        c.on_writable();
        host.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if let Ok(n) = host.read(&mut buf) {
            assert!(buf[..n].iter().all(|&b| b == 9));
            got += n;
        }
    }
    assert_eq!(got, total);
    assert_eq!(c.tx_pending(), 0);
    // More than the threshold was forwarded: a credit update is owed.
    let (h, _) = c.next_rx(&mut [0u8; 16]).unwrap();
    assert_eq!(h.op, OP_CREDIT_UPDATE);
    assert_eq!(h.fwd_cnt as usize, total);
}

#[test]
fn shutdowns_and_resets() {
    // Guest closes: everything delivered, then an RST.
    let (mut c, mut host) = established();
    let mut p: &[u8] = b"bye";
    c.on_packet(&guest(OP_RW, 3, 0, 4096, 0), &mut p, &mut [0; 64]);
    c.on_packet(
        &guest(OP_SHUTDOWN, 0, SHUTDOWN_RCV | SHUTDOWN_SEND, 4096, 0),
        &mut std::io::empty(),
        &mut [0; 64],
    );
    let (h, _) = c.next_rx(&mut [0u8; 16]).unwrap();
    assert_eq!(h.op, OP_RST);
    assert!(c.is_done());
    let mut got = [0u8; 3];
    host.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"bye");

    // Host closes: the guest gets SHUTDOWN(SEND) after the last bytes.
    let (mut c, mut host) = established();
    host.write_all(b"last").unwrap();
    drop(host);
    c.on_readable();
    let mut buf = [0u8; 64];
    let (h, n) = c.next_rx(&mut buf).unwrap();
    assert_eq!((h.op, &buf[..n]), (OP_RW, &b"last"[..]));
    let (h, _) = c.next_rx(&mut buf).unwrap();
    assert_eq!((h.op, h.flags), (OP_SHUTDOWN, SHUTDOWN_SEND));
    assert!(!c.has_rx());

    // Guest RST: removed at once.
    let (mut c, _host) = established();
    let v = c.on_packet(
        &guest(OP_RST, 0, 0, 0, 0),
        &mut std::io::empty(),
        &mut [0; 64],
    );
    assert_eq!(v, Verdict::Remove);
}

#[test]
fn protocol_violations_reset_the_connection() {
    // Data before the RESPONSE.
    let (a, _host) = pair();
    let mut c = Connection::local(a, GUEST, 1 << 30, 5000, Vec::new(), Instant::now());
    let mut p: &[u8] = b"x";
    c.on_packet(&guest(OP_RW, 1, 0, 4096, 0), &mut p, &mut [0; 64]);
    assert_eq!(c.state(), State::Closed);
    // A second REQUEST on a live connection.
    let (mut c, _host) = established();
    c.on_packet(
        &guest(OP_REQUEST, 0, 0, 4096, 0),
        &mut std::io::empty(),
        &mut [0; 64],
    );
    assert_eq!(c.state(), State::Closed);
    // Data after the guest said it would send no more.
    let (mut c, _host) = established();
    c.on_packet(
        &guest(OP_SHUTDOWN, 0, SHUTDOWN_SEND, 4096, 0),
        &mut std::io::empty(),
        &mut [0; 64],
    );
    let mut p: &[u8] = b"x";
    c.on_packet(&guest(OP_RW, 1, 0, 4096, 0), &mut p, &mut [0; 64]);
    assert_eq!(c.state(), State::Closed);
    // A payload shorter than the header claims.
    let (mut c, _host) = established();
    let mut p: &[u8] = b"short";
    c.on_packet(&guest(OP_RW, 100, 0, 4096, 0), &mut p, &mut [0; 64]);
    assert_eq!(c.state(), State::Closed);
}

#[test]
fn prefix_bytes_after_connect_come_first() {
    let (a, mut host) = pair();
    let mut c = Connection::local(a, GUEST, 1 << 30, 5000, b"early".to_vec(), Instant::now());
    let mut buf = [0u8; 64];
    c.next_rx(&mut buf).unwrap();
    c.on_packet(
        &guest(OP_RESPONSE, 0, 0, 4096, 0),
        &mut std::io::empty(),
        &mut [0; 64],
    );
    let mut ok = [0u8; 14];
    host.read_exact(&mut ok).unwrap();
    host.write_all(b"-later").unwrap();
    let (_, n) = c.next_rx(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"early");
    let (_, n) = c.next_rx(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"-later");
}
