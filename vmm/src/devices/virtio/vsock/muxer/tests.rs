use super::*;
use std::io::Write;
use std::os::unix::net::UnixListener;

const GUEST: u64 = 3;

fn muxer() -> (tempfile::TempDir, Muxer) {
    let d = tempfile::tempdir().unwrap();
    let m = Muxer::new(
        &d.path().join("v.sock"),
        GUEST,
        Arc::new(Metrics::default()),
    )
    .unwrap();
    (d, m)
}

/// Pumps events until `f` yields a packet or a second passes.
fn next(m: &mut Muxer) -> Option<(Header, Vec<u8>)> {
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        m.process_events();
        let mut out = None;
        m.next_rx(64 << 10, &mut |h, p| out = Some((*h, p.to_vec())));
        if out.is_some() {
            return out;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

fn guest(op: u16, src_port: u32, dst_port: u32, len: u32) -> Header {
    Header {
        src_cid: GUEST,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len,
        kind: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: 1 << 16,
        fwd_cnt: 0,
    }
}

#[test]
fn parse_connect_lines() {
    assert_eq!(parse_connect(b"CONNECT 1024"), Some(1024));
    assert_eq!(parse_connect(b"connect 52\r"), Some(52));
    assert_eq!(parse_connect(b"Connect 1"), None);
    assert_eq!(parse_connect(b"CONNECT"), None);
    assert_eq!(parse_connect(b"CONNECT -1"), None);
    assert_eq!(parse_connect(b"CONNECT 99999999999"), None);
    assert_eq!(parse_connect(b"\xff\xfe"), None);
}

#[test]
fn host_connect_reaches_the_guest_and_gets_ok() {
    let (d, mut m) = muxer();
    let mut host = UnixStream::connect(d.path().join("v.sock")).unwrap();
    host.write_all(b"CONNECT 1024\n").unwrap();
    let (h, _) = next(&mut m).unwrap();
    assert_eq!((h.op, h.dst_port, h.dst_cid), (OP_REQUEST, 1024, GUEST));
    assert!(h.src_port >= 1 << 30);
    m.handle_tx(
        &guest(OP_RESPONSE, 1024, h.src_port, 0),
        &mut std::io::empty(),
    );
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(&host).read_line(&mut line).unwrap();
    assert_eq!(line, format!("OK {}\n", h.src_port));
    // Guest data reaches the host.
    let mut p: &[u8] = b"pong";
    m.handle_tx(&guest(OP_RW, 1024, h.src_port, 4), &mut p);
    let mut got = [0u8; 4];
    host.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pong");
    assert_eq!(m.connection_count(), 1);
    // Host data reaches the guest.
    host.write_all(b"ping").unwrap();
    let (h2, data) = next(&mut m).unwrap();
    assert_eq!((h2.op, data.as_slice()), (OP_RW, &b"ping"[..]));
}

#[test]
fn guest_refusal_closes_the_host_side() {
    let (d, mut m) = muxer();
    let mut host = UnixStream::connect(d.path().join("v.sock")).unwrap();
    host.write_all(b"connect 7\n").unwrap();
    let (h, _) = next(&mut m).unwrap();
    m.handle_tx(&guest(OP_RST, 7, h.src_port, 0), &mut std::io::empty());
    assert_eq!(m.connection_count(), 0);
    let mut b = [0u8; 1];
    assert_eq!(host.read(&mut b).unwrap(), 0);
}

#[test]
fn bad_handshakes_are_dropped() {
    let (d, mut m) = muxer();
    for bad in [&b"HELLO 1\n"[..], b"CONNECT x\n", &[b'A'; 40]] {
        let mut host = UnixStream::connect(d.path().join("v.sock")).unwrap();
        host.write_all(bad).unwrap();
        host.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        m.process_events();
        let mut b = [0u8; 1];
        assert_eq!(host.read(&mut b).unwrap_or(0), 0, "{bad:?}");
    }
    assert!(!m.has_rx());
}

#[test]
fn silent_host_and_silent_guest_time_out() {
    let (d, mut m) = muxer();
    let _silent = UnixStream::connect(d.path().join("v.sock")).unwrap();
    m.process_events();
    assert!(m.next_deadline().is_some());
    let mut host = UnixStream::connect(d.path().join("v.sock")).unwrap();
    host.write_all(b"CONNECT 9\n").unwrap();
    let (h, _) = next(&mut m).unwrap();
    assert_eq!(h.op, OP_REQUEST);
    m.expire(Instant::now() + CONNECT_TIMEOUT + Duration::from_secs(1));
    let (h, _) = next(&mut m).unwrap();
    assert_eq!(h.op, OP_RST);
    assert_eq!(m.connection_count(), 0);
    assert!(m.next_deadline().is_none());
    let mut b = [0u8; 1];
    assert_eq!(host.read(&mut b).unwrap(), 0);
}

#[test]
fn guest_initiated_connections_go_to_socket_underscore_port() {
    let (d, mut m) = muxer();
    let listener = UnixListener::bind(d.path().join("v.sock_2000")).unwrap();
    m.handle_tx(&guest(OP_REQUEST, 777, 2000, 0), &mut std::io::empty());
    let (h, _) = next(&mut m).unwrap();
    assert_eq!((h.op, h.src_port, h.dst_port), (OP_RESPONSE, 2000, 777));
    let (mut peer, _) = listener.accept().unwrap();
    let mut p: &[u8] = b"from guest";
    m.handle_tx(&guest(OP_RW, 777, 2000, 10), &mut p);
    let mut got = [0u8; 10];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"from guest");
    // Nobody listens on 2001: RST.
    m.handle_tx(&guest(OP_REQUEST, 778, 2001, 0), &mut std::io::empty());
    let (h, _) = next(&mut m).unwrap();
    assert_eq!((h.op, h.dst_port), (OP_RST, 778));
}

#[test]
fn strays_get_bounded_resets() {
    let (_d, mut m) = muxer();
    for port in 0..(MAX_STRAY as u32 + 50) {
        m.handle_tx(&guest(OP_CREDIT_UPDATE, port, 5, 0), &mut std::io::empty());
    }
    // An RST for an unknown connection is never answered with an RST.
    m.handle_tx(&guest(OP_RST, 1, 5, 0), &mut std::io::empty());
    let mut n = 0;
    while m.next_rx(100, &mut |h, _| assert_eq!(h.op, OP_RST)) {
        n += 1;
    }
    assert_eq!(n, MAX_STRAY);
}

#[test]
fn socket_is_removed_with_the_muxer_and_a_taken_path_is_refused() {
    let (d, m) = muxer();
    let path = d.path().join("v.sock");
    assert!(path.exists());
    let e = Muxer::new(&path, GUEST, Arc::new(Metrics::default()))
        .err()
        .unwrap();
    assert!(e.to_string().contains("cannot listen"), "{e}");
    assert!(path.exists(), "someone else's socket is left alone");
    drop(m);
    assert!(!path.exists());
}
