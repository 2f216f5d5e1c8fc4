//! Table tests of the steps of `derive`, one table per step, in the style of
//! Codex's `network_seccomp_mode` tests.

use std::path::Path;

use super::*;
use crate::extension::capabilities::Capability::*;
use crate::extension::provenance::TrustClass;
use crate::sandbox::policy::{Layers, LimitOverrides, ProgramFacts, Scope};

fn probe() -> Probe {
    Probe {
        kernel: "test".into(),
        uid: 1000,
        root: false,
        landlock_abi: 6,
        landlock_missing: vec![],
        seccomp_filter: true,
        seccomp_listener: true,
        seccomp_listener_missing: None,
        user_namespaces: true,
        mount_namespaces: true,
        network_namespaces: true,
        pid_namespaces: true,
        ipc_namespaces: true,
        uts_namespaces: true,
        namespace_failure: None,
        pids_cgroup: None,
        memory_cgroup: None,
        pids_cgroup_missing: None,
        memory_cgroup_missing: None,
        cgroup_v2_delegation: false,
    }
}

fn root(pids: bool) -> Probe {
    Probe {
        uid: 0,
        root: true,
        pids_cgroup: pids.then(|| "/sys/fs/cgroup/pids".into()),
        ..probe()
    }
}

fn caps(c: &[Capability]) -> Declared {
    c.iter().copied().collect()
}

fn manifest(c: &[Capability], trust: TrustClass) -> Manifest {
    Manifest {
        name: "t.ext".into(),
        version: "1".into(),
        description: "d".into(),
        abi_version: "1".into(),
        min_nodus_version: "4.0.0".into(),
        capabilities: c.to_vec(),
        provenance: crate::extension::provenance::Provenance {
            trust_class: trust,
            ..Default::default()
        },
        tools: Vec::new(),
        entry: None,
        egress: None,
    }
}

#[test]
fn requirement_per_mode_and_layer() {
    use Requirement::*;
    for (mode, layer, expected) in [
        (Mode::Strict, Layer::Landlock, Hard),
        (Mode::Strict, Layer::Seccomp, Hard),
        (Mode::Strict, Layer::Limits, Hard),
        (Mode::Strict, Layer::Namespaces, Soft),
        (Mode::BestEffort, Layer::Landlock, BestEffort),
        (Mode::BestEffort, Layer::Seccomp, BestEffort),
        (Mode::BestEffort, Layer::Namespaces, BestEffort),
        (Mode::BestEffort, Layer::Limits, BestEffort),
    ] {
        assert_eq!(Requirement::of(mode, layer), expected, "{mode:?} {layer}");
    }
}

#[test]
fn trust_class_caps_what_may_be_declared() {
    let mut op = OperatorPolicy::default();
    op.trust_classes.insert(TrustClass::Dev, vec![ToolInvoke]);
    for (declared, trust, ok) in [
        (vec![ToolInvoke], TrustClass::Dev, true),
        (vec![], TrustClass::Dev, true),
        (vec![ToolInvoke, NetworkOutbound], TrustClass::Dev, false),
        (vec![NetworkOutbound], TrustClass::Trusted, true), // no entry: anything
    ] {
        let m = manifest(&declared, trust);
        let r = check_trust_class(&m, &caps(&declared), &op);
        assert_eq!(r.is_ok(), ok, "{declared:?} as {trust:?}");
        if let Err(e) = r {
            assert_eq!(e.class(), "CapabilityError");
        }
    }
}

fn fs(declared: &[Capability], workspace: Option<&str>, roots: &[&str]) -> Result<Vec<FsRule>> {
    let m = manifest(declared, TrustClass::Dev);
    let op = OperatorPolicy {
        workspace_roots: roots.iter().map(Into::into).collect(),
        read_only_paths: vec!["/data".into()],
        ..Default::default()
    };
    let program = ProgramFacts {
        program: "/opt/py/bin/python3".into(),
        loader: Some("/lib64/ld.so".into()),
        runtime_dirs: vec!["/opt/py".into()],
    };
    let p = probe();
    fs_rules(
        &Inputs {
            manifest: &m,
            extension_dir: Path::new("/ext"),
            workspace: workspace.map(Path::new),
            operator: &op,
            program: &program,
            identity: &Default::default(),
            probe: &p,
        },
        &caps(declared),
    )
}

fn access(rules: &[FsRule], path: &str) -> Option<Access> {
    rules
        .iter()
        .filter(|r| r.path == Path::new(path))
        .map(|r| r.access)
        .max()
}

#[test]
fn fs_rules_per_capability() {
    use Access::*;
    // (declared, path, expected access)
    for (declared, path, expected) in [
        (vec![], "/usr", Some(Read)),
        (vec![SubprocessRun], "/usr", Some(ReadExec)),
        (vec![], "/opt/py", Some(Read)),
        (vec![SubprocessRun], "/opt/py", Some(ReadExec)),
        (vec![], "/opt/py/bin/python3", Some(ExecFile)),
        (vec![], "/lib64/ld.so", Some(ExecFile)),
        (vec![], "/ext", Some(Read)),
        (vec![], "/data", Some(Read)),
        (vec![], "/dev/null", Some(ReadWriteFile)),
        (vec![], "/ws", None),
        (vec![FilesystemRead], "/ws", Some(Read)),
        (vec![FilesystemWrite], "/ws", Some(Write)),
        (vec![FilesystemRead, FilesystemWrite], "/ws", Some(Write)),
        (vec![], "/etc/resolv.conf", None),
        (vec![NetworkOutbound], "/etc/resolv.conf", Some(Read)),
        (vec![], "/usr/bin", None), // beneath /usr
        (vec![SubprocessRun], "/usr/bin", Some(ReadExec)),
        (vec![ToolInvoke, MemoryRead, MemoryWrite], "/ws", None),
    ] {
        let rules = fs(&declared, Some("/ws"), &[]).unwrap();
        assert_eq!(access(&rules, path), expected, "{declared:?} {path}");
    }
}

#[test]
fn fs_rules_refuse_a_missing_or_outside_workspace() {
    // (declared, workspace, roots, error class)
    for (declared, ws, roots, class) in [
        (vec![FilesystemRead], None, vec![], Some("SandboxError")),
        (vec![FilesystemWrite], None, vec![], Some("SandboxError")),
        (
            vec![FilesystemRead],
            Some("/ws"),
            vec!["/srv"],
            Some("CapabilityError"),
        ),
        (vec![FilesystemRead], Some("/srv/a"), vec!["/srv"], None),
        (vec![FilesystemRead], Some("/ws"), vec![], None),
        (vec![ToolInvoke], None, vec!["/srv"], None),
    ] {
        let r = fs(&declared, ws, &roots);
        assert_eq!(
            r.err().map(|e| e.class()),
            class,
            "{declared:?} {ws:?} {roots:?}"
        );
    }
}

#[test]
fn landlock_tcp_per_capability_and_ports() {
    // (declared, operator ports, handled, connect)
    for (declared, ports, handled, connect) in [
        (vec![], vec![], true, None),
        (vec![], vec![443], true, None),
        (vec![NetworkOutbound], vec![], false, None),
        (
            vec![NetworkOutbound],
            vec![443, 80],
            true,
            Some(vec![443, 80]),
        ),
    ] {
        let op = OperatorPolicy {
            tcp_ports: ports.clone(),
            ..Default::default()
        };
        let ll = landlock(&op, &caps(&declared), Requirement::Hard, None, 7);
        assert_eq!(
            (ll.tcp_handled, ll.tcp_connect),
            (handled, connect),
            "{declared:?} {ports:?}"
        );
        assert_eq!(ll.scopes, [Scope::AbstractUnixSocket, Scope::Signal]);
    }
}

/// Every mechanism but a pid namespace and a private root, with or without
/// a network namespace of its own.
fn at(own_net: bool) -> Situation {
    Situation {
        own_net,
        mount_namespace: true,
        pid_namespace: false,
        landlock_scopes: true,
        unix_sockets: false,
        metadata_supervisor: true,
    }
}

#[test]
fn seccomp_actions_per_capability() {
    use SyscallAction::*;
    // The data's condition `name` for system call `call`.
    let cond = |call: &str, name: &str| {
        let c = DATA
            .seccomp
            .rules
            .iter()
            .filter(|r| r.syscalls.iter().any(|s| s.name == call))
            .find_map(|r| r.action.condition().filter(|c| c.name == name))
            .unwrap_or_else(|| panic!("no condition {name} for {call}"));
        AllowIf(c.clone())
    };
    let eperm = Errno(super::Errno::Perm);
    // (declared, syscall, expected action)
    for (declared, name, expected) in [
        (vec![], "read", Allow),
        (vec![], "socket", eperm.clone()),
        (
            vec![NetworkOutbound],
            "socket",
            cond("socket", "socket_network_families"),
        ),
        (vec![], "clone", cond("clone", "clone_thread_only")),
        (
            vec![SubprocessRun],
            "clone",
            cond("clone", "clone_no_namespaces"),
        ),
        (vec![], "fork", eperm.clone()),
        (vec![SubprocessRun], "fork", Allow),
        (vec![SubprocessRun], "execveat", Allow),
        (vec![], "clone3", Errno(super::Errno::NoSys)),
        (vec![], "getxattr", Errno(super::Errno::OpNotSupp)),
        (vec![], "ioctl", cond("ioctl", "ioctl_not_refused")),
        (vec![], "prlimit64", cond("prlimit64", "prlimit_self")),
        (vec![], "chmod", cond("chmod", "mode_not_set_id")),
        (vec![], "openat", cond("openat", "creation_mode_not_set_id")),
        (
            vec![NetworkOutbound],
            "sendmsg",
            cond("sendmsg", "no_fast_open"),
        ),
        (vec![], "fcntl", cond("fcntl", "fcntl_own_descriptors")),
        (vec![], "madvise", cond("madvise", "madvise_no_pageout")),
        (vec![], "openat2", Errno(super::Errno::NoSys)),
        (vec![], "bind", Allow),
        (vec![], "setsockopt", Allow),
        (vec![NetworkOutbound], "bind", eperm.clone()),
        (
            vec![NetworkOutbound],
            "setsockopt",
            cond("setsockopt", "setsockopt_no_autobind"),
        ),
        (vec![], "ptrace", eperm.clone()),
        (
            vec![SubprocessRun, NetworkOutbound],
            "unshare",
            eperm.clone(),
        ),
    ] {
        let sc = seccomp(&caps(&declared), &at(!declared.contains(&NetworkOutbound)));
        assert_eq!(
            sc.rule(name).map(|r| r.action.clone()),
            Some(expected),
            "{declared:?} {name}"
        );
        assert_eq!(sc.default, super::Errno::Perm);
    }
    let none = seccomp(&caps(&[]), &at(true));
    assert!(
        none.rule("execveat").is_none(),
        "execveat only with subprocess.run"
    );
    assert!(none.rule("memfd_create").is_none());
}

/// The argument each mode or flags check reads is the one the kernel's
/// signature has there: a check of the wrong index would pass everything.
#[test]
fn seccomp_checks_read_the_right_argument() {
    let set_id = u64::from(libc::S_ISUID | libc::S_ISGID);
    let fast_open = libc::MSG_FASTOPEN as u64;
    // (call, argument, mask): chmod(path, mode), fchmodat(dirfd, path, mode),
    // open(path, flags, mode), openat(dirfd, path, flags, mode), creat(path, mode),
    // sendto(fd, buf, len, flags, ...), sendmsg(fd, msg, flags), sendmmsg(fd, vec, n, flags),
    // renameat2(olddirfd, oldpath, newdirfd, newpath, flags).
    for (call, index, mask) in [
        ("chmod", 1, set_id),
        ("fchmod", 1, set_id),
        ("fchmodat", 2, set_id),
        ("fchmodat2", 2, set_id),
        ("open", 2, set_id),
        ("openat", 3, set_id),
        ("creat", 1, set_id),
        ("sendto", 3, fast_open),
        ("sendmsg", 2, fast_open),
        ("sendmmsg", 3, fast_open),
        ("renameat2", 4, u64::from(libc::RENAME_WHITEOUT)),
    ] {
        let sc = seccomp(&caps(&[NetworkOutbound]), &at(false));
        let c = sc
            .rule(call)
            .and_then(|r| r.action.condition())
            .unwrap_or_else(|| panic!("{call} is not conditional"));
        assert_eq!(
            c.any_of,
            [[crate::sandbox::policy::ArgCheck {
                index,
                width: crate::sandbox::policy::ArgWidth::Dword,
                op: crate::sandbox::policy::ArgOp::MaskedEq(mask),
                value: 0,
            }]],
            "{call}"
        );
    }
    // fcntl: an allowlist of commands (arg 1), without the lease, notify and write-hint ones.
    let sc = seccomp(&caps(&[]), &at(true));
    let fcntl = sc.rule("fcntl").and_then(|r| r.action.condition()).unwrap();
    let allowed: Vec<u64> = fcntl
        .any_of
        .iter()
        .map(|g| {
            assert_eq!(g.len(), 1);
            assert_eq!(
                (g[0].index, g[0].op),
                (1, crate::sandbox::policy::ArgOp::Eq)
            );
            g[0].value
        })
        .collect();
    for c in [
        libc::F_GETFD,
        libc::F_SETFL,
        libc::F_SETLK,
        libc::F_OFD_SETLKW,
    ] {
        assert!(allowed.contains(&(c as u64)), "{c}");
    }
    for c in [libc::F_SETLEASE, libc::F_NOTIFY, 1029, 1036, 1038] {
        assert!(!allowed.contains(&(c as u64)), "{c}");
    }
}

#[test]
fn namespaces_per_probe_and_capability() {
    let all = Namespaces {
        user: true,
        mount: true,
        pid: true,
        net: true,
        ipc: true,
        uts: true,
    };
    let no_netns = Probe {
        network_namespaces: false,
        ..probe()
    };
    let no_userns = Probe {
        user_namespaces: false,
        ..probe()
    };
    // (probe, declared, on, namespaces, missing)
    type Case = (Probe, Vec<Capability>, bool, Namespaces, Vec<&'static str>);
    let cases: Vec<Case> = vec![
        (probe(), vec![], true, all, vec![]),
        (probe(), vec![], false, Namespaces::default(), vec![]),
        (
            probe(),
            vec![NetworkOutbound],
            true,
            Namespaces { net: false, ..all },
            vec![],
        ),
        (
            root(true),
            vec![],
            true,
            Namespaces { user: false, ..all },
            vec![],
        ),
        (
            no_userns.clone(),
            vec![],
            true,
            Namespaces::default(),
            vec![],
        ),
        (
            Probe {
                root: true,
                uid: 0,
                ..no_userns
            },
            vec![],
            true,
            Namespaces { user: false, ..all },
            vec![],
        ),
        (
            no_netns.clone(),
            vec![],
            true,
            Namespaces { net: false, ..all },
            vec!["net"],
        ),
        (
            no_netns,
            vec![NetworkOutbound],
            true,
            Namespaces { net: false, ..all },
            vec![],
        ),
        (
            Probe {
                pid_namespaces: false,
                ipc_namespaces: false,
                ..probe()
            },
            vec![],
            true,
            Namespaces {
                pid: false,
                ipc: false,
                ..all
            },
            vec!["pid", "ipc"],
        ),
    ];
    for (p, declared, on, ns, missing) in cases {
        assert_eq!(
            namespaces(&p, &caps(&declared), on, false),
            (ns, missing),
            "{p:?} {declared:?} {on}"
        );
    }
}

#[test]
fn limits_and_the_pids_cgroup() {
    let defaults = crate::sandbox::policy::default_limits();
    let cg = Some("/sys/fs/cgroup/pids".to_string());
    // (probe, declared, limits on, overrides, limits, cgroup)
    for (p, declared, on, cpu, limits_expected, cgroup) in [
        (
            probe(),
            vec![SubprocessRun],
            true,
            None,
            Some(defaults),
            None,
        ),
        (
            root(true),
            vec![SubprocessRun],
            true,
            None,
            Some(defaults),
            cg.clone(),
        ),
        // Every root worker, threads count too.
        (root(true), vec![], true, None, Some(defaults), cg.clone()),
        (
            root(false),
            vec![SubprocessRun],
            true,
            None,
            Some(defaults),
            None,
        ),
        (root(true), vec![SubprocessRun], false, None, None, None),
        (
            probe(),
            vec![],
            true,
            Some(5),
            Some(Limits {
                cpu_seconds: 5,
                ..defaults
            }),
            None,
        ),
    ] {
        let op = OperatorPolicy {
            limits: LimitOverrides {
                cpu_seconds: cpu,
                ..Default::default()
            },
            layers: Layers {
                limits: on,
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            limits(&op, &p, &caps(&declared)),
            (limits_expected, cgroup),
            "root={} {declared:?} on={on}",
            p.root
        );
    }
}

#[test]
fn overrides_replace_only_what_they_name() {
    let d = crate::sandbox::policy::default_limits();
    let o = LimitOverrides {
        memory_bytes: Some(1),
        core_bytes: Some(7),
        ..Default::default()
    };
    let l = d.overridden_by(&o);
    assert_eq!((l.memory_bytes, l.core_bytes), (1, 7));
    assert_eq!(
        (l.cpu_seconds, l.processes, l.open_files, l.file_size_bytes),
        (d.cpu_seconds, d.processes, d.open_files, d.file_size_bytes)
    );
    assert_eq!(d.overridden_by(&LimitOverrides::default()), d);
    let parsed: LimitOverrides = serde_json::from_str(r#"{"processes": 3}"#).unwrap();
    assert_eq!(parsed.processes, Some(3));
    assert!(serde_json::from_str::<LimitOverrides>(r#"{"stack_bytes": 3}"#).is_err());
}

#[test]
fn environment_per_capability() {
    for (declared, listed) in [
        (vec![], ""),
        (vec![ToolInvoke], "tool.invoke"),
        (
            vec![SubprocessRun, FilesystemRead],
            "filesystem.read,subprocess.run",
        ),
    ] {
        let env = environment(
            &caps(&declared),
            None,
            None,
            true,
            &OperatorPolicy::default(),
        );
        assert_eq!(env["NODUS_EXTENSION_CAPABILITIES"], listed);
        assert_eq!(env["HOME"], "$SCRATCH");
        assert_eq!(env["TMPDIR"], "$SCRATCH");
        assert_eq!(env["PATH"], "/usr/local/bin:/usr/bin:/bin");
    }
}

#[test]
fn layer_reports_per_probe() {
    let old = Probe {
        landlock_abi: 3,
        landlock_missing: vec![],
        ..probe()
    };
    let no_seccomp = Probe {
        seccomp_filter: false,
        seccomp_listener: false,
        seccomp_listener_missing: Some("no seccomp".into()),
        ..probe()
    };
    let no_userns = Probe {
        user_namespaces: false,
        ..probe()
    };
    // (probe, declared, layer, enforceable)
    for (p, declared, layer, enforceable) in [
        (probe(), vec![], Layer::Landlock, true),
        (old, vec![], Layer::Landlock, true),
        (
            Probe {
                landlock_abi: 0,
                ..probe()
            },
            vec![],
            Layer::Landlock,
            false,
        ),
        (no_seccomp, vec![], Layer::Seccomp, false),
        (no_userns, vec![], Layer::Namespaces, false),
        (root(false), vec![], Layer::Namespaces, true),
        (root(false), vec![], Layer::Limits, false),
        (root(false), vec![SubprocessRun], Layer::Limits, false),
        (root(true), vec![SubprocessRun], Layer::Limits, true),
        (probe(), vec![SubprocessRun], Layer::Limits, true),
    ] {
        for mode in [Mode::Strict, Mode::BestEffort] {
            let op = OperatorPolicy {
                mode,
                ..Default::default()
            };
            // Root as uid 0 (no ids of its own): RLIMIT_NPROC does not bind it.
            let layers = layer_reports(&op, &p, &caps(&declared), false);
            assert_eq!(
                layers.iter().map(|l| l.layer).collect::<Vec<_>>(),
                Layer::ALL
            );
            let r = report(&layers, layer);
            assert_eq!(r.enforceable, enforceable, "{layer} {declared:?} {p:?}");
            assert_eq!(r.requirement, Requirement::of(mode, layer));
            assert!(r.wanted);
        }
    }
}
