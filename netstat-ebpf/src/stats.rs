//! TCP events beyond state changes: retransmits and resets for `-s`, and
//! the bytes each socket's owners send and receive for `life`.
//!
//! These tracepoints fire in whatever context the kernel acts in (a timer,
//! softirq), so the owner comes from the per-socket map, never `current`.

use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering, atomic_xadd},
};

use aya_ebpf::{
    helpers::{bpf_ktime_get_boot_ns, generated::bpf_get_socket_cookie},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use netstat_common::{EVENT_TCP, Owner, TcpEvent, counter, tcp_op};

use crate::{EVENTS, IPPROTO_TCP, OFFSETS, SOCKS, count, read};

/// `recvmsg` flag: the data stays queued, so it is not received yet.
const MSG_PEEK: i32 = 2;

#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: BtfTracePointContext) -> i32 {
    send(ctx.arg(0), tcp_op::RETRANSMIT);
    0
}

#[btf_tracepoint(function = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: BtfTracePointContext) -> i32 {
    send(ctx.arg(0), tcp_op::SEND_RESET);
    0
}

#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: BtfTracePointContext) -> i32 {
    send(ctx.arg(0), tcp_op::RECEIVE_RESET);
    0
}

fn send(sk: *const u8, op: u32) {
    let (sock, owner, family) = if sk.is_null() {
        (0, Owner::default(), 0)
    } else {
        // SAFETY: `sk` is the tracepoint's typed, non-NULL `struct sock *`.
        let sock = unsafe { bpf_get_socket_cookie(sk as *mut c_void) };
        // SAFETY: a map value, copied out at once.
        let owner = unsafe { SOCKS.get(sock) }.map(|i| i.owner);
        let off = unsafe { core::ptr::read_volatile(&OFFSETS) };
        let family = read::<u16>(sk, off.skc_family).unwrap_or(0);
        (sock, owner.unwrap_or_default(), family)
    };
    let event = TcpEvent {
        kind: EVENT_TCP,
        op,
        ts_ns: unsafe { bpf_ktime_get_boot_ns() },
        sock,
        owner,
        family,
        _pad: [0; 3],
    };
    match EVENTS.reserve::<TcpEvent>(0) {
        Some(mut entry) => {
            entry.write(event);
            entry.submit(0);
        }
        None => count(counter::RING_FULL),
    }
}

#[btf_tracepoint(function = "sock_send_length")]
pub fn sock_send_length(ctx: BtfTracePointContext) -> i32 {
    let ret: i32 = ctx.arg(1);
    if ret > 0 {
        add_bytes(ctx.arg(0), ret as u64, |i| &raw mut i.bytes_sent);
    }
    0
}

#[btf_tracepoint(function = "sock_recv_length")]
pub fn sock_recv_length(ctx: BtfTracePointContext) -> i32 {
    let (ret, flags): (i32, i32) = (ctx.arg(1), ctx.arg(2));
    if ret > 0 && flags & MSG_PEEK == 0 {
        add_bytes(ctx.arg(0), ret as u64, |i| &raw mut i.bytes_received);
    }
    0
}

/// Adds `n` to one byte counter of `sk`'s entry, if bnetstat follows it.
fn add_bytes(sk: *const u8, n: u64, field: impl FnOnce(&mut netstat_common::SockInfo) -> *mut u64) {
    let off = unsafe { core::ptr::read_volatile(&OFFSETS) };
    // Every socket family passes here; only TCP has an entry to add to.
    if sk.is_null() || read::<u16>(sk, off.sk_protocol) != Ok(IPPROTO_TCP) {
        return;
    }
    // SAFETY: `sk` is the tracepoint's typed, non-NULL `struct sock *`.
    let sock = unsafe { bpf_get_socket_cookie(sk as *mut c_void) };
    if let Some(info) = SOCKS.get_ptr_mut(sock) {
        // SAFETY: a map value, valid for this run; threads sharing a socket
        // add from several CPUs at once, hence the atomic add.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(field(&mut *info), n) };
    }
}
