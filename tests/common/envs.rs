//! The deployment environments, built on this machine: Docker's default
//! profile, Ubuntu's AppArmor restriction of user namespaces, Landlock
//! missing or at an older ABI, user namespaces at their limits, cgroup
//! views (through `examples/envwrap`), a real Docker container
//! (`scripts/docker-env`) and a real rootless Podman container
//! (`scripts/podman-env`). `tests/environments.rs` proves each is what it
//! claims; the environment matrix runs the runner in them.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use crate::common::sandbox::{Who, NOBODY, SYSTEM_PYTHON};

/// One environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Env {
    /// This machine as it is.
    Host,
    /// Docker's default seccomp profile and capability set (envwrap --docker).
    DockerLike,
    /// Ubuntu 23.10+'s AppArmor user-namespace restriction.
    AppArmorUserns,
    /// Ubuntu 24.04: the AppArmor restriction and Landlock ABI 4.
    Ubuntu2404,
    /// RHEL 9.x: Landlock ABI 5 (user namespaces allowed).
    LandlockAbi(u8),
    /// A kernel without Landlock (ENOSYS).
    NoLandlock,
    /// A user namespace in which every user.max_*_namespaces is 0.
    UsernsLimits,
    /// The same with ids 0..65535 mapped, as a Kubernetes pod with
    /// `hostUsers: false` or rootless Podman maps them (`0 0 65536` here).
    UsernsLimitsMapped,
    /// `/sys/fs/cgroup` is only the cgroup2 hierarchy.
    CgroupV2,
    /// No cgroup hierarchy mounted.
    CgroupNone,
    /// The cgroup mounts read-only (as in a container).
    CgroupRo,
    /// A delegated cgroup v2 subtree with `pids` and `memory`, as files
    /// (envwrap --cgroups v2-delegated: nothing enforced).
    CgroupV2Delegated,
    /// A real Docker container (scripts/docker-env).
    Docker,
    /// A real rootless Podman container (scripts/podman-env): the runner is
    /// the container's root, an unprivileged service user on the host.
    Podman,
}

impl Env {
    pub fn label(self) -> String {
        match self {
            Env::Host => "host".into(),
            Env::DockerLike => "docker-like seccomp".into(),
            Env::AppArmorUserns => "AppArmor userns restriction".into(),
            Env::Ubuntu2404 => "Ubuntu 24.04 (AppArmor + Landlock 4)".into(),
            Env::LandlockAbi(n) => format!("Landlock ABI {n}"),
            Env::NoLandlock => "no Landlock".into(),
            Env::UsernsLimits => "user.max_*_namespaces = 0".into(),
            Env::UsernsLimitsMapped => {
                "user.max_*_namespaces = 0, ids 0..65535 mapped (as Kubernetes, Podman)".into()
            }
            Env::CgroupV2 => "cgroup v2 only".into(),
            Env::CgroupNone => "no cgroups".into(),
            Env::CgroupRo => "cgroups read-only".into(),
            Env::CgroupV2Delegated => "cgroup v2 delegated (view)".into(),
            Env::Docker => "Docker container".into(),
            Env::Podman => "rootless Podman container".into(),
        }
    }

    /// The envwrap options of this environment (None: not an envwrap one).
    pub fn envwrap_args(self) -> Option<Vec<String>> {
        let v = |a: &[&str]| Some(a.iter().map(|s| s.to_string()).collect());
        match self {
            Env::Host => v(&[]),
            Env::DockerLike => v(&["--docker"]),
            Env::AppArmorUserns => v(&["--apparmor-userns"]),
            Env::Ubuntu2404 => v(&["--apparmor-userns", "--landlock-abi", "4"]),
            Env::LandlockAbi(n) => Some(vec!["--landlock-abi".into(), n.to_string()]),
            Env::NoLandlock => v(&["--landlock-abi", "0"]),
            Env::UsernsLimits => v(&["--userns-limits"]),
            Env::UsernsLimitsMapped => v(&["--userns-limits", "--userns-ids", "65536"]),
            Env::CgroupV2 => v(&["--cgroups", "v2"]),
            Env::CgroupNone => v(&["--cgroups", "none"]),
            Env::CgroupRo => v(&["--cgroups", "ro"]),
            Env::CgroupV2Delegated => v(&["--cgroups", "v2-delegated"]),
            Env::Docker | Env::Podman => None,
        }
    }

    /// A command running `program args` as `who` in this environment.
    pub fn command(self, who: Who, program: impl AsRef<OsStr>) -> Command {
        let mut argv: Vec<OsString> = Vec::new();
        if who == Who::Nobody {
            argv.extend(setpriv_prefix());
        }
        argv.push(program.as_ref().to_owned());
        match self.envwrap_args() {
            Some(a) if a.is_empty() => {
                let mut c = Command::new(&argv[0]);
                c.args(&argv[1..]);
                c
            }
            Some(a) => {
                let mut c = Command::new(envwrap());
                c.args(a).arg("--").args(argv);
                c
            }
            None => {
                let mut c = Command::new(self.container_script());
                c.arg("run").arg("--").args(argv);
                c
            }
        }
    }

    /// Whether this environment can be built here; prints `SKIP: …` when not.
    pub fn available(self) -> bool {
        if !crate::common::sandbox::is_root() && self != Env::Host {
            eprintln!(
                "SKIP: {}: building it needs root (the suite runs as root)",
                self.label()
            );
            return false;
        }
        if self.is_container() {
            return container_available(self);
        }
        true
    }

    /// The real containers (a daemon's, not a view built by envwrap).
    pub const CONTAINERS: [Env; 2] = [Env::Docker, Env::Podman];

    pub fn is_container(self) -> bool {
        Self::CONTAINERS.contains(&self)
    }

    /// The script that starts this container.
    fn container_script(self) -> PathBuf {
        let name = match self {
            Env::Podman => "scripts/podman-env",
            _ => "scripts/docker-env",
        };
        crate::common::root().join(name)
    }
}

/// `setpriv` to the suite's unprivileged identity.
pub fn setpriv_prefix() -> Vec<OsString> {
    let id = NOBODY.to_string();
    ["setpriv", "--reuid", &id, "--regid", &id, "--clear-groups"]
        .iter()
        .map(OsString::from)
        .collect()
}

/// The envwrap example.
pub fn envwrap() -> PathBuf {
    super::example_bin("envwrap")
}

/// Whether this container can be started here (`scripts/docker-env start`,
/// `scripts/podman-env start`); prints why not, once per container.
/// `NODUS_REQUIRE_DOCKER` or `NODUS_REQUIRE_PODMAN` makes a missing one a
/// failure instead of a skip.
pub fn container_available(env: Env) -> bool {
    static OK: OnceLock<std::sync::Mutex<std::collections::HashMap<Env, bool>>> = OnceLock::new();
    let mut known = OK.get_or_init(Default::default).lock().unwrap();
    *known.entry(env).or_insert_with(|| {
        let out = Command::new(env.container_script())
            .arg("start")
            .stdin(Stdio::null())
            .output()
            .expect("run the container's script");
        if out.status.success() {
            return true;
        }
        let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let require = match env {
            Env::Podman => "NODUS_REQUIRE_PODMAN",
            _ => "NODUS_REQUIRE_DOCKER",
        };
        if std::env::var_os(require).is_some() {
            panic!(
                "{} is required here ({require}) but cannot start: {why}",
                env.label()
            );
        }
        eprintln!("SKIP: {}: cannot start here: {why}", env.label());
        false
    })
}

/// What a process sees of the kernel: namespaces, id maps, clone3, Landlock,
/// capabilities, namespace limits, cgroup mounts. Run by `facts`.
pub const FACTS: &str = r#"
import ctypes, errno, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NEWNS, NEWUSER = 0x20000, 0x10000000

def sc(nr, *a):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_ulong(x) if isinstance(x, int) else x for x in a])
    return r if r >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))

def in_child(fn):
    """fn() in a forked child: 'ok' or the errno name it failed with."""
    pid = os.fork()
    if pid == 0:
        try:
            fn()
            os._exit(0)
        except OSError as e:
            os._exit(e.errno or 99)
        except BaseException:
            os._exit(99)
    _, st = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(st)
    return "ok" if code == 0 else errno.errorcode.get(code, str(code))

def unshare(flags):
    if libc.unshare(flags) != 0:
        raise OSError(ctypes.get_errno(), "unshare")

def user_with_map():
    uid, gid = os.getuid(), os.getgid()
    unshare(NEWUSER)
    for f, v in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{f}", "w") as h:
            h.write(v)

FS = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1, 6: (1 << 16) - 1}
def ruleset(abi):
    attr = (ctypes.c_uint64 * 3)(FS[abi], 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)
    r = sc(444, ctypes.addressof(attr), 24, 0)
    if isinstance(r, int):
        os.close(r)
        return "ok"
    return r

def cap_sys_admin():
    for l in open("/proc/self/status"):
        if l.startswith("CapBnd:"):
            return bool(int(l.split()[1], 16) & (1 << 21))

def cgroup_mounts():
    out = []
    for l in open("/proc/self/mountinfo"):
        f = l.split()
        point, fstype = f[4], f[f.index("-") + 1]
        if point == "/sys/fs/cgroup" or point.startswith("/sys/fs/cgroup/"):
            out.append([point, fstype, "ro" if "ro" in f[5].split(",") else "rw"])
    return out

def cgroup_mkdir():
    d = "/sys/fs/cgroup/pids/nodus-envcheck-%d" % os.getpid()
    try:
        os.mkdir(d)
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    os.rmdir(d)
    return "ok"

def read(p):
    try:
        return open(p).read().strip()
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))

print(json.dumps({
    "uid": os.getuid(),
    "unshare_user": in_child(lambda: unshare(NEWUSER)),
    "unshare_user_mount": in_child(lambda: unshare(NEWUSER | NEWNS)),
    "unshare_mount": in_child(lambda: unshare(NEWNS)),
    "user_with_map": in_child(user_with_map),
    "clone3": sc(435, 0, 0),
    "landlock_version": sc(444, None, 0, 1),
    "landlock_rulesets": {str(k): ruleset(k) for k in range(1, 7)},
    "cap_sys_admin": cap_sys_admin(),
    "max_user_namespaces": read("/proc/sys/user/max_user_namespaces"),
    "uid_map": read("/proc/self/uid_map").split(),
    "gid_map": read("/proc/self/gid_map").split(),
    "cgroup_mounts": cgroup_mounts(),
    "cgroup_mkdir": cgroup_mkdir(),
}))
"#;

/// `FACTS` run as `who` in `env`.
pub fn facts(env: Env, who: Who) -> Value {
    let out = env
        .command(who, SYSTEM_PYTHON)
        .args(["-c", FACTS])
        .stdin(Stdio::null())
        .output()
        .expect("run the facts script");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("")).unwrap_or_else(|_| {
        panic!(
            "facts in {} as {}: {text}\n{}",
            env.label(),
            who.label(),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
