//! `moat check`: one line per backend, usable or not and why; `--json` for machines.

use std::io::Write;

use moat_backend::BackendKind;
use moat_backend::check::{Availability, HostFacts, Status};

use crate::args::CheckArgs;

/// Every backend's verdict on this host, in moat's order.
pub fn availabilities(kinds: &[BackendKind]) -> Vec<Availability> {
    let host = HostFacts::probe();
    let kvm = moat_host::kvm::probe();
    kinds
        .iter()
        .map(|k| match k {
            BackendKind::Ns => moat_backend::ns::check::availability(&host),
            BackendKind::Vm => moat_backend::vm::check::availability(&kvm),
            BackendKind::Trace => moat_backend::trace::check::availability(&host),
        })
        .collect()
}

/// The exit code: with backends named explicitly, 0 only if all are usable; without, 0 unless one
/// is unusable for a reason an operator can fix (see `moat check --help`).
pub fn exit_code(results: &[Availability], explicit: bool) -> i32 {
    let ok = |a: &Availability| match a.status {
        Status::Usable => true,
        Status::NotOnThisHost | Status::NotImplemented => !explicit,
        Status::Unusable => false,
    };
    if results.iter().all(ok) { 0 } else { 1 }
}

/// One line per backend, then its facts indented.
pub fn render_text(results: &[Availability]) -> String {
    let mut out = String::new();
    for a in results {
        out.push_str(&format!("{:<6} {}: {}\n", a.backend, a.status, a.reason));
        for f in &a.facts {
            let mark = if f.ok { "ok" } else { "--" };
            out.push_str(&format!("         {mark} {:<16} {}\n", f.name, f.value));
        }
    }
    out
}

/// Runs `moat check`; returns the exit code.
pub fn run(args: &CheckArgs) -> anyhow::Result<i32> {
    let explicit = !args.backend.is_empty();
    let mut kinds: Vec<BackendKind> = if explicit {
        args.backend.iter().map(|&b| b.into()).collect()
    } else {
        BackendKind::ALL.to_vec()
    };
    kinds.dedup();
    let results = availabilities(&kinds);
    let code = exit_code(&results, explicit);
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let v = serde_json::json!({ "backends": results, "ok": code == 0 });
        writeln!(stdout, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        stdout.write_all(render_text(&results).as_bytes())?;
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(backend: BackendKind, status: Status) -> Availability {
        Availability {
            backend,
            status,
            reason: "r".into(),
            facts: vec![],
        }
    }

    #[test]
    fn explicit_backends_must_be_usable() {
        let pvm = [
            a(BackendKind::Ns, Status::Usable),
            a(BackendKind::Vm, Status::NotOnThisHost),
            a(BackendKind::Trace, Status::NotImplemented),
        ];
        assert_eq!(exit_code(&pvm, false), 0);
        assert_eq!(exit_code(&pvm[1..2], true), 1);
        assert_eq!(exit_code(&pvm[..1], true), 0);
        let broken = [a(BackendKind::Ns, Status::Unusable)];
        assert_eq!(exit_code(&broken, false), 1);
    }

    #[test]
    fn text_names_each_backend() {
        let text = render_text(&availabilities(&BackendKind::ALL));
        for k in BackendKind::ALL {
            assert!(text.lines().any(|l| l.starts_with(k.as_str())), "{text}");
        }
    }
}
