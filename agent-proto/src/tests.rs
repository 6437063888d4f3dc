//! Framing round trips, and hostile input: no panic, no unbounded allocation, a clear error.

use proptest::prelude::*;

use super::*;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(msg: T) {
    let mut buf = Vec::new();
    write_frame(&mut buf, &msg).unwrap();
    let mut r = &buf[..];
    let back: T = read_frame(&mut r).unwrap().unwrap();
    assert_eq!(back, msg);
    assert!(r.is_empty());
    assert!(read_frame::<_, T>(&mut r).unwrap().is_none(), "clean EOF");
}

#[test]
fn messages_round_trip() {
    round_trip(Request::Hello { version: VERSION });
    round_trip(Request::Create(CreateContainer {
        id: "c1".into(),
        spec: serde_json::json!({"ociVersion": "1.0.2", "process": {"args": ["sh"]}}),
        rootfs: Rootfs::Block {
            device: "vda".into(),
            fstype: "erofs".into(),
        },
        stdio: StdioPlan {
            stdin: false,
            stdout: true,
            stderr: true,
        },
    }));
    round_trip(Request::Attach {
        id: "c1".into(),
        exec_id: Some("e1".into()),
        stream: Stream::Stderr,
    });
    round_trip(Response::Exited {
        status: ExitStatus::Signaled(9),
    });
    round_trip(Response::Stats(Stats {
        memory_usage: 1,
        memory_limit: Some(2),
        ..Default::default()
    }));
    round_trip(Response::error(ErrorKind::NotFound, "no such container"));
}

#[test]
fn the_wire_format_is_readable_json() {
    let mut buf = Vec::new();
    write_frame(&mut buf, &Request::Start { id: "c1".into() }).unwrap();
    assert_eq!(&buf[4..], br#"{"op":"start","id":"c1"}"#);
    assert_eq!(
        u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize,
        buf.len() - 4
    );
}

#[test]
fn oversized_truncated_and_unknown_frames_are_refused() {
    // A huge length is refused before anything is allocated.
    let mut r = &u32::MAX.to_be_bytes()[..];
    assert!(matches!(
        read_frame::<_, Request>(&mut r),
        Err(Error::TooLarge(u32::MAX))
    ));
    let mut r = &[0u8, 0][..];
    assert!(matches!(
        read_frame::<_, Request>(&mut r),
        Err(Error::Truncated)
    ));
    let mut frame = 10u32.to_be_bytes().to_vec();
    frame.extend_from_slice(b"{\"op\":");
    assert!(matches!(
        read_frame::<_, Request>(&mut &frame[..]),
        Err(Error::Truncated)
    ));
    for body in [
        &br#"{"op":"start","id":"c1","extra":1}"#[..],
        br#"{"op":"format_disk"}"#,
        br#"{"result":"ok"}"#,
        b"\xff\xfe",
    ] {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        let e = read_frame::<_, Request>(&mut &frame[..]).unwrap_err();
        assert!(matches!(e, Error::Malformed(_)), "{e}");
    }
    // And a message too big to send is refused on the sending side.
    let big = Request::Start {
        id: "x".repeat(MAX_FRAME as usize),
    };
    assert!(matches!(
        write_frame(&mut Vec::new(), &big),
        Err(Error::TooLarge(_))
    ));
}

#[test]
fn ids_and_devices_are_checked() {
    for ok in ["c1", "a.b-c_d", &"x".repeat(MAX_ID)] {
        validate_id("id", ok).unwrap();
    }
    for bad in [
        "",
        ".",
        "..",
        "../x",
        "a/b",
        "a b",
        &"x".repeat(MAX_ID + 1),
        "é",
    ] {
        assert!(validate_id("id", bad).is_err(), "{bad:?}");
    }
    for ok in ["vda", "vdz", "vdaa"] {
        validate_device(ok).unwrap();
    }
    for bad in ["vd", "sda", "vda1", "vdA", "vdabc", "../vda", "vd/"] {
        assert!(validate_device(bad).is_err(), "{bad:?}");
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut r = &bytes[..];
        while let Ok(Some(_)) = read_frame::<_, Request>(&mut r) {}
        let mut r = &bytes[..];
        while let Ok(Some(_)) = read_frame::<_, Response>(&mut r) {}
    }

    #[test]
    fn framed_json_of_any_shape_never_panics(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        let _ = read_frame::<_, Request>(&mut &frame[..]);
        let _ = read_frame::<_, Response>(&mut &frame[..]);
    }
}
