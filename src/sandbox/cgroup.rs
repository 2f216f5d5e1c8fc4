//! Per-worker cgroups: where this runner can make them ([`discover`], read by
//! the probe, changes nothing) and the ones made for one worker
//! ([`WorkerCgroup`], made before the fork, joined by the child between fork
//! and exec through `cgroup.procs`, killed and removed at unload).
//!
//! A worker's cgroup is a child of the runner's *own* cgroup (or, on cgroup
//! v2, of its delegated parent): the worker stays inside whatever bound the
//! operator put on the runner, and nothing is made elsewhere in the host's
//! hierarchy.
//!
//! - cgroup v2, where the runner can write a subtree: one cgroup with
//!   `pids.max`, `memory.max`, `memory.swap.max` 0 and `memory.oom.group` 1
//!   (when the files exist). The parent is the runner's own cgroup when its
//!   `cgroup.subtree_control` already enables the controller (only possible
//!   at the hierarchy's root: a non-root cgroup with processes cannot enable
//!   controllers for children), otherwise the runner's parent cgroup when it
//!   is delegated (systemd's `Delegate=` with `DelegateSubgroup=`, a
//!   container entrypoint that moved itself into a leaf). The runner never
//!   moves itself and never writes `cgroup.subtree_control`.
//! - cgroup v1: a `pids` cgroup with `pids.max` and a `memory` cgroup with
//!   `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes`, the same
//!   value, when swap accounting exists), each in the runner's own cgroup of
//!   that hierarchy.
//!
//! Each is used only where it is writable (a container mounts the
//! hierarchies read-only); otherwise the reason is kept for the guarantee
//! model's report.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result, SandboxKind};

/// Where the cgroup hierarchies are mounted.
pub const ROOT: &str = "/sys/fs/cgroup";

/// A controller a worker's cgroup uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    Pids,
    Memory,
}

impl Controller {
    pub fn name(self) -> &'static str {
        match self {
            Controller::Pids => "pids",
            Controller::Memory => "memory",
        }
    }
}

/// A folder in which per-worker cgroups of one controller can be made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Parent {
    pub path: String,
    /// 2: cgroup v2 (one cgroup holds both controllers); 1: a v1 hierarchy.
    pub version: u8,
}

impl Parent {
    /// The parent folder `path`, its version told by its files (a v2 cgroup
    /// has `cgroup.controllers`).
    pub fn at(path: &str) -> Parent {
        let v2 = Path::new(path).join("cgroup.controllers").exists();
        Parent {
            path: path.to_string(),
            version: if v2 { 2 } else { 1 },
        }
    }
}

/// What [`discover`] found for each controller: a parent, or why none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub pids: std::result::Result<Parent, String>,
    pub memory: std::result::Result<Parent, String>,
}

/// What the file system tells [`discover`]: the mounts under `root`, this
/// process's `/proc/self/cgroup` and `/proc/self/mountinfo`, and whether a
/// path is writable by this process (`access(W_OK)`: false on a read-only mount).
pub struct View<'a> {
    pub root: &'a Path,
    pub self_cgroup: &'a str,
    pub mountinfo: &'a str,
    pub writable: &'a dyn Fn(&Path) -> bool,
    /// Whether a path is on a read-only mount.
    pub read_only: &'a dyn Fn(&Path) -> bool,
}

/// This process's view of the system.
pub fn discover_here() -> Found {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let (cg, mi) = (read("/proc/self/cgroup"), read("/proc/self/mountinfo"));
    let writable = |p: &Path| nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_ok();
    let read_only = |p: &Path| {
        nix::sys::statvfs::statvfs(p)
            .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
    };
    discover(&View {
        root: Path::new(ROOT),
        self_cgroup: &cg,
        mountinfo: &mi,
        writable: &writable,
        read_only: &read_only,
    })
}

/// Where per-worker pids and memory cgroups can be made: cgroup v2 first
/// (one cgroup for both), else each controller's v1 hierarchy.
pub fn discover(v: &View) -> Found {
    let v2 = v2_mount(v);
    let one = |c: Controller| -> std::result::Result<Parent, String> {
        let v2_why = match &v2 {
            Some(mount) => match v2_parent(v, mount, c) {
                Ok(p) => return Ok(p),
                Err(why) => why,
            },
            None => format!("no cgroup v2 hierarchy at {}", v.root.display()),
        };
        match v1_parent(v, c) {
            Ok(p) => Ok(p),
            Err(v1_why) => Err(format!("{v2_why}; {v1_why}")),
        }
    };
    Found {
        pids: one(Controller::Pids),
        memory: one(Controller::Memory),
    }
}

/// The cgroup2 mount: `<root>/unified` (hybrid) or `<root>` itself.
fn v2_mount(v: &View) -> Option<PathBuf> {
    [v.root.join("unified"), v.root.to_path_buf()]
        .into_iter()
        .find(|m| m.join("cgroup.controllers").is_file())
}

/// `path` (a cgroup path of /proc/self/cgroup) as a folder under `mount`:
/// a mount whose root is a cgroup of its own (a container without a cgroup
/// namespace) shows that cgroup at the mount point.
fn folder(v: &View, mount: &Path, path: &str) -> PathBuf {
    let mount_root = v.mountinfo.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.len() > 4 && Path::new(f[4]) == mount).then(|| f[3].to_string())
    });
    let rel = match mount_root.as_deref() {
        Some(r) if r != "/" && (path == r || path.starts_with(&format!("{r}/"))) => {
            &path[r.len()..]
        }
        _ => path,
    };
    match rel.trim_start_matches('/') {
        "" => mount.to_path_buf(),
        rel => mount.join(rel),
    }
}

fn lists(file: &Path, c: Controller) -> bool {
    std::fs::read_to_string(file).is_ok_and(|s| s.split_whitespace().any(|w| w == c.name()))
}

/// The v2 parent for `c`: the runner's own cgroup when its subtree already
/// has the controller (the hierarchy's root), else its delegated parent.
fn v2_parent(v: &View, mount: &Path, c: Controller) -> std::result::Result<Parent, String> {
    let name = c.name();
    let Some(own) = v.self_cgroup.lines().find_map(|l| l.strip_prefix("0::")) else {
        return Err(format!(
            "cgroup v2 at {}: this process is in no v2 cgroup",
            mount.display()
        ));
    };
    let dir = folder(v, mount, own);
    let shown = dir.display();
    if !lists(&dir.join("cgroup.controllers"), c) {
        let have = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        return Err(format!(
            "cgroup v2: `{name}` is not among the controllers of the runner's cgroup {shown} ({})",
            if have.trim().is_empty() {
                "none"
            } else {
                have.trim()
            }
        ));
    }
    let usable = |d: &Path| (v.writable)(d) && (v.writable)(&d.join("cgroup.procs"));
    if lists(&dir.join("cgroup.subtree_control"), c) && usable(&dir) {
        return Ok(Parent {
            path: dir.display().to_string(),
            version: 2,
        });
    }
    let parent = dir
        .parent()
        .filter(|p| p.starts_with(mount) && dir != mount);
    match parent {
        // The runner's cgroup has the controller, so its parent's subtree enables it.
        Some(p) if usable(p) && (v.writable)(&p.join("cgroup.subtree_control")) => Ok(Parent {
            path: p.display().to_string(),
            version: 2,
        }),
        Some(p) => Err(format!(
            "cgroup v2: neither the runner's cgroup {shown} (its subtree does not enable `{name}`, and a cgroup holding processes cannot) nor its parent {} is writable by this runner (not delegated); see docs/deploy.md (systemd Delegate= and DelegateSubgroup=)",
            p.display()
        )),
        None => Err(format!(
            "cgroup v2: the runner's cgroup {shown} does not enable `{name}` for its children{}",
            if usable(&dir) { "" } else { " and is not writable by this runner" }
        )),
    }
}

/// The v1 parent for `c`: the runner's own cgroup in that hierarchy.
fn v1_parent(v: &View, c: Controller) -> std::result::Result<Parent, String> {
    let name = c.name();
    let entry = v.self_cgroup.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, list, path) = (f.next()?, f.next()?, f.next()?);
        list.split(',').any(|x| x == name).then_some((list, path))
    });
    let Some((list, path)) = entry else {
        return Err(format!("no cgroup v1 `{name}` hierarchy"));
    };
    let mount = v.root.join(list);
    let dir = folder(v, &mount, path);
    if !dir.join("cgroup.procs").is_file() {
        return Err(format!(
            "cgroup v1 `{name}`: the runner's cgroup {} is not mounted here",
            dir.display()
        ));
    }
    if !(v.writable)(&dir) || !(v.writable)(&dir.join("cgroup.procs")) {
        return Err(format!(
            "cgroup v1 `{name}`: the runner's cgroup {} is not writable by this runner{}",
            dir.display(),
            if (v.read_only)(&dir) {
                " (mounted read-only, as in a container)"
            } else {
                ""
            }
        ));
    }
    Ok(Parent {
        path: dir.display().to_string(),
        version: 1,
    })
}

/// The limits one worker's cgroups hold.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// `pids.max`: tasks, threads included.
    pub tasks: Option<u64>,
    /// `memory.max` / `memory.limit_in_bytes`.
    pub memory_bytes: Option<u64>,
}

/// One cgroup made for one worker; killed and removed on drop (after the
/// worker is gone).
#[derive(Debug)]
pub struct WorkerCgroup(PathBuf, Join);

/// The file the worker's process writes `0` into to join its cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Join {
    /// `cgroup.procs`: the whole thread group (cgroup v2, or a v1 `tasks`
    /// file this runner cannot write).
    Procs,
    /// cgroup v1's `tasks`: the calling thread. The process that joins is a
    /// fresh fork with one thread, so the thread is the process, and what
    /// it forks afterwards is born inside. The same membership as through
    /// `cgroup.procs`, without its cost: moving a whole thread group takes
    /// the kernel's global `cgroup_threadgroup_rwsem` for writing, which
    /// waits for an RCU grace period (measured on this machine's kernel
    /// 6.18, v1 hierarchies: fork + join + exit 6–22 ms through
    /// `cgroup.procs`, 1.4–2.1 ms through `tasks`); a single thread moving
    /// itself skips that lock (`cgroup_procs_write_start`).
    Tasks,
}

impl WorkerCgroup {
    /// Makes `<parent>/<name>` and writes its limits: the files of `version`
    /// for the controllers `bounds` names. A file a controller lacks (swap
    /// accounting off, an older kernel) is skipped where optional.
    pub fn create(parent: &Parent, name: &str, bounds: Bounds) -> Result<WorkerCgroup> {
        let dir = Path::new(&parent.path).join(name);
        let shown = dir.display().to_string();
        let fail = |what: &str, e: std::io::Error| {
            Error::sandbox_io(
                SandboxKind::Cgroup,
                format!("cannot set up the worker's cgroup {shown} ({what}): {e}"),
                e,
            )
        };
        std::fs::create_dir(&dir).map_err(|e| fail("mkdir", e))?;
        let tasks = dir.join("tasks");
        let join = if parent.version == 1
            && nix::unistd::access(&tasks, nix::unistd::AccessFlags::W_OK).is_ok()
        {
            Join::Tasks
        } else {
            Join::Procs
        };
        let cg = WorkerCgroup(dir, join);
        let write = |file: &str, value: &str, optional: bool| -> Result<()> {
            let path = cg.0.join(file);
            if optional && !path.exists() {
                return Ok(());
            }
            std::fs::write(&path, value).map_err(|e| fail(file, e))
        };
        if let Some(n) = bounds.tasks {
            write("pids.max", &n.to_string(), false)?;
        }
        if let Some(m) = bounds.memory_bytes {
            let m = m.to_string();
            if parent.version == 2 {
                write("memory.max", &m, false)?;
                // No swap on top of memory.max, and an OOM takes the whole worker.
                write("memory.swap.max", "0", true)?;
                write("memory.oom.group", "1", true)?;
            } else {
                write("memory.limit_in_bytes", &m, false)?;
                // memory+swap, no less than the memory limit just written.
                write("memory.memsw.limit_in_bytes", &m, true)?;
            }
        }
        Ok(cg)
    }

    /// Adopts a folder left by a runner that is gone (`launch.rs`'s sweep).
    pub fn adopt(dir: PathBuf) -> WorkerCgroup {
        WorkerCgroup(dir, Join::Procs)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `cgroup.procs`: the processes in the cgroup.
    pub fn procs(&self) -> PathBuf {
        self.0.join("cgroup.procs")
    }

    /// The file the child writes `0` into to join (see [`Join`]): v1's
    /// `tasks` where this runner may write it, else `cgroup.procs`.
    pub fn join_file(&self) -> PathBuf {
        match self.1 {
            Join::Tasks => self.0.join("tasks"),
            Join::Procs => self.procs(),
        }
    }

    /// Whether the kernel's OOM killer acted in this cgroup (its memory
    /// limit was hit): `oom_kill` of `memory.events` (v2) or
    /// `memory.oom_control` (v1).
    pub fn oom_killed(&self) -> bool {
        ["memory.events", "memory.oom_control"].iter().any(|f| {
            std::fs::read_to_string(self.0.join(f)).is_ok_and(|t| {
                t.lines().any(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .is_some_and(|n| n > 0)
                })
            })
        })
    }

    /// Kills every process in the cgroup.
    pub fn kill_all(&self) {
        if let Ok(procs) = std::fs::read_to_string(self.procs()) {
            // Never 0 or negative: kill() would reach our own process group.
            for pid in procs
                .lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
                .filter(|p| *p > 0)
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    /// Kills what is in the cgroup and removes it; rmdir succeeds once the last
    /// process has been reaped, so it is retried for up to 100 ms.
    fn kill_all_and_remove(&self) {
        for _ in 0..50 {
            self.kill_all();
            if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

impl Drop for WorkerCgroup {
    fn drop(&mut self) {
        self.kill_all_and_remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary folder, removed on drop.
    struct Tree(PathBuf);

    impl Tree {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A fake hierarchy: `(path, contents)` files under a temporary root.
    fn tree(files: &[(&str, &str)]) -> Tree {
        let d = Tree(std::env::temp_dir().join(format!(
            "nodus-cgroup-test-{}-{}",
            std::process::id(),
            crate::support::unique_id()
        )));
        std::fs::create_dir_all(d.path()).unwrap();
        for (p, c) in files {
            let f = d.path().join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, c).unwrap();
        }
        d
    }

    fn found(root: &Path, cg: &str, ro: &[&str]) -> Found {
        let ro: Vec<PathBuf> = ro.iter().map(|p| root.join(p)).collect();
        let read_only = |p: &Path| ro.iter().any(|r| p.starts_with(r));
        let writable = |p: &Path| !read_only(p);
        discover(&View {
            root,
            self_cgroup: cg,
            mountinfo: "",
            writable: &writable,
            read_only: &read_only,
        })
    }

    #[test]
    fn v1_uses_the_runners_own_cgroup_of_each_hierarchy() {
        let t = tree(&[("pids/cgroup.procs", ""), ("memory/job/cgroup.procs", "")]);
        let f = found(t.path(), "8:pids:/\n4:memory:/job\n0::/\n", &[]);
        let p = f.pids.unwrap();
        assert_eq!(
            (p.path, p.version),
            (t.path().join("pids").display().to_string(), 1)
        );
        assert_eq!(
            f.memory.unwrap().path,
            t.path().join("memory/job").display().to_string()
        );
        // Read-only (a container's mounts): not used, and said why.
        let f = found(t.path(), "8:pids:/\n4:memory:/job\n", &["memory", ""]);
        let why = f.memory.unwrap_err();
        assert!(
            why.contains("not writable") && why.contains("read-only"),
            "{why}"
        );
        // Not mounted at all.
        let f = found(t.path(), "8:pids:/\n", &[]);
        assert!(f.memory.unwrap_err().contains("no cgroup v1 `memory`"));
    }

    #[test]
    fn v2_without_the_controllers_falls_back_to_v1() {
        // This machine: cgroup2 at unified with hugetlb only, v1 pids and memory.
        let t = tree(&[
            ("unified/cgroup.controllers", "hugetlb\n"),
            ("unified/cgroup.subtree_control", ""),
            ("unified/cgroup.procs", ""),
            ("pids/cgroup.procs", ""),
        ]);
        let f = found(t.path(), "8:pids:/\n0::/\n", &[]);
        assert_eq!(f.pids.unwrap().version, 1);
        let why = f.memory.unwrap_err();
        assert!(
            why.contains("`memory` is not among the controllers") && why.contains("hugetlb"),
            "{why}"
        );
    }

    #[test]
    fn v2_root_with_the_controllers_enabled_is_the_parent() {
        let t = tree(&[
            ("cgroup.controllers", "cpu memory pids\n"),
            ("cgroup.subtree_control", "memory pids\n"),
            ("cgroup.procs", ""),
        ]);
        let f = found(t.path(), "0::/\n", &[]);
        let p = f.pids.unwrap();
        assert_eq!(
            (p.path.as_str(), p.version),
            (t.path().to_str().unwrap(), 2)
        );
        assert_eq!(f.memory.unwrap().version, 2);
    }

    #[test]
    fn v2_delegated_parent_of_a_runner_in_a_leaf() {
        // systemd Delegate=yes + DelegateSubgroup=runner.
        let s = "system.slice/x.service";
        let t = tree(&[
            ("cgroup.controllers", "memory pids\n"),
            (&format!("{s}/cgroup.controllers"), "memory pids\n"),
            (&format!("{s}/cgroup.subtree_control"), "memory pids\n"),
            (&format!("{s}/cgroup.procs"), ""),
            (&format!("{s}/runner/cgroup.controllers"), "memory pids\n"),
            (&format!("{s}/runner/cgroup.subtree_control"), ""),
            (&format!("{s}/runner/cgroup.procs"), "1\n"),
        ]);
        let cg = format!("0::/{s}/runner\n");
        let f = found(t.path(), &cg, &[]);
        assert_eq!(f.pids.unwrap().path, t.path().join(s).display().to_string());
        // Not delegated (the service's folder is root's): v2 not used, said why.
        let f = found(t.path(), &cg, &[s]);
        let why = f.memory.unwrap_err();
        assert!(
            why.contains("not delegated") && why.contains("no cgroup v1"),
            "{why}"
        );
    }

    #[test]
    fn a_container_mount_of_its_own_cgroup_is_found_at_the_mount_point() {
        let t = tree(&[("memory/cgroup.procs", "")]);
        let mi = format!(
            "30 20 0:27 /docker/abc {} rw - cgroup cgroup rw,memory\n",
            t.path().join("memory").display()
        );
        let writable = |_: &Path| true;
        let f = discover(&View {
            root: t.path(),
            self_cgroup: "4:memory:/docker/abc\n",
            mountinfo: &mi,
            writable: &writable,
            read_only: &|_: &Path| false,
        });
        assert_eq!(
            f.memory.unwrap().path,
            t.path().join("memory").display().to_string()
        );
    }

    #[test]
    fn a_worker_cgroup_gets_the_limits_of_its_version() {
        let t = tree(&[]);
        let p1 = Parent {
            path: t.path().display().to_string(),
            version: 1,
        };
        let b = Bounds {
            tasks: Some(16),
            memory_bytes: Some(1 << 30),
        };
        let cg = WorkerCgroup::create(&p1, "w1", b).unwrap();
        let read = |f: &str| std::fs::read_to_string(cg.path().join(f)).ok();
        assert_eq!(read("pids.max").as_deref(), Some("16"));
        assert_eq!(read("memory.limit_in_bytes").as_deref(), Some("1073741824"));
        // Optional files that do not exist are not made.
        assert_eq!(read("memory.memsw.limit_in_bytes"), None);
        // A fake cgroup.procs holding 0 must never make kill() reach our group.
        std::fs::write(cg.procs(), "0\n").unwrap();
        cg.kill_all();
        let p2 = Parent { version: 2, ..p1 };
        let cg2 = WorkerCgroup::create(&p2, "w2", b).unwrap();
        assert_eq!(
            std::fs::read_to_string(cg2.path().join("memory.max")).unwrap(),
            "1073741824"
        );
        // A second worker of the same name is refused, not shared.
        assert!(WorkerCgroup::create(&p2, "w2", b).is_err());
    }
}
