//! Network namespaces other than bnetstat's own, for `--all-netns`: found
//! by name (`ip netns`, /run/netns) and through the processes that live in
//! them, and entered one thread at a time.

use std::{
    collections::BTreeMap,
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt as _},
    path::PathBuf,
    thread,
};

use anyhow::{Context as _, Result, anyhow};

/// A network namespace and a path that opens it.
pub struct NetNs {
    pub inode: u32,
    path: PathBuf,
}

/// Every network namespace but the caller's.
pub fn others() -> Result<Vec<NetNs>> {
    let own = crate::seed::own_netns()?;
    let mut found: BTreeMap<u32, PathBuf> = BTreeMap::new();
    let named = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path());
    let by_process = std::fs::read_dir("/proc")
        .context("listing /proc")?
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .map(|e| e.path().join("ns/net"));
    for path in named.chain(by_process) {
        // Processes come and go while we look: skip the ones already gone.
        if let Ok(meta) = std::fs::metadata(&path) {
            found.entry(meta.ino() as u32).or_insert(path);
        }
    }
    found.remove(&own);
    Ok(found
        .into_iter()
        .map(|(inode, path)| NetNs { inode, path })
        .collect())
}

/// Runs `f` on a thread that has entered `ns`; bnetstat's own threads stay
/// where they are.
pub fn inside<T: Send>(ns: &NetNs, f: impl FnOnce() -> T + Send) -> Result<T> {
    let file = File::open(&ns.path).with_context(|| format!("opening {}", ns.path.display()))?;
    thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns on a namespace fd we hold, for this thread only.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error())
                        .with_context(|| format!("entering {}", ns.path.display()));
                }
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow!("the thread in {} panicked", ns.path.display()))?
    })
}
