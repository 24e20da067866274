//! What a user sees when bnetstat cannot run: one clear line and a
//! non-zero exit, never a panic.

use std::process::{Command, Output};

use bnetstat_tests::{TempDir, bnetstat_bin};

/// Running a just-copied executable through setpriv.
trait OutputRetrying {
    /// `output()`, again while setpriv reports the copy "busy": another
    /// test thread may have forked while the copy was open for writing.
    fn output_retrying(&mut self) -> Output;
}

impl OutputRetrying for Command {
    fn output_retrying(&mut self) -> Output {
        for _ in 0..100 {
            let out = self.output().expect("run setpriv (util-linux)");
            if !String::from_utf8_lossy(&out.stderr).contains("Text file busy") {
                return out;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("{self:?} stayed busy")
    }
}

fn assert_one_line_error(out: &Output, code: i32, mention: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status; stderr: {stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(mention), "{mention:?} in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn without_privileges_it_says_it_needs_root() {
    // A copy outside the build tree, which an unprivileged user may not reach.
    let dir = TempDir::new();
    let bin = dir.exe(bnetstat_bin(), "bnetstat");
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&bin)
        .args(["trace", "--duration", "1"])
        .output_retrying();
    assert_one_line_error(&out, 1, "needs root");
}

#[test]
fn without_kernel_btf_it_says_what_is_missing() {
    let out = Command::new(bnetstat_bin())
        .args(["trace", "--btf", "/nonexistent/vmlinux", "--duration", "1"])
        .output()
        .expect("run bnetstat");
    assert_one_line_error(&out, 1, "CONFIG_DEBUG_INFO_BTF");
}

#[test]
fn with_unusable_btf_it_says_so() {
    let dir = TempDir::new();
    let junk = dir.path().join("vmlinux");
    std::fs::write(&junk, b"not BTF at all").expect("write");
    let out = Command::new(bnetstat_bin())
        .args(["trace", "--duration", "1", "--btf"])
        .arg(&junk)
        .output()
        .expect("run bnetstat");
    assert_one_line_error(&out, 1, "BTF");
}

#[test]
fn bad_arguments_are_usage_errors() {
    let out = Command::new(bnetstat_bin())
        .args(["trace", "--port", "notaport"])
        .output()
        .expect("run bnetstat");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("notaport") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn cap_bpf_and_cap_perfmon_are_enough_without_root() {
    let dir = TempDir::new();
    let bin = dir.exe(bnetstat_bin(), "bnetstat");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args([
            "--inh-caps=-all,+bpf,+perfmon",
            "--ambient-caps=+bpf,+perfmon",
        ])
        .arg(&bin)
        .args(["trace", "--duration", "0.2"])
        .output_retrying();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.starts_with("Tracing"), "{stderr}");
}

#[test]
fn a_bad_interval_is_a_usage_error() {
    for interval in ["0", "-1", "soon"] {
        let out = Command::new(bnetstat_bin())
            .args(["-i", interval])
            .output()
            .expect("run bnetstat");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{interval}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn a_live_table_without_cap_net_admin_says_so() {
    let dir = TempDir::new();
    let bin = dir.exe(bnetstat_bin(), "bnetstat");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args([
            "--inh-caps=-all,+bpf,+perfmon",
            "--ambient-caps=+bpf,+perfmon",
        ])
        .arg(&bin)
        .args(["-tan", "1"])
        .output_retrying();
    assert_one_line_error(&out, 1, "CAP_NET_ADMIN");
}
