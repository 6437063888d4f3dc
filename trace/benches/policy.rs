//! Policy lookup, the supervisor's work on every trapped path argument: the rights of a path
//! under the built-in policy (a hit near the top, a miss that scans every rule) and under a
//! policy of 500 rules, and compiling the built-in policy (once per container start).
//!
//! `cargo bench -p moat-trace --bench policy`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write;

use criterion::{BenchmarkId, Criterion, black_box, criterion_group, criterion_main};
use moat_trace::policy::Policy;

/// `n` rules of the form `/srv/app<i>/data` with a default base.
fn big_policy(n: usize) -> Policy {
    let mut text = String::new();
    for i in 0..n {
        let _ = write!(
            text,
            "[[paths]]\npath = \"/srv/app{i}/data\"\nallow = [\"read\"]\n\n"
        );
    }
    Policy::parse(&text, "bench policy").unwrap()
}

fn lookup(c: &mut Criterion) {
    let builtin = Policy::builtin().unwrap();
    let big = big_policy(500);
    let mut g = c.benchmark_group("policy/rights");
    for (name, policy) in [("builtin", &builtin), ("500 rules", &big)] {
        for path in [
            "/etc/passwd",
            "/proc/kcore",
            "/srv/app499/data/file",
            "/no/rule/covers/this",
        ] {
            g.bench_with_input(BenchmarkId::new(name, path), path, |b, p| {
                b.iter(|| policy.rights(black_box(p.as_bytes())))
            });
        }
    }
    g.finish();
    c.bench_function("policy/compile builtin", |b| {
        b.iter(|| Policy::builtin().unwrap())
    });
}

criterion_group!(benches, lookup);
criterion_main!(benches);
