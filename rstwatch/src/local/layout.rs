//! Struct offsets and the reset-reason names, from the running kernel's BTF: eBPF programs
//! written in Rust get no CO-RE relocations, so userspace looks every field up by name at
//! start-up and hands the offsets to the programs.

use std::collections::HashMap;

use btf_rs::{Btf, Struct, Type};
use rstwatch_common::local::SocketLayout;

/// Where the kernel publishes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The prefix of every `enum sk_rst_reason` member, left out of the names reported.
const REASON_PREFIX: &str = "SK_RST_REASON_";

/// Reads the socket layout from `btf`; an error names the first field not found.
pub fn socket_layout(btf: &Btf) -> Result<SocketLayout, String> {
    let sock = |path: &[&str]| offset(btf, "sock", path);
    let skb = |path: &[&str]| offset(btf, "sk_buff", path);
    let required = |name: &str, found: Option<u32>| found.ok_or(format!("no {name} in BTF"));
    let mut layout = SocketLayout {
        family: required("sock.skc_family", sock(&["__sk_common", "skc_family"]))?,
        state: required("sock.skc_state", sock(&["__sk_common", "skc_state"]))?,
        daddr: required("sock.skc_daddr", sock(&["__sk_common", "skc_daddr"]))?,
        rcv_saddr: required(
            "sock.skc_rcv_saddr",
            sock(&["__sk_common", "skc_rcv_saddr"]),
        )?,
        dport: required("sock.skc_dport", sock(&["__sk_common", "skc_dport"]))?,
        num: required("sock.skc_num", sock(&["__sk_common", "skc_num"]))?,
        sport: required(
            "inet_sock.inet_sport",
            offset(btf, "inet_sock", &["inet_sport"]),
        )?,
        skb_head: required("sk_buff.head", skb(&["head"]))?,
        skb_network_header: required("sk_buff.network_header", skb(&["network_header"]))?,
        skb_transport_header: required("sk_buff.transport_header", skb(&["transport_header"]))?,
        ..SocketLayout::default()
    };
    // Kernels built without IPv6 have no IPv6 addresses in `sock_common`.
    if let (Some(v6_daddr), Some(v6_rcv_saddr)) = (
        sock(&["__sk_common", "skc_v6_daddr"]),
        sock(&["__sk_common", "skc_v6_rcv_saddr"]),
    ) {
        layout.v6_daddr = v6_daddr;
        layout.v6_rcv_saddr = v6_rcv_saddr;
        layout.v6_present = 1;
    }
    // The socket's cgroup: `sk->sk_cgrp_data.cgroup->kn->id` (CONFIG_SOCK_CGROUP_DATA).
    if let (Some(cgroup_ptr), Some(cgroup_kn), Some(kn_id)) = (
        sock(&["sk_cgrp_data", "cgroup"]),
        offset(btf, "cgroup", &["kn"]),
        offset(btf, "kernfs_node", &["id"]),
    ) {
        layout.cgroup_ptr = cgroup_ptr;
        layout.cgroup_kn = cgroup_kn;
        layout.kn_id = kn_id;
        layout.cgroup_present = 1;
    }
    Ok(layout)
}

/// `enum sk_rst_reason` by value, names without their `SK_RST_REASON_` prefix; empty on
/// kernels before it (Linux 6.10).
pub fn reset_reasons(btf: &Btf) -> HashMap<u32, String> {
    let mut reasons = HashMap::new();
    for ty in btf
        .resolve_types_by_name("sk_rst_reason")
        .unwrap_or_default()
    {
        if let Type::Enum(reason_enum) = ty {
            for member in &reason_enum.members {
                if let Ok(name) = btf.resolve_name(member) {
                    let name = name.strip_prefix(REASON_PREFIX).unwrap_or(&name);
                    reasons.insert(member.val(), name.to_owned());
                }
            }
        }
    }
    reasons
}

/// Whether the kernel has a BTF-typed tracepoint of this name.
pub fn has_tracepoint(btf: &Btf, name: &str) -> bool {
    btf.resolve_types_by_name(&format!("btf_trace_{name}"))
        .is_ok_and(|types| !types.is_empty())
}

/// The byte offset of the field at `path` in `struct struct_name`, through nested structs and
/// anonymous structs and unions; `None` when any step is missing or is a bit field.
fn offset(btf: &Btf, struct_name: &str, path: &[&str]) -> Option<u32> {
    let mut current = find_struct(btf, struct_name)?;
    let mut bits = 0;
    for (i, name) in path.iter().enumerate() {
        let (member_bits, ty) = member(btf, &current, name)?;
        bits += member_bits;
        if i + 1 < path.len() {
            current = match ty {
                Type::Struct(inner) | Type::Union(inner) => inner,
                _ => return None,
            };
        }
    }
    (bits % 8 == 0).then_some(bits / 8)
}

fn find_struct(btf: &Btf, name: &str) -> Option<Struct> {
    btf.resolve_types_by_name(name)
        .ok()?
        .into_iter()
        .find_map(|ty| match ty {
            Type::Struct(found) if !found.members.is_empty() => Some(found),
            _ => None,
        })
}

/// The bit offset and type (qualifiers and typedefs resolved) of `name` in `within`, searching
/// anonymous members too.
fn member(btf: &Btf, within: &Struct, name: &str) -> Option<(u32, Type)> {
    for field in &within.members {
        if field.bitfield_size().is_some_and(|size| size != 0) {
            continue;
        }
        let field_name = btf.resolve_name(field).unwrap_or_default();
        let ty = strip_qualifiers(btf, btf.resolve_chained_type(field).ok()?);
        if field_name == name {
            return Some((field.bit_offset(), ty));
        }
        if field_name.is_empty() {
            if let Type::Struct(inner) | Type::Union(inner) = &ty {
                if let Some((inner_bits, found)) = member(btf, inner, name) {
                    return Some((field.bit_offset() + inner_bits, found));
                }
            }
        }
    }
    None
}

fn strip_qualifiers(btf: &Btf, mut ty: Type) -> Type {
    loop {
        let next = match &ty {
            Type::Typedef(t) => btf.resolve_chained_type(t),
            Type::Const(t) | Type::Volatile(t) | Type::Restrict(t) => btf.resolve_chained_type(t),
            Type::TypeTag(t) => btf.resolve_chained_type(t),
            _ => return ty,
        };
        match next {
            Ok(next) => ty = next,
            Err(_) => return ty,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the host's own BTF: the offsets must be those `pahole`/bpftool show, which the
    /// lab tests check end to end; here the layout must at least be complete and plausible.
    #[test]
    fn the_running_kernels_socket_layout_is_complete() {
        let btf = Btf::from_file(VMLINUX_BTF).expect("this kernel publishes its BTF");
        let layout = socket_layout(&btf).unwrap();
        // `sock_common` starts with the address pair, then the port pair.
        assert_eq!(layout.daddr, 0);
        assert_eq!(layout.rcv_saddr, 4);
        assert_eq!(layout.dport, 12);
        assert_eq!(layout.num, 14);
        assert!(layout.family > layout.num && layout.state > layout.family);
        assert!(layout.sport > layout.cgroup_ptr, "inet_sock extends sock");
        assert_eq!(layout.cgroup_present, 1);
        assert_eq!(layout.v6_present, 1);
        assert!(layout.skb_network_header != layout.skb_transport_header);
    }

    #[test]
    fn reset_reasons_come_by_name_from_the_kernel() {
        let btf = Btf::from_file(VMLINUX_BTF).unwrap();
        let reasons = reset_reasons(&btf);
        let named = |name: &str| reasons.values().any(|reason| reason == name);
        assert!(named("NO_SOCKET") && named("TCP_ABORT_ON_CLOSE") && named("TCP_STATE"));
        assert!(has_tracepoint(&btf, "tcp_send_reset"));
        assert!(has_tracepoint(&btf, "tcp_receive_reset"));
        assert!(!has_tracepoint(&btf, "no_such_tracepoint"));
    }
}
