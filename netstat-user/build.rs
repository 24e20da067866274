use aya_build::{Package, Toolchain};

/// Builds the eBPF object into OUT_DIR so the binary embeds it.
fn main() -> aya_build::Result<()> {
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../netstat-ebpf");
    aya_build::build_ebpf(
        [Package {
            name: "netstat-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
