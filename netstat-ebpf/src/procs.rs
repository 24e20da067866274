//! Processes: who runs what, captured in the kernel the moment it happens.
//!
//! `sched_process_exec` runs in the exec'ing task right after its new
//! image is installed, so its executable (`mm->exe_file`, what
//! `/proc/PID/exe` shows) and its command line (the new stack, just
//! written by the kernel) are read there: a process that binds a port and
//! exits a millisecond later is still named. Forks (of processes, not
//! threads) and exits let user space keep a table by pid without `/proc`.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns,
        generated::{bpf_probe_read_kernel_str, bpf_probe_read_user},
    },
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use netstat_common::{
    ARGS_BYTES, EVENT_EXEC, EVENT_PROC, EXE_COMPONENT, EXE_DEPTH, EXE_LIMIT, ExecEvent, Offsets,
    ProcEvent, counter, proc_op,
};

use crate::{EVENTS, OFFSETS, count, current_owner, read};

#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> i32 {
    let _ = try_exec(ctx.arg(0));
    0
}

fn try_exec(task: *const u8) -> Result<(), i64> {
    // SAFETY: user space writes OFFSETS before load.
    let off = unsafe { core::ptr::read_volatile(&OFFSETS) };
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count(counter::RING_FULL);
        return Ok(());
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is the reserved record, ours until submitted; every
    // field is written below before it is.
    unsafe {
        (*ev).kind = EVENT_EXEC;
        (*ev).pid = (bpf_get_current_pid_tgid() >> 32) as u32;
        (*ev).ts_ns = bpf_ktime_get_boot_ns();
        (*ev).owner = current_owner();
        let parent = read::<u64>(task, off.task_real_parent).unwrap_or(0) as *const u8;
        (*ev).ppid = read::<u32>(parent, off.task_tgid).unwrap_or(0);
        let mm = read::<u64>(task, off.task_mm).unwrap_or(0) as *const u8;
        (*ev).args_len = args(&off, mm, &mut (*ev).args);
        let (depth, cut) = exe_path(&off, mm, &mut (*ev).exe);
        (*ev).exe_depth = depth;
        (*ev).exe_cut = cut;
    }
    entry.submit(0);
    Ok(())
}

/// Copies the command line (`mm->arg_start..arg_end`) into `buf`; returns
/// how many bytes it holds.
fn args(off: &Offsets, mm: *const u8, buf: &mut [u8; ARGS_BYTES]) -> u32 {
    let (Ok(start), Ok(end)) = (
        read::<u64>(mm, off.mm_arg_start),
        read::<u64>(mm, off.mm_arg_end),
    ) else {
        return 0;
    };
    let mut len = end.saturating_sub(start);
    if len > ARGS_BYTES as u64 {
        len = ARGS_BYTES as u64;
    }
    if len == 0 {
        return 0;
    }
    // SAFETY: `len` is at most the buffer's size; the helper checks `start`.
    let ret =
        unsafe { bpf_probe_read_user(buf.as_mut_ptr().cast(), len as u32, start as *const _) };
    if ret == 0 { len as u32 } else { 0 }
}

/// Walks the executable's dentries up to its root, crossing mounts, and
/// writes each name NUL-terminated into `buf`, file name first. Returns
/// how many components it wrote and whether the path was cut.
fn exe_path(off: &Offsets, mm: *const u8, buf: &mut [u8; EXE_LIMIT + EXE_COMPONENT]) -> (u32, u32) {
    let file = read::<u64>(mm, off.mm_exe_file).unwrap_or(0) as *const u8;
    if file.is_null() {
        return (0, 0);
    }
    let (Ok(mnt), Ok(dentry)) = (
        read::<u64>(file, off.file_path_mnt),
        read::<u64>(file, off.file_path_dentry),
    ) else {
        return (0, 0);
    };
    let (mut mnt, mut dentry) = (mnt as *const u8, dentry as *const u8);
    // `struct mount` holds the `vfsmount` the path points at.
    let mut mount = mnt.wrapping_sub(off.mount_mnt as usize);
    let mut at: usize = 0;
    let mut depth = 0;
    for _ in 0..EXE_DEPTH {
        let Ok(root) = read::<u64>(mnt, off.vfsmount_root) else {
            return (depth, 1);
        };
        let Ok(parent) = read::<u64>(dentry, off.dentry_parent) else {
            return (depth, 1);
        };
        if dentry as u64 == root || dentry as u64 == parent {
            // The top of this mount: carry on from where it is mounted,
            // unless it is the root of them all.
            let Ok(up) = read::<u64>(mount, off.mount_parent) else {
                return (depth, 1);
            };
            if up == mount as u64 {
                return (depth, 0);
            }
            let Ok(point) = read::<u64>(mount, off.mount_mountpoint) else {
                return (depth, 1);
            };
            mount = up as *const u8;
            mnt = mount.wrapping_add(off.mount_mnt as usize);
            dentry = point as *const u8;
            continue;
        }
        let Ok(name) = read::<u64>(dentry, off.dentry_name) else {
            return (depth, 1);
        };
        if at >= EXE_LIMIT {
            return (depth, 1);
        }
        // SAFETY: `at` is below EXE_LIMIT, and the buffer has EXE_COMPONENT
        // bytes past that, so the copy stays inside it.
        let n = unsafe {
            bpf_probe_read_kernel_str(
                buf.as_mut_ptr().add(at & (EXE_LIMIT - 1)).cast(),
                EXE_COMPONENT as u32,
                name as *const _,
            )
        };
        if n <= 0 {
            return (depth, 1);
        }
        at += n as usize;
        depth += 1;
        dentry = parent as *const u8;
    }
    (depth, 1)
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    let (parent, child): (*const u8, *const u8) = (ctx.arg(0), ctx.arg(1));
    // SAFETY: user space writes OFFSETS before load.
    let off = unsafe { core::ptr::read_volatile(&OFFSETS) };
    let (Ok(pid), Ok(tgid), Ok(ppid)) = (
        read::<u32>(child, off.task_pid),
        read::<u32>(child, off.task_tgid),
        read::<u32>(parent, off.task_tgid),
    ) else {
        return 0;
    };
    // A new thread joins its process: nothing to tell.
    if pid == tgid {
        send(proc_op::FORK, pid, ppid);
    }
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(_ctx: BtfTracePointContext) -> i32 {
    let id = bpf_get_current_pid_tgid();
    // Only the main thread's exit ends the process as a pid names it.
    if id as u32 == (id >> 32) as u32 {
        send(proc_op::EXIT, id as u32, 0);
    }
    0
}

fn send(op: u32, pid: u32, ppid: u32) {
    let event = ProcEvent {
        kind: EVENT_PROC,
        op,
        // SAFETY: a helper call with no arguments to check.
        ts_ns: unsafe { bpf_ktime_get_boot_ns() },
        pid,
        ppid,
    };
    match EVENTS.reserve::<ProcEvent>(0) {
        Some(mut entry) => {
            entry.write(event);
            entry.submit(0);
        }
        None => count(counter::RING_FULL),
    }
}
