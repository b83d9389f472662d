//! What the running kernel offers, detected once at start-up, so that a missing feature is
//! reported in one line with the fallback used instead of failing later. (The reset
//! tracepoints report their own, `crate::local::witness`.)

use aya::{util::KernelVersion, Btf};

/// Where the kernel publishes its own BTF.
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelFeatures {
    /// TC programs attach through BPF links (TCX, Linux 6.6): nothing outlives the process.
    pub tcx: bool,
    /// The kernel's BTF is readable.
    pub btf: bool,
}

impl KernelFeatures {
    pub fn detect() -> Self {
        Self {
            tcx: KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0)),
            btf: Btf::from_sys_fs().is_ok(),
        }
    }

    /// One line naming what this kernel lacks and the fallback for each; `None` when nothing
    /// is missing.
    pub fn missing(&self) -> Option<String> {
        let mut missing = Vec::new();
        if !self.tcx {
            missing.push(
                "no TCX (before Linux 6.6): TC egress through a clsact qdisc and a netlink \
                 filter, removed on exit; after a SIGKILL `rstwatch detach` or the next start \
                 removes it"
                    .to_owned(),
            );
        }
        if !self.btf {
            missing.push(format!(
                "no kernel BTF ({VMLINUX_BTF}): the programs load without type information \
                 (untested; a kernel built with CONFIG_DEBUG_INFO_BTF is the supported setup)"
            ));
        }
        if missing.is_empty() {
            return None;
        }
        let release = KernelVersion::current()
            .map(|v| v.to_string())
            .unwrap_or_else(|_| "?".into());
        Some(format!("kernel {release}: {}", missing.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_kernel_has_nothing_to_report() {
        let all = KernelFeatures {
            tcx: true,
            btf: true,
        };
        assert_eq!(all.missing(), None);
    }

    #[test]
    fn each_missing_feature_is_named_with_its_fallback_on_one_line() {
        let old = KernelFeatures {
            tcx: false,
            btf: true,
        };
        let line = old.missing().unwrap();
        assert!(!line.contains('\n'));
        assert!(line.contains("no TCX") && line.contains("netlink filter"));
        assert!(!line.contains("no kernel BTF"));
    }
}
