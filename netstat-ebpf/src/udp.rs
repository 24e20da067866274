//! UDP sockets have no state machine to trace: their life is seen at the
//! cgroup hooks instead, which run in the caller's syscall, so the caller
//! is the owner. Attached at the cgroup v2 root, they see every process.

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_ktime_get_boot_ns, generated::bpf_get_socket_cookie},
    macros::{cgroup_sock, cgroup_sock_addr},
    programs::{SockAddrContext, SockContext},
};
use netstat_common::{AF_INET, AF_INET6, EVENT_UDP, UdpEvent, counter, udp_op};

use crate::{EVENTS, OFFSETS, count, current_owner, read};

const IPPROTO_UDP: u32 = 17;
/// What a cgroup program returns to let the syscall go on.
const ALLOW: i32 = 1;

// Each hook may read only its own family's address fields: the verifier
// refuses a post_bind4 program that touches src_ip6, and so on.

#[cgroup_sock(post_bind4)]
pub fn udp_bind4(ctx: SockContext) -> i32 {
    // SAFETY: the context's bpf_sock, valid for this run.
    let sk = unsafe { &*ctx.sock };
    if sk.protocol == IPPROTO_UDP {
        send(
            &ctx,
            udp_op::BIND,
            AF_INET,
            v4(sk.src_ip4),
            sk.src_port as u16,
        );
    }
    ALLOW
}

#[cgroup_sock(post_bind6)]
pub fn udp_bind6(ctx: SockContext) -> i32 {
    // SAFETY: the context's bpf_sock, valid for this run.
    let sk = unsafe { &*ctx.sock };
    if sk.protocol == IPPROTO_UDP {
        send(
            &ctx,
            udp_op::BIND,
            AF_INET6,
            v6(sk.src_ip6),
            sk.src_port as u16,
        );
    }
    ALLOW
}

// user_port holds the port in network order in its low 16 bits.

#[cgroup_sock_addr(connect4)]
pub fn udp_connect4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the context's bpf_sock_addr, valid for this run.
    let sa = unsafe { &*ctx.sock_addr };
    if sa.protocol == IPPROTO_UDP {
        let port = u16::from_be(sa.user_port as u16);
        send(&ctx, udp_op::CONNECT, AF_INET, v4(sa.user_ip4), port);
    }
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn udp_connect6(ctx: SockAddrContext) -> i32 {
    // SAFETY: the context's bpf_sock_addr, valid for this run.
    let sa = unsafe { &*ctx.sock_addr };
    if sa.protocol == IPPROTO_UDP {
        let port = u16::from_be(sa.user_port as u16);
        send(&ctx, udp_op::CONNECT, AF_INET6, v6(sa.user_ip6), port);
    }
    ALLOW
}

#[cgroup_sock(sock_release)]
pub fn udp_release(ctx: SockContext) -> i32 {
    // SAFETY: the context's bpf_sock, valid for this run.
    let sk = unsafe { &*ctx.sock };
    if sk.protocol == IPPROTO_UDP {
        send(&ctx, udp_op::CLOSE, sk.family as u16, [0; 16], 0);
    }
    ALLOW
}

fn v4(ip4: u32) -> [u8; 16] {
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&ip4.to_ne_bytes());
    addr
}

fn v6(ip6: [u32; 4]) -> [u8; 16] {
    let mut addr = [0u8; 16];
    for (i, word) in ip6.iter().enumerate() {
        addr[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
    }
    addr
}

fn send(ctx: &impl aya_ebpf::EbpfContext, op: u16, family: u16, addr: [u8; 16], port: u16) {
    let event = UdpEvent {
        kind: EVENT_UDP,
        netns: current_netns(),
        // SAFETY: helper calls with no arguments to check.
        ts_ns: unsafe { bpf_ktime_get_boot_ns() },
        // SAFETY: the context is a socket program's, which the helper takes.
        sock: unsafe { bpf_get_socket_cookie(ctx.as_ptr()) },
        addr,
        owner: current_owner(),
        port,
        family,
        op,
        _pad: 0,
    };
    match EVENTS.reserve::<UdpEvent>(0) {
        Some(mut entry) => {
            entry.write(event);
            entry.submit(0);
        }
        None => count(counter::RING_FULL),
    }
}

/// The caller's network namespace: these hooks run in its syscall, where
/// the socket lives in the caller's namespace.
fn current_netns() -> u32 {
    // SAFETY: OFFSETS is written by user space before load.
    let off = unsafe { core::ptr::read_volatile(&OFFSETS) };
    // SAFETY: a helper call with no arguments to check.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let ns = || -> Result<u32, i64> {
        let nsproxy = read::<u64>(task, off.task_nsproxy)? as *const u8;
        let net = read::<u64>(nsproxy, off.nsproxy_net_ns)? as *const u8;
        read(net, off.net_ns_inum)
    };
    ns().unwrap_or(0)
}
