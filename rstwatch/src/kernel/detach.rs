//! `rstwatch detach`: removes the TC egress filter a killed rstwatch left behind (kernels
//! without TCX), and says what it removed or that there was nothing.

use crate::{
    cli::DetachArgs,
    error::UserError,
    kernel::{
        preflight,
        tc_egress::{self, LockState},
        TC_PROGRAM,
    },
};

pub fn run(args: &DetachArgs) -> anyhow::Result<()> {
    preflight::require_capabilities()?;
    for iface in &args.ifaces {
        let ifindex = preflight::interface_index(iface)?;
        // Held while removing, so a starting rstwatch cannot attach in between.
        let _lock = match tc_egress::lock(ifindex)? {
            LockState::Acquired(lock) => lock,
            LockState::HeldBy(pid) => {
                return Err(UserError(format!(
                    "a live rstwatch{} owns the egress filter on {iface}: stop it (SIGINT or \
                     SIGTERM) and it removes its filter itself",
                    pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
                ))
                .into())
            }
        };
        match tc_egress::remove_stale(iface, ifindex, TC_PROGRAM)? {
            Some(filter) => println!("rstwatch: removed the {filter} from {iface} egress"),
            None => println!("rstwatch: nothing of rstwatch's attached to {iface} egress"),
        }
    }
    Ok(())
}
