//! The agent protocol's framing, per message: encoding and decoding a `create` request carrying
//! containerd's default spec (the largest message a pod start sends), and a `ping` (the smallest).
//! Every container start pays for a handful of these on each side of the vsock.
//!
//! `cargo bench -p moat-agent-proto --bench frames`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::Cursor;

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use moat_agent_proto::{CreateContainer, Request, Rootfs, StdioPlan, read_frame, write_frame};

fn create() -> Request {
    let spec = moat_sandbox::defaults::spec("rootfs");
    Request::Create(CreateContainer {
        id: "bench-container".into(),
        spec: serde_json::to_value(&spec).unwrap(),
        rootfs: Rootfs::Block {
            device: "vdb".into(),
            fstype: "erofs".into(),
        },
        stdio: StdioPlan {
            stdin: false,
            stdout: true,
            stderr: true,
        },
    })
}

fn frames(c: &mut Criterion) {
    for (name, msg) in [("create", create()), ("ping", Request::Ping)] {
        let mut encoded = Vec::new();
        write_frame(&mut encoded, &msg).unwrap();
        let mut g = c.benchmark_group(format!("frame/{name}"));
        g.throughput(Throughput::Bytes(encoded.len() as u64));
        g.bench_function("encode", |b| {
            let mut buf = Vec::with_capacity(encoded.len());
            b.iter(|| {
                buf.clear();
                write_frame(&mut buf, black_box(&msg)).unwrap();
            })
        });
        g.bench_function("decode", |b| {
            b.iter(|| {
                let got: Option<Request> =
                    read_frame(&mut Cursor::new(black_box(&encoded))).unwrap();
                got
            })
        });
        g.finish();
    }
}

criterion_group!(benches, frames);
criterion_main!(benches);
