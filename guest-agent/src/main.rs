//! `moat-agent`, the guest's PID 1: see the library for what it does.

use std::process::ExitCode;

use moat_agent::init::Error;
use moat_agent::pid1;
use moat_agent::services::Agent;

fn main() -> ExitCode {
    match pid1::run(&mut Agent::new()) {
        Ok(never) => match never {},
        Err(e @ Error::NotPid1(_)) => {
            eprintln!("moat-agent: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            let refused = pid1::fail(&e);
            eprintln!("moat-agent: cannot reset the VM: {refused}");
            ExitCode::FAILURE
        }
    }
}
