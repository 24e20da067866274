//! cgroup v2 ids (what the kernel side captures) to paths, and container
//! ids from paths.
//!
//! A cgroup's id is its directory's inode number in the cgroup v2 mount,
//! so the tree is walked once and again only when an id is not found (a
//! cgroup made since), at most once a second. A cgroup removed before its
//! record is written has no path.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Least time between two walks of the tree.
const REWALK: Duration = Duration::from_secs(1);
/// How deep the walk goes: deeper cgroups are unnamed.
const DEPTH: usize = 16;

/// cgroup paths by id, relative to the cgroup v2 root (`/` is the root).
pub struct CgroupNames {
    root: Option<PathBuf>,
    paths: HashMap<u64, String>,
    walked: Option<Instant>,
}

impl CgroupNames {
    /// Names under `root`, the cgroup v2 mount; `None` names nothing.
    pub fn new(root: Option<PathBuf>) -> CgroupNames {
        CgroupNames {
            root,
            paths: HashMap::new(),
            walked: None,
        }
    }

    /// The path of cgroup `id`; 0 is unknown.
    pub fn path(&mut self, id: u64) -> Option<String> {
        if id == 0 {
            return None;
        }
        if let Some(p) = self.paths.get(&id) {
            return Some(p.clone());
        }
        let root = self.root.as_ref()?;
        if self.walked.is_some_and(|t| t.elapsed() < REWALK) {
            return None;
        }
        self.walked = Some(Instant::now());
        self.paths.clear();
        walk(root, root, 0, &mut self.paths);
        self.paths.get(&id).cloned()
    }
}

fn walk(root: &Path, dir: &Path, depth: usize, paths: &mut HashMap<u64, String>) {
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    let rel = dir.strip_prefix(root).unwrap_or(dir);
    paths.insert(meta.ino(), format!("/{}", rel.to_string_lossy()));
    if depth >= DEPTH {
        return;
    }
    // Removed while we look: what is gone has no name.
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(root, &entry.path(), depth + 1, paths);
        }
    }
}

/// The container id in a cgroup path, as Docker, containerd, CRI-O and
/// Podman name their cgroups (`/docker/<id>`, `docker-<id>.scope`,
/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope`):
/// the innermost component holding 64 hex digits.
pub fn container_id(path: &str) -> Option<&str> {
    path.rsplit('/').find_map(|part| {
        let part = part.strip_suffix(".scope").unwrap_or(part);
        let id = part.rsplit(['-', ':']).next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e9c0b1a2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f";

    #[test]
    fn container_ids_come_from_the_usual_cgroup_names() {
        for path in [
            format!("/docker/{ID}"),
            format!("/system.slice/docker-{ID}.scope"),
            format!("/kubepods.slice/kubepods-pod1.slice/cri-containerd-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
            format!("/kubepods/burstable/pod1/crio-{ID}"),
        ] {
            assert_eq!(container_id(&path), Some(ID), "{path}");
        }
        assert_eq!(
            container_id("/user.slice/user-0.slice/session-1.scope"),
            None
        );
        assert_eq!(container_id("/"), None);
        assert_eq!(
            container_id(&format!("/docker/{}", &ID[1..])),
            None,
            "63 digits"
        );
    }

    #[test]
    fn ids_resolve_to_paths_under_the_root_and_unknown_ones_to_nothing() {
        let dir = std::env::temp_dir().join(format!("bnetstat-cgroups-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a/b")).expect("mkdir");
        let ino = |p: &Path| std::fs::metadata(p).expect("stat").ino();
        let mut names = CgroupNames::new(Some(dir.clone()));
        assert_eq!(names.path(ino(&dir.join("a/b"))).as_deref(), Some("/a/b"));
        assert_eq!(names.path(ino(&dir)).as_deref(), Some("/"));
        assert_eq!(names.path(0), None);
        assert_eq!(CgroupNames::new(None).path(ino(&dir)), None);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
