//! Kernel struct offsets from the running kernel's BTF.
//!
//! Rust eBPF has no CO-RE relocations, so the programs read `struct sock`
//! fields at offsets found here at start-up: one binary runs on any kernel
//! with BTF.

use std::{fs, path::Path};

use anyhow::{Context as _, Result, anyhow, bail};
use btf_rs::{Btf, Type};
use netstat_common::Offsets;

/// Where the kernel publishes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The kernel's BTF file at `path`, read once for both parsers: the
/// offsets here and aya's loader. Whole, because `btf_rs::Btf::from_file`
/// seeks its buffered reader once per type, 126,000 `lseek` calls and a
/// fifth of a second on this kernel.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    if !path.exists() {
        bail!(
            "kernel BTF not found at {}: bnetstat needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (Linux 5.8 or later)",
            path.display()
        );
    }
    fs::read(path).with_context(|| format!("cannot read kernel BTF {}", path.display()))
}

/// The offsets the eBPF programs need, from `bytes` of BTF read from `path`.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Offsets> {
    let btf =
        Btf::from_bytes(bytes).map_err(|e| anyhow!("cannot parse BTF {}: {e}", path.display()))?;
    let at = |ty: &str, field: &str| -> Result<u32> {
        field_offset(&btf, ty, field)
            .with_context(|| format!("kernel BTF has no {ty}.{field} that bnetstat can read"))
    };
    Ok(Offsets {
        skc_daddr: at("sock_common", "skc_daddr")?,
        skc_rcv_saddr: at("sock_common", "skc_rcv_saddr")?,
        skc_dport: at("sock_common", "skc_dport")?,
        skc_family: at("sock_common", "skc_family")?,
        skc_net: at("sock_common", "skc_net")?,
        skc_v6_daddr: at("sock_common", "skc_v6_daddr")?,
        skc_v6_rcv_saddr: at("sock_common", "skc_v6_rcv_saddr")?,
        sk_protocol: at("sock", "sk_protocol")?,
        inet_sport: at("inet_sock", "inet_sport")?,
        net_ns_inum: at("net", "ns.inum")?,
        task_tgid: at("task_struct", "tgid")?,
        task_comm: at("task_struct", "comm")?,
        file_inode: at("file", "f_inode")?,
        inode_mode: at("inode", "i_mode")?,
        inode_ino: at("inode", "i_ino")?,
        sk_err: at("sock", "sk_err")?,
        task_nsproxy: at("task_struct", "nsproxy")?,
        nsproxy_net_ns: at("nsproxy", "net_ns")?,
        task_pid: at("task_struct", "pid")?,
        task_real_parent: at("task_struct", "real_parent")?,
        task_mm: at("task_struct", "mm")?,
        mm_exe_file: at("mm_struct", "exe_file")?,
        mm_arg_start: at("mm_struct", "arg_start")?,
        mm_arg_end: at("mm_struct", "arg_end")?,
        file_path_mnt: at("file", "f_path.mnt")?,
        file_path_dentry: at("file", "f_path.dentry")?,
        dentry_parent: at("dentry", "d_parent")?,
        dentry_name: at("dentry", "d_name.name")?,
        vfsmount_root: at("vfsmount", "mnt_root")?,
        mount_mnt: at("mount", "mnt")?,
        mount_parent: at("mount", "mnt_parent")?,
        mount_mountpoint: at("mount", "mnt_mountpoint")?,
        skc_state: at("sock_common", "skc_state")?,
        sk_ack_backlog: at("sock", "sk_ack_backlog")?,
        sk_max_ack_backlog: at("sock", "sk_max_ack_backlog")?,
        sk_rmem_alloc: at("sock", "sk_backlog.rmem_alloc")?,
        udp_forward_deficit: at("udp_sock", "forward_deficit")?,
        sk_wmem_alloc: at("sock", "sk_wmem_alloc")?,
        tcp_rcv_nxt: at("tcp_sock", "rcv_nxt")?,
        tcp_copied_seq: at("tcp_sock", "copied_seq")?,
        tcp_write_seq: at("tcp_sock", "write_seq")?,
        tcp_snd_una: at("tcp_sock", "snd_una")?,
    })
}

/// Byte offset of `path` (dot-separated members, anonymous structs and
/// unions looked through) inside struct `ty`. Bitfields are refused: a probe
/// read cannot fetch them.
fn field_offset(btf: &Btf, ty: &str, path: &str) -> Result<u32> {
    let mut current = btf
        .resolve_types_by_name(ty)
        .map_err(|e| anyhow!("{e}"))?
        .into_iter()
        .find(|t| matches!(t, Type::Struct(s) if !s.members.is_empty()))
        .ok_or_else(|| anyhow!("no struct {ty}"))?;
    let mut bits = 0;
    for name in path.split('.') {
        let (offset, ty) =
            find_member(btf, &current, name)?.ok_or_else(|| anyhow!("no member {name}"))?;
        bits += offset;
        current = ty;
    }
    if bits % 8 != 0 {
        bail!("{path} is a bitfield");
    }
    Ok(bits / 8)
}

/// Finds member `name` of a struct or union, searching anonymous members
/// too; returns its bit offset and its type with typedefs and qualifiers
/// peeled.
fn find_member(btf: &Btf, parent: &Type, name: &str) -> Result<Option<(u32, Type)>> {
    let members = match parent {
        Type::Struct(s) | Type::Union(s) => &s.members,
        _ => bail!("not a struct"),
    };
    for member in members {
        let member_name = btf.resolve_name(member).unwrap_or_default();
        let ty = peel(
            btf,
            btf.resolve_chained_type(member)
                .map_err(|e| anyhow!("{e}"))?,
        )?;
        if member.bitfield_size().is_some_and(|s| s != 0) && member_name == name {
            bail!("{name} is a bitfield");
        }
        if member_name == name {
            return Ok(Some((member.bit_offset(), ty)));
        }
        if member_name.is_empty()
            && let Some((inner, found)) = find_member(btf, &ty, name).ok().flatten()
        {
            return Ok(Some((member.bit_offset() + inner, found)));
        }
    }
    Ok(None)
}

/// Follows typedefs and qualifiers down to the type they name.
fn peel(btf: &Btf, mut ty: Type) -> Result<Type> {
    loop {
        ty = match &ty {
            Type::Typedef(t) => btf.resolve_chained_type(t),
            Type::Const(t) | Type::Volatile(t) | Type::Restrict(t) => btf.resolve_chained_type(t),
            _ => return Ok(ty),
        }
        .map_err(|e| anyhow!("{e}"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_btf_says_what_is_missing() {
        let err = read(Path::new("/nonexistent/vmlinux"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
    }
}
