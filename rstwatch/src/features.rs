//! What the running kernel offers, detected once at start-up, so that a missing feature is
//! reported in one line with the fallback used instead of failing later.

use aya::{util::KernelVersion, Btf};

/// Where the kernel publishes its own BTF.
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelFeatures {
    /// TC programs attach through BPF links (TCX, Linux 6.6): nothing outlives the process.
    pub tcx: bool,
    /// The kernel's BTF is readable.
    pub btf: bool,
    /// `tcp_send_reset` carries `enum sk_rst_reason` (Linux 6.10).
    pub reset_reason: bool,
}

impl KernelFeatures {
    pub fn detect() -> Self {
        let btf = Btf::from_sys_fs().ok();
        // The tracepoint's `reason` field has the type of this enum, introduced with it.
        let reset_reason = btf.as_ref().is_some_and(|btf| {
            btf.id_by_type_name_kind("sk_rst_reason", aya_obj::btf::BtfKind::Enum)
                .is_ok()
        });
        Self {
            tcx: KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0)),
            btf: btf.is_some(),
            reset_reason,
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
        if !self.reset_reason {
            missing.push(
                "no reset-reason tracepoint (tcp_send_reset with sk_rst_reason, Linux 6.10): \
                 resets are explained from packets alone"
                    .to_owned(),
            );
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
            reset_reason: true,
        };
        assert_eq!(all.missing(), None);
    }

    #[test]
    fn each_missing_feature_is_named_with_its_fallback_on_one_line() {
        let old = KernelFeatures {
            tcx: false,
            btf: true,
            reset_reason: false,
        };
        let line = old.missing().unwrap();
        assert!(!line.contains('\n'));
        assert!(line.contains("no TCX") && line.contains("netlink filter"));
        assert!(line.contains("no reset-reason tracepoint"));
        assert!(!line.contains("no kernel BTF"));
    }
}
