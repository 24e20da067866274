//! Every TCP and UDP socket's queues, walked on demand (`iter/tcp`,
//! `iter/udp`): no event tells when a queue grows or drains, so a table
//! redisplayed from the live model reads them afresh here, as `sock_diag`
//! computes them, without a dump of the sockets themselves.
//!
//! aya-ebpf has no macro for iterators: the section names the program type.

use core::ffi::c_void;

use aya_ebpf::helpers::generated::{bpf_get_socket_cookie, bpf_seq_write, bpf_skc_to_tcp_sock};
use netstat_common::{SocketQueues, tcp_state};

use crate::{field, offset};

/// `struct bpf_iter__tcp { meta; sk_common; uid; }`, and `bpf_iter__udp`
/// likewise with its `udp_sock`: each member 8 bytes apart; the socket is
/// NULL on the last call.
fn iterated(ctx: *const u64) -> (*mut c_void, *const u8) {
    // SAFETY: the iterator context's first two members, as above.
    unsafe { (*ctx as *mut c_void, *ctx.add(1) as *const u8) }
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/tcp")]
pub fn tcp_queues(ctx: *mut c_void) -> i32 {
    let (meta, sk) = iterated(ctx as *const u64);
    if sk.is_null() {
        return 0;
    }
    // SAFETY: `sk` is the iterator's typed `struct sock_common *`; the
    // helper returns NULL unless it is a full TCP socket, so a TIME_WAIT
    // or request socket has empty queues, as `sock_diag` says.
    let tp = unsafe { bpf_skc_to_tcp_sock(sk as *mut c_void) } as *const u8;
    let (recv_q, send_q) = if tp.is_null() {
        (0, 0)
    } else if field::<u8>(sk, offset!(skc_state)) == tcp_state::LISTEN {
        // The `struct sock` opens the `struct tcp_sock`.
        (
            field(tp, offset!(sk_ack_backlog)),
            field(tp, offset!(sk_max_ack_backlog)),
        )
    } else {
        let unread =
            field::<u32>(tp, offset!(tcp_rcv_nxt)).wrapping_sub(field(tp, offset!(tcp_copied_seq)));
        (
            (unread as i32).max(0) as u32,
            field::<u32>(tp, offset!(tcp_write_seq)).wrapping_sub(field(tp, offset!(tcp_snd_una))),
        )
    };
    write(meta, sk, recv_q, send_q);
    0
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/udp")]
pub fn udp_queues(ctx: *mut c_void) -> i32 {
    let (meta, sk) = iterated(ctx as *const u64);
    if sk.is_null() {
        return 0;
    }
    // The `struct sock` opens the `struct udp_sock`.
    let recv_q = field::<i32>(sk, offset!(sk_rmem_alloc))
        .wrapping_sub(field(sk, offset!(udp_forward_deficit)));
    let send_q = field::<u32>(sk, offset!(sk_wmem_alloc)).saturating_sub(1);
    write(meta, sk, recv_q.max(0) as u32, send_q);
    0
}

fn write(meta: *mut c_void, sk: *const u8, recv_q: u32, send_q: u32) {
    let record = SocketQueues {
        // SAFETY: `sk` is the iterator's typed socket pointer.
        sock: unsafe { bpf_get_socket_cookie(sk as *mut c_void) },
        recv_q,
        send_q,
    };
    // SAFETY: meta->seq is the iterator's seq_file; the record lives on our stack.
    unsafe {
        bpf_seq_write(
            (*(meta as *const *mut c_void)).cast(),
            (&raw const record).cast(),
            size_of::<SocketQueues>() as u32,
        );
    }
}
