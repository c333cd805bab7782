//! Instance-wide resource groups: one parent cgroup per instance, under which the engine puts
//! every container of the instance (`HostConfig.CgroupParent`).
//!
//! Owns finding the cgroup hierarchies (from `/proc/self/mountinfo`), creating
//! `/<prefix>/<instance>` in them, writing the instance's limits (v1: `cpu.cfs_quota_us` /
//! `cpu.cfs_period_us`, `memory.limit_in_bytes` (+ `memory.memsw.limit_in_bytes`),
//! `pids.max`; v2: `cpu.max`, `memory.max`, `memory.swap.max`, `pids.max`) and removing the
//! groups again. Only usable when the engine uses the cgroupfs driver, runs on this host and
//! sees the same hierarchies as we do (a hierarchy mounted with a root other than `/`, as inside
//! a container, is refused).
//!
//! It only ever creates and removes directories under `/<prefix>/`, and removes them with
//! `rmdir` (which the kernel refuses while a group holds processes).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// CFS period used for the CPU quota (100 ms, the kernel's default).
const CFS_PERIOD_US: u64 = 100_000;

/// Limits of one instance's group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct GroupLimits {
    pub cpus: f64,
    pub memory_bytes: u64,
    pub pids: i64,
}

/// The cgroup hierarchies of this host.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CgroupTree {
    /// cgroup v1: one hierarchy per controller (or a few controllers per hierarchy).
    V1 {
        cpu: PathBuf,
        memory: PathBuf,
        pids: PathBuf,
        /// Every cgroup hierarchy mounted with root `/` (the engine creates the parent in each
        /// of them, so each must be cleaned up).
        all: Vec<PathBuf>,
    },
    /// cgroup v2: one unified hierarchy.
    V2 { root: PathBuf },
}

struct MountEntry {
    root: String,
    mount_point: PathBuf,
    fs_type: String,
    super_options: Vec<String>,
}

fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if left.len() < 5 || right.len() < 3 {
            continue;
        }
        out.push(MountEntry {
            root: unescape(left[3]),
            mount_point: PathBuf::from(unescape(left[4])),
            fs_type: right[0].to_string(),
            super_options: right[2].split(',').map(str::to_string).collect(),
        });
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl CgroupTree {
    /// Finds the hierarchies of cgroup `version` (1 or 2) in `/proc/self/mountinfo`.
    pub(crate) fn detect(version: u8) -> io::Result<CgroupTree> {
        let text = fs::read_to_string("/proc/self/mountinfo")?;
        Self::from_mountinfo(&text, version).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no usable cgroup v{version} hierarchy is mounted (or it is not the host's root)"),
            )
        })
    }

    pub(crate) fn from_mountinfo(text: &str, version: u8) -> Option<CgroupTree> {
        let mounts = parse_mountinfo(text);
        match version {
            2 => mounts
                .iter()
                .find(|m| m.fs_type == "cgroup2")
                .filter(|m| m.root == "/")
                .map(|m| CgroupTree::V2 {
                    root: m.mount_point.clone(),
                }),
            1 => {
                let v1: Vec<&MountEntry> =
                    mounts.iter().filter(|m| m.fs_type == "cgroup").collect();
                let find = |controller: &str| {
                    v1.iter()
                        .find(|m| m.super_options.iter().any(|o| o == controller))
                        .filter(|m| m.root == "/")
                        .map(|m| m.mount_point.clone())
                };
                let (cpu, memory, pids) = (find("cpu")?, find("memory")?, find("pids")?);
                let all = mounts
                    .iter()
                    .filter(|m| (m.fs_type == "cgroup" || m.fs_type == "cgroup2") && m.root == "/")
                    .map(|m| m.mount_point.clone())
                    .collect();
                Some(CgroupTree::V1 {
                    cpu,
                    memory,
                    pids,
                    all,
                })
            }
            _ => None,
        }
    }

    /// The cgroup version.
    pub(crate) fn version(&self) -> u8 {
        match self {
            CgroupTree::V1 { .. } => 1,
            CgroupTree::V2 { .. } => 2,
        }
    }

    /// Creates (or updates) `/<prefix>/<name>` with `limits`.
    pub(crate) fn apply(&self, prefix: &str, name: &str, limits: &GroupLimits) -> io::Result<()> {
        let quota = ((limits.cpus * CFS_PERIOD_US as f64).round() as u64).max(1000);
        match self {
            CgroupTree::V1 {
                cpu, memory, pids, ..
            } => {
                let mem_dir = ensure_dir(memory, prefix, name)?;
                // Without hierarchy accounting a parent's limit does not cover its children.
                let _ = fs::write(memory.join(prefix).join("memory.use_hierarchy"), "1");
                let _ = fs::write(mem_dir.join("memory.use_hierarchy"), "1");
                if read_trimmed(&mem_dir.join("memory.use_hierarchy"))? != "1" {
                    return Err(io::Error::other(
                        "memory.use_hierarchy cannot be turned on for the instance group",
                    ));
                }
                set_v1_memory(&mem_dir, limits.memory_bytes)?;
                let cpu_dir = ensure_dir(cpu, prefix, name)?;
                write(
                    &cpu_dir.join("cpu.cfs_period_us"),
                    &CFS_PERIOD_US.to_string(),
                )?;
                write(&cpu_dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                let pids_dir = ensure_dir(pids, prefix, name)?;
                write(&pids_dir.join("pids.max"), &limits.pids.to_string())?;
            }
            CgroupTree::V2 { root } => {
                let controllers = "+cpu +memory +pids";
                // The root may already delegate them; an error here shows up below.
                let _ = fs::write(root.join("cgroup.subtree_control"), controllers);
                let top = root.join(prefix);
                create_dir(&top)?;
                write(&top.join("cgroup.subtree_control"), controllers)?;
                let dir = top.join(name);
                create_dir(&dir)?;
                write(&dir.join("cpu.max"), &format!("{quota} {CFS_PERIOD_US}"))?;
                write(&dir.join("memory.max"), &limits.memory_bytes.to_string())?;
                if dir.join("memory.swap.max").exists() {
                    write(&dir.join("memory.swap.max"), "0")?;
                }
                write(&dir.join("pids.max"), &limits.pids.to_string())?;
                write(&dir.join("cgroup.subtree_control"), controllers)?;
            }
        }
        Ok(())
    }

    /// Removes `/<prefix>/<name>` from every hierarchy, waiting a little for the engine to
    /// release the containers' own groups. Missing groups are fine.
    pub(crate) async fn remove(&self, prefix: &str, name: &str) -> io::Result<()> {
        let dirs: Vec<PathBuf> = match self {
            CgroupTree::V1 { all, .. } => all.iter().map(|m| m.join(prefix).join(name)).collect(),
            CgroupTree::V2 { root } => vec![root.join(prefix).join(name)],
        };
        for dir in dirs {
            let mut attempt = 0;
            loop {
                match fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if attempt < 50 => {
                        tracing::debug!(dir = %dir.display(), error = %e, "cgroup busy, retrying");
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("cannot remove {}: {e}", dir.display()),
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    /// Names of the groups under `/<prefix>/` (the memory hierarchy, or the unified one).
    pub(crate) fn groups(&self, prefix: &str) -> Vec<String> {
        let top = match self {
            CgroupTree::V1 { memory, .. } => memory.join(prefix),
            CgroupTree::V2 { root } => root.join(prefix),
        };
        let Ok(entries) = fs::read_dir(&top) else {
            return Vec::new();
        };
        let mut out: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        out.sort();
        out
    }

    /// Whether the engine put container `id` under the instance group (checks the memory
    /// hierarchy, or the unified one).
    pub(crate) fn holds(&self, prefix: &str, name: &str, container_id: &str) -> bool {
        let dir = match self {
            CgroupTree::V1 { memory, .. } => memory.join(prefix).join(name),
            CgroupTree::V2 { root } => root.join(prefix).join(name),
        };
        dir.join(container_id).is_dir()
    }

    /// The directory holding the instance's memory limit (for inspection).
    pub(crate) fn memory_dir(&self, prefix: &str, name: &str) -> PathBuf {
        match self {
            CgroupTree::V1 { memory, .. } => memory.join(prefix).join(name),
            CgroupTree::V2 { root } => root.join(prefix).join(name),
        }
    }

    /// Checks that groups can be created and limited here, by doing it once.
    pub(crate) async fn probe(&self, prefix: &str) -> io::Result<()> {
        let name = format!(".probe-{}", std::process::id());
        let result = self.apply(
            prefix,
            &name,
            &GroupLimits {
                cpus: 1.0,
                memory_bytes: 1 << 30,
                pids: 100,
            },
        );
        let cleanup = self.remove(prefix, &name).await;
        result?;
        cleanup
    }
}

fn ensure_dir(mount: &Path, prefix: &str, name: &str) -> io::Result<PathBuf> {
    let top = mount.join(prefix);
    create_dir(&top)?;
    let dir = top.join(name);
    create_dir(&dir)?;
    Ok(dir)
}

fn create_dir(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot create {}: {e}", dir.display()),
        )),
    }
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot write {value} to {}: {e}", path.display()),
        )
    })
}

fn read_trimmed(path: &Path) -> io::Result<String> {
    Ok(fs::read_to_string(path)?.trim().to_string())
}

/// v1 keeps `memory.memsw.limit_in_bytes >= memory.limit_in_bytes` at every step, so the order
/// of the two writes depends on the current values: try both orders.
fn set_v1_memory(dir: &Path, bytes: u64) -> io::Result<()> {
    let limit = dir.join("memory.limit_in_bytes");
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    let value = bytes.to_string();
    let mut last = Ok(());
    for _ in 0..2 {
        last = write(&limit, &value);
        if memsw.exists() {
            let _ = fs::write(&memsw, &value);
        }
        if last.is_ok() {
            break;
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_v1_controllers() {
        let t = CgroupTree::from_mountinfo(HYBRID, 1).unwrap();
        let CgroupTree::V1 {
            cpu,
            memory,
            pids,
            all,
        } = t
        else {
            panic!()
        };
        assert_eq!(cpu, PathBuf::from("/sys/fs/cgroup/cpu"));
        assert_eq!(memory, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(pids, PathBuf::from("/sys/fs/cgroup/pids"));
        assert_eq!(all.len(), 7);
    }

    #[test]
    fn finds_combined_cpu_cpuacct() {
        let text = "\
1 0 0:1 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
2 0 0:2 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
3 0 0:3 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
";
        let Some(CgroupTree::V1 { cpu, .. }) = CgroupTree::from_mountinfo(text, 1) else {
            panic!()
        };
        assert_eq!(cpu, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
    }

    #[test]
    fn refuses_hierarchies_seen_from_inside_a_container() {
        let text = "\
1 0 0:1 /docker/abc /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
2 0 0:2 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
3 0 0:3 /docker/abc /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
4 0 0:4 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw
";
        assert_eq!(CgroupTree::from_mountinfo(text, 1), None);
        assert_eq!(CgroupTree::from_mountinfo(text, 2), None);
        let v2 = "4 0 0:4 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            CgroupTree::from_mountinfo(v2, 2),
            Some(CgroupTree::V2 {
                root: PathBuf::from("/sys/fs/cgroup")
            })
        );
    }

    #[tokio::test]
    async fn v2_files_are_written_and_removed() {
        // A plain directory stands in for the unified hierarchy.
        let dir = tempfile::tempdir().unwrap();
        let tree = CgroupTree::V2 {
            root: dir.path().to_path_buf(),
        };
        let limits = GroupLimits {
            cpus: 1.5,
            memory_bytes: 512 << 20,
            pids: 300,
        };
        tree.apply("stratus", "i1", &limits).unwrap();
        let g = dir.path().join("stratus/i1");
        assert_eq!(read_trimmed(&g.join("cpu.max")).unwrap(), "150000 100000");
        assert_eq!(
            read_trimmed(&g.join("memory.max")).unwrap(),
            (512u64 << 20).to_string()
        );
        assert_eq!(read_trimmed(&g.join("pids.max")).unwrap(), "300");
        assert_eq!(
            read_trimmed(&dir.path().join("stratus/cgroup.subtree_control")).unwrap(),
            "+cpu +memory +pids"
        );
        // A real cgroup directory has no regular files to delete; emulate that.
        for f in fs::read_dir(&g).unwrap() {
            fs::remove_file(f.unwrap().path()).unwrap();
        }
        tree.remove("stratus", "i1").await.unwrap();
        assert!(!g.exists());
        tree.remove("stratus", "i1").await.unwrap();
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
