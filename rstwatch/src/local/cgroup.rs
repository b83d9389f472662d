//! A socket's cgroup id to the cgroup's path and, where the path names one, a container id.
//!
//! On cgroup v2 a cgroup's id is the inode number of its directory, so the path is found by
//! walking the hierarchy; the walk is cached and repeated only for an id not seen yet, at most
//! once per `RESCAN_EVERY`.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// How often an unknown id may trigger a walk of the hierarchy.
const RESCAN_EVERY: Duration = Duration::from_millis(200);
/// Directories visited in one walk at most: a host with more cgroups gets partial paths.
const MAX_CGROUPS: usize = 65536;

pub struct CgroupPaths {
    root: Option<PathBuf>,
    paths: HashMap<u64, String>,
    last_scan: Option<Instant>,
}

impl CgroupPaths {
    /// Paths under the cgroup v2 mount of this mount namespace; without one (`ip netns exec`
    /// gives its command a /sys without cgroups) only the ids are known.
    pub fn new() -> Self {
        Self {
            root: cgroup2_mount("/proc/self/mountinfo").map(PathBuf::from),
            paths: HashMap::new(),
            last_scan: None,
        }
    }

    /// The path of cgroup `id` relative to the hierarchy's root (`/` for the root itself).
    pub fn path(&mut self, id: u64) -> Option<String> {
        if let Some(path) = self.paths.get(&id) {
            return Some(path.clone());
        }
        let root = self.root.clone()?;
        if self
            .last_scan
            .is_some_and(|last| last.elapsed() < RESCAN_EVERY)
        {
            return None;
        }
        self.last_scan = Some(Instant::now());
        self.paths.clear();
        walk(&root, &root, &mut self.paths);
        self.paths.get(&id).cloned()
    }
}

impl Default for CgroupPaths {
    fn default() -> Self {
        Self::new()
    }
}

fn walk(root: &Path, dir: &Path, paths: &mut HashMap<u64, String>) {
    if paths.len() >= MAX_CGROUPS {
        return;
    }
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    let relative = dir
        .strip_prefix(root)
        .map(|rel| rel.to_string_lossy().into_owned())
        .unwrap_or_default();
    paths.insert(
        meta.ino(),
        if relative.is_empty() {
            "/".to_owned()
        } else {
            relative
        },
    );
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            walk(root, &entry.path(), paths);
        }
    }
}

/// The cgroup v2 mount point in a mount table (`/proc/PID/mountinfo`).
fn cgroup2_mount(mountinfo: &str) -> Option<String> {
    let mounts = std::fs::read_to_string(mountinfo).ok()?;
    mounts.lines().find_map(|line| {
        // Fields: id parent major:minor root mount-point options... - fstype source options.
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| mount_point.to_owned())
    })
}

/// The container id a cgroup path carries: a 64-hex-digit component, bare (`/docker/<id>`,
/// cgroupfs drivers) or in a systemd scope (`docker-<id>.scope`, `cri-containerd-<id>.scope`).
pub fn container_id(path: &str) -> Option<String> {
    path.rsplit('/').find_map(|component| {
        let stem = component.strip_suffix(".scope").unwrap_or(component);
        let id = stem.rsplit(['-', ':']).next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081";

    #[test]
    fn container_ids_are_taken_from_scopes_and_bare_components() {
        let scope = format!("system.slice/docker-{ID}.scope");
        assert_eq!(container_id(&scope).as_deref(), Some(ID));
        let kubepods = format!("kubepods.slice/kubepods-pod1.slice/cri-containerd-{ID}.scope");
        assert_eq!(container_id(&kubepods).as_deref(), Some(ID));
        assert_eq!(container_id(&format!("docker/{ID}")).as_deref(), Some(ID));
        assert_eq!(container_id("system.slice/nginx.service"), None);
        assert_eq!(container_id("/"), None);
    }

    #[test]
    fn this_processs_own_cgroup_is_found_by_its_id() {
        let mut paths = CgroupPaths::new();
        let root = paths.root.clone().expect("the host mounts cgroup v2");
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let relative = own
            .lines()
            .find_map(|line| line.strip_prefix("0::/"))
            .unwrap()
            .to_owned();
        let id = std::fs::metadata(root.join(&relative)).unwrap().ino();
        let expected = if relative.is_empty() {
            "/".into()
        } else {
            relative
        };
        assert_eq!(paths.path(id), Some(expected));
    }
}
