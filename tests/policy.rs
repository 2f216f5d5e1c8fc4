//! Derived policies, asserted directly: the dry-run is a pure function, so each
//! capability's kernel meaning is checked here without starting anything.

use std::path::Path;

use nodus_extension::internals::sandbox::guarantees::Mechanism;
use nodus_extension::policy::Probe;
use nodus_extension::policy::{
    self, Access, Inputs, Mode, OperatorPolicy, Policy, ProgramFacts, Scope, SyscallAction,
};
use nodus_extension::Manifest;
use nodus_extension::{Capability, TrustClass};

fn probe(root: bool) -> Probe {
    Probe {
        kernel: "test".into(),
        uid: if root { 0 } else { 1000 },
        root,
        landlock_abi: 7,
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
        pids_cgroup: root.then(|| "/sys/fs/cgroup/pids".into()),
        memory_cgroup: None,
        pids_cgroup_missing: None,
        memory_cgroup_missing: None,
        cgroup_v2_delegation: false,
    }
}

fn manifest(caps: &[&str], trust: &str) -> Manifest {
    let m = serde_json::json!({
        "name": "t.ext", "version": "1", "description": "d", "capabilities": caps,
        "provenance": {"trust_class": trust},
    });
    Manifest::parse(m.to_string().as_bytes(), "test").unwrap()
}

fn program() -> ProgramFacts {
    ProgramFacts {
        program: "/opt/py/bin/python3.11".into(),
        loader: Some("/lib64/ld-linux-x86-64.so.2".into()),
        runtime_dirs: vec!["/opt/py".into()],
    }
}

fn derive_with(
    caps: &[&str],
    op: &OperatorPolicy,
    probe: &Probe,
    workspace: Option<&Path>,
) -> nodus_extension::Result<Policy> {
    let m = manifest(caps, "dev");
    policy::derive(&Inputs {
        manifest: &m,
        extension_dir: Path::new("/ext"),
        workspace,
        operator: op,
        program: &program(),
        identity: &Default::default(),
        probe,
    })
}

fn derive(caps: &[&str]) -> Policy {
    derive_with(
        caps,
        &OperatorPolicy::default(),
        &probe(false),
        Some(Path::new("/ws")),
    )
    .unwrap()
}

fn rule(p: &Policy, path: &str) -> Option<Access> {
    p.filesystem
        .iter()
        .filter(|r| r.path == Path::new(path))
        .map(|r| r.access)
        .max()
}

/// The action on system call `name`: `allow`, `if CONDITION` or the errno.
fn action(p: &Policy, name: &str) -> Option<String> {
    let r = p.seccomp.as_ref().expect("seccomp is on").rule(name)?;
    Some(match &r.action {
        SyscallAction::Allow => "allow".into(),
        SyscallAction::AllowIf(c) => format!("if {}", c.name),
        SyscallAction::Errno(e) => e.as_str().into(),
        other => format!("{other:?}"),
    })
}

#[test]
fn the_policy_data_is_valid_and_every_syscall_name_resolves() {
    let p = derive(&["filesystem.write", "network.outbound", "subprocess.run"]);
    let seccomp = p.seccomp.as_ref().unwrap();
    for r in &seccomp.rules {
        assert!(
            policy::syscall_number(&r.name).is_some(),
            "unknown system call in policies/: {}",
            r.name
        );
    }
    assert!(seccomp.rules.len() > 200);
}

#[test]
fn base_profile_whatever_is_declared() {
    let p = derive(&[]);
    assert_eq!(
        rule(&p, "/ext"),
        Some(Access::Read),
        "the extension folder is read-only"
    );
    assert_eq!(
        rule(&p, "/opt/py"),
        Some(Access::Read),
        "the interpreter prefix is read, not exec, without subprocess.run"
    );
    assert_eq!(rule(&p, "/opt/py/bin/python3.11"), Some(Access::ExecFile));
    assert_eq!(
        rule(&p, "/lib64/ld-linux-x86-64.so.2"),
        Some(Access::ExecFile)
    );
    assert_eq!(rule(&p, "/ws"), None, "no workspace without filesystem.*");
    assert_eq!(rule(&p, "/usr"), Some(Access::Read));
    let ll = p.landlock.as_ref().unwrap();
    assert!(
        ll.tcp_handled && ll.tcp_connect.is_none(),
        "TCP is denied without network.outbound"
    );
    assert_eq!(ll.scopes, [Scope::AbstractUnixSocket, Scope::Signal]);
    assert!(p.namespaces.net && p.namespaces.pid && p.namespaces.ipc && p.namespaces.user);
    // Unix sockets only, in the private root.
    assert_eq!(action(&p, "socket"), Some("if socket_unix".into()));
    assert_eq!(action(&p, "clone"), Some("if clone_thread_only".into()));
    assert_eq!(action(&p, "clone3"), Some("ENOSYS".into()));
    assert_eq!(action(&p, "fork"), Some("EPERM".into()));
    assert_eq!(action(&p, "ioctl"), Some("if ioctl_not_refused".into()));
    for denied in [
        "ptrace",
        "mount",
        "unshare",
        "setns",
        "keyctl",
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "io_uring_setup",
        "init_module",
        "kexec_load",
        "process_vm_readv",
    ] {
        assert_eq!(action(&p, denied), Some("EPERM".into()), "{denied}");
    }
    assert_eq!(
        p.environment.get("TMPDIR").map(String::as_str),
        Some("$SCRATCH")
    );
    assert!(!p.environment.contains_key("PYTHONPATH"));
    assert!(p.limits.is_some());
    assert!(p.degraded.is_empty());
}

#[test]
fn filesystem_capabilities_open_the_workspace_only() {
    assert_eq!(
        rule(&derive(&["filesystem.read"]), "/ws"),
        Some(Access::Read)
    );
    assert_eq!(
        rule(&derive(&["filesystem.write"]), "/ws"),
        Some(Access::Write)
    );
    let err = derive_with(
        &["filesystem.read"],
        &OperatorPolicy::default(),
        &probe(false),
        None,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("set HostOptions::workspace"),
        "{err}"
    );
    let mut op = OperatorPolicy::default();
    op.workspace_roots = vec!["/srv".into()];
    let err = derive_with(
        &["filesystem.read"],
        &op,
        &probe(false),
        Some(Path::new("/ws")),
    )
    .unwrap_err();
    assert_eq!(err.class(), "CapabilityError");
}

#[test]
fn network_outbound_keeps_the_host_network_and_allows_network_sockets() {
    let p = derive(&["network.outbound"]);
    assert!(!p.namespaces.net);
    assert!(
        !p.landlock.as_ref().unwrap().tcp_handled,
        "any TCP port without an operator port list"
    );
    // AF_UNIX too: the private root shows no host socket.
    assert_eq!(
        action(&p, "socket"),
        Some("if socket_network_families_and_unix".into())
    );
    assert_eq!(rule(&p, "/etc/resolv.conf"), Some(Access::Read));
    let mut op = OperatorPolicy::default();
    op.tcp_ports = vec![443];
    let p = derive_with(&["network.outbound"], &op, &probe(false), None).unwrap();
    let ll = p.landlock.unwrap();
    assert!(ll.tcp_handled);
    assert_eq!(ll.tcp_connect, Some(vec![443]));
}

#[test]
fn subprocess_run_allows_fork_and_exec_of_system_programs() {
    let p = derive(&["subprocess.run"]);
    assert_eq!(action(&p, "fork"), Some("allow".into()));
    assert_eq!(action(&p, "clone"), Some("if clone_no_namespaces".into()));
    assert_eq!(rule(&p, "/usr/bin"), Some(Access::ReadExec));
    assert_eq!(rule(&p, "/opt/py"), Some(Access::ReadExec));
    assert_eq!(p.pids_cgroup, None, "unprivileged: RLIMIT_NPROC binds");
    let root = derive_with(
        &["subprocess.run"],
        &OperatorPolicy::default(),
        &probe(true),
        None,
    )
    .unwrap();
    assert!(
        root.pids_cgroup.is_some(),
        "root: RLIMIT_NPROC does not bind uid 0"
    );
    assert!(!root.namespaces.user, "root needs no user namespace");
}

#[test]
fn host_mediated_capabilities_grant_nothing_in_the_kernel() {
    let base = derive(&[]);
    let p = derive(&["tool.invoke", "memory.read", "memory.write"]);
    assert_eq!(p.filesystem, base.filesystem);
    assert_eq!(p.landlock, base.landlock);
    assert_eq!(p.seccomp, base.seccomp);
    assert_eq!(p.namespaces, base.namespaces);
}

#[test]
fn trust_classes_cap_what_may_be_granted() {
    let mut op = OperatorPolicy::default();
    op.trust_classes
        .insert(TrustClass::Dev, vec![Capability::ToolInvoke]);
    let err = derive_with(
        &["tool.invoke", "network.outbound"],
        &op,
        &probe(false),
        None,
    )
    .unwrap_err();
    assert_eq!(err.class(), "CapabilityError");
    assert!(
        err.to_string().contains("network.outbound")
            && err.to_string().contains("trust class 'dev'"),
        "{err}"
    );
    assert!(derive_with(&["tool.invoke"], &op, &probe(false), None).is_ok());
}

#[test]
fn strict_mode_fails_closed_and_best_effort_says_what_is_degraded() {
    // No Landlock, namespaces available: the private root carries file
    // reads (and the read-only mounts writes), but nothing else keeps exec to
    // the interpreter. Strict refuses a worker without subprocess.run naming
    // the guarantee and Landlock, and starts one with it, its file
    // confinement kept by the private root alone.
    let kept_by = |p: &policy::Policy, g: &str| {
        p.guarantees
            .iter()
            .find(|s| serde_json::to_value(s.guarantee).unwrap() == g)
            .map(|s| s.kept_by.clone())
            .unwrap()
    };
    let mut none = probe(false);
    none.landlock_abi = 0;
    let err = derive_with(&[], &OperatorPolicy::default(), &none, None).unwrap_err();
    assert_eq!(err.class(), "SandboxError");
    let msg = err.to_string();
    assert!(
        msg.contains("exec: lost") && msg.contains("no Landlock"),
        "{msg}"
    );
    let p = derive_with(&["subprocess.run"], &OperatorPolicy::default(), &none, None).unwrap();
    assert!(p.degraded.is_empty(), "{:?}", p.degraded);
    assert_eq!(kept_by(&p, "file_reads"), vec![Mechanism::PrivateRoot]);
    assert_eq!(kept_by(&p, "file_writes"), vec![Mechanism::MountNamespace]);
    assert_eq!(kept_by(&p, "unix_sockets"), vec![Mechanism::PrivateRoot]);
    // With Landlock, two layers keep file reads.
    let p = derive_with(&[], &OperatorPolicy::default(), &probe(false), None).unwrap();
    assert_eq!(
        kept_by(&p, "file_reads"),
        vec![Mechanism::Landlock, Mechanism::PrivateRoot]
    );
    // Unix sockets are allowed in the private root: seccomp carries neither
    // kind then; the private root keeps host sockets by path out, the net
    // namespace and Landlock's scope abstract ones. setsid is allowed with the
    // pid namespace: the process group keeps nothing, the namespace (and for
    // root the pids cgroup) does.
    assert_eq!(kept_by(&p, "unix_sockets"), vec![Mechanism::PrivateRoot]);
    assert_eq!(
        kept_by(&p, "abstract_unix_sockets"),
        vec![Mechanism::NetNamespace, Mechanism::LandlockScopes]
    );
    assert_eq!(kept_by(&p, "lifetime"), vec![Mechanism::PidNamespace]);
    // Neither Landlock nor namespaces: nothing keeps file reads.
    let mut bare = none.clone();
    bare.user_namespaces = false;
    let err =
        derive_with(&["subprocess.run"], &OperatorPolicy::default(), &bare, None).unwrap_err();
    assert!(err.to_string().contains("file_reads: lost"), "{err}");
    let mut best = OperatorPolicy::default();
    best.mode = Mode::BestEffort;
    let p = derive_with(&[], &best, &bare, None).unwrap();
    assert!(
        p.degraded.iter().any(|d| d.starts_with("file_reads: lost")),
        "{:?}",
        p.degraded
    );
    assert!(
        p.degraded.iter().any(|d| d.starts_with("exec: lost")),
        "{:?}",
        p.degraded
    );

    // An older ABI (3): the namespaces keep what its rules lack, so strict
    // starts; the ruleset is built for ABI 3, not refused.
    let mut old = probe(false);
    old.landlock_abi = 3;
    let p = derive_with(&[], &OperatorPolicy::default(), &old, None).unwrap();
    assert!(p.degraded.is_empty(), "{:?}", p.degraded);
    assert_eq!(p.landlock.as_ref().unwrap().abi, 3);
    // ...but a port list needs Landlock's TCP rules (ABI 4), which nothing else carries.
    let mut ports = OperatorPolicy::default();
    ports.tcp_ports = vec![443];
    let err = derive_with(&["network.outbound"], &ports, &old, None).unwrap_err();
    assert!(err.to_string().contains("tcp_ports: lost"), "{err}");
    assert!(err.to_string().contains("ABI 4"), "{err}");

    // No namespaces at all (Ubuntu's AppArmor restriction, a container):
    // strict still runs, seccomp takes over what the namespaces carried
    // (metadata changes refused, signals to the own process group only), and
    // the guarantees say which layer keeps each.
    let mut no_userns = probe(false);
    no_userns.user_namespaces = false;
    no_userns.landlock_abi = 4;
    let p = derive_with(&[], &OperatorPolicy::default(), &no_userns, None).unwrap();
    assert!(!p.namespaces.pid && !p.namespaces.net && !p.namespaces.mount);
    assert!(p.degraded.is_empty(), "{:?}", p.degraded);
    let rule = |n: &str| {
        p.seccomp
            .as_ref()
            .and_then(|sc| sc.rule(n))
            .map(|r| r.action.clone())
    };
    // chmod and utime go to the runner's supervisor (it can take a
    // listener here), chown stays refused; under another supervisor
    // (EBUSY) all are refused, and the report says the workspace loses them.
    for call in [
        "chmod",
        "fchmod",
        "fchmodat",
        "fchmodat2",
        "utimensat",
        "utime",
        "utimes",
        "futimesat",
    ] {
        assert_eq!(rule(call), Some(SyscallAction::Supervised), "{call}");
    }
    for call in ["chown", "fchown", "lchown", "fchownat"] {
        assert_eq!(
            rule(call),
            Some(SyscallAction::Errno(policy::Errno::Perm)),
            "{call}"
        );
    }
    let mut busy = no_userns.clone();
    busy.seccomp_listener = false;
    busy.seccomp_listener_missing = Some("EBUSY".into());
    let q = derive_with(&[], &OperatorPolicy::default(), &busy, None).unwrap();
    for call in ["chmod", "fchmodat2", "utimensat", "chown"] {
        assert_eq!(
            q.seccomp
                .as_ref()
                .and_then(|sc| sc.rule(call))
                .map(|r| r.action.clone()),
            Some(SyscallAction::Errno(policy::Errno::Perm)),
            "{call}"
        );
    }
    assert!(
        q.degraded
            .iter()
            .any(|d| d.starts_with("workspace_metadata:") && d.contains("EBUSY")),
        "{:?}",
        q.degraded
    );
    // With a mount namespace nothing is supervised (its read-only mounts
    // keep host metadata), and nothing is said.
    let with_ns = derive_with(&[], &OperatorPolicy::default(), &probe(false), None).unwrap();
    assert!(with_ns
        .seccomp
        .as_ref()
        .unwrap()
        .rules
        .iter()
        .all(|r| r.action != SyscallAction::Supervised));
    assert_eq!(
        rule("kill")
            .as_ref()
            .and_then(|a| a.condition())
            .map(|c| c.name.as_str()),
        Some("signal_own_group")
    );
    let kept = |g: &str| {
        p.guarantees
            .iter()
            .find(|s| serde_json::to_value(s.guarantee).unwrap() == g)
            .map(|s| s.kept_by.clone())
            .unwrap()
    };
    assert_eq!(kept("host_metadata").len(), 1);
    assert_eq!(kept("signals").len(), 1);

    // One namespace refused (say `user.max_net_namespaces = 0`): only that one
    // is left out; the network stays closed by seccomp and Landlock.
    let mut no_netns = probe(false);
    no_netns.network_namespaces = false;
    let p = derive_with(&[], &OperatorPolicy::default(), &no_netns, None).unwrap();
    assert!(!p.namespaces.net && p.namespaces.pid && p.namespaces.user);
    assert!(p.degraded.is_empty(), "{:?}", p.degraded);

    // Root's worker as uid 0 ("worker_ids": false) without a pids cgroup:
    // nothing bounds its tasks (RLIMIT_NPROC does not bind uid 0), with or
    // without subprocess.run. Strict mode refuses, saying what to do; best
    // effort says so.
    let mut root_v2 = probe(true);
    root_v2.pids_cgroup = None;
    let mut as_root = OperatorPolicy::default();
    as_root.worker_ids = Some(policy::WorkerIdsSetting::Switch(false));
    let mut best_as_root = as_root.clone();
    best_as_root.mode = best.mode;
    for caps in [&["subprocess.run"][..], &[]] {
        let err = derive_with(caps, &as_root, &root_v2, None).unwrap_err();
        assert!(err.to_string().contains("no process limit"), "{err}");
        let p = derive_with(caps, &best_as_root, &root_v2, None).unwrap();
        assert!(
            p.degraded.iter().any(|d| d.starts_with("tasks: lost")),
            "{:?}",
            p.degraded
        );
    }
    for caps in [&["subprocess.run"][..], &[]] {
        let p = derive_with(caps, &OperatorPolicy::default(), &probe(true), None).unwrap();
        assert!(
            p.degraded.is_empty(),
            "with a pids cgroup: {:?}",
            p.degraded
        );
        assert!(p.pids_cgroup.is_some());
    }

    // Root with worker_ids: each worker a uid of its own, which RLIMIT_NPROC
    // binds: strict starts without a pids cgroup, and the policy says so.
    let ids = policy::WorkerIds::new(1_879_048_192, 64);
    let mut with_ids = OperatorPolicy::default();
    with_ids.worker_ids = Some(policy::WorkerIdsSetting::Range(ids));
    for caps in [&["subprocess.run"][..], &[]] {
        let p = derive_with(caps, &with_ids, &root_v2, None).unwrap();
        assert_eq!(p.worker_ids, Some(ids));
        assert!(p.degraded.is_empty(), "{:?}", p.degraded);
        assert!(
            p.to_string().contains("identity: a uid and gid of its own"),
            "{p}"
        );
    }
    // An unprivileged runner has no ids to give: the setting is not used.
    let p = derive_with(&[], &with_ids, &probe(false), None).unwrap();
    assert_eq!(p.worker_ids, None);
    // A range with root's, a system account's or the overflow id is refused.
    for (first, count) in [(0, 10), (999, 2), (65530, 10), (1000, 0), (u32::MAX - 1, 5)] {
        assert!(
            policy::WorkerIds::new(first, count).check().is_err(),
            "{first} {count}"
        );
    }
}

/// The policy of a "dev" extension declaring `caps`, with a workspace, on
/// `probe`'s kernel and the identity `facts`.
fn derive_identity(
    caps: &[&str],
    op: &OperatorPolicy,
    probe: &Probe,
    facts: &policy::IdentityFacts,
) -> nodus_extension::Result<Policy> {
    let m = manifest(caps, "dev");
    policy::derive(&Inputs {
        manifest: &m,
        extension_dir: Path::new("/ext"),
        workspace: Some(Path::new("/ws")),
        operator: op,
        program: &program(),
        identity: facts,
        probe,
    })
}

/// Issue 12 item 3: a root runner's worker runs as a uid of its own by
/// default, wherever it can: the identity decided from the facts, and
/// reported through the guarantee model where it falls back to uid 0.
#[test]
fn root_workers_take_a_uid_of_their_own_unless_they_cannot() {
    use policy::{IdentityFacts, WorkerIds, WorkerIdsSetting};
    let derive_facts = derive_identity;
    let mut best = OperatorPolicy::default();
    best.mode = Mode::BestEffort;
    let lost = |p: &Policy| {
        p.degraded
            .iter()
            .find(|d| d.starts_with("unprivileged_identity: lost"))
            .cloned()
    };
    let idmap_ok = IdentityFacts {
        workspace_idmap: Some(Ok(())),
        ..Default::default()
    };
    // The default: the default range, the workspace idmapped.
    let p = derive_facts(
        &["filesystem.write"],
        &OperatorPolicy::default(),
        &probe(true),
        &idmap_ok,
    )
    .unwrap();
    assert_eq!(p.worker_ids, Some(WorkerIds::DEFAULT));
    assert_eq!(p.idmapped_workspace.as_deref(), Some(Path::new("/ws")));
    assert!(
        p.root_identity.is_none() && p.degraded.is_empty(),
        "{:?}",
        p.degraded
    );
    assert!(p.to_string().contains("an idmapped mount"), "{p}");
    // Not root: the runner's own uid, nothing to give.
    let p = derive_facts(
        &["filesystem.write"],
        &OperatorPolicy::default(),
        &probe(false),
        &idmap_ok,
    )
    .unwrap();
    assert_eq!((p.worker_ids, p.idmapped_workspace.clone()), (None, None));
    assert!(p.degraded.is_empty(), "{:?}", p.degraded);

    // A 0700 /root on the way to the interpreter: past it with a private
    // root (its binds are made as root), not without a mount namespace.
    let closed = IdentityFacts {
        closed_on_the_way: Some("/root".into()),
        ..Default::default()
    };
    let p = derive_facts(&[], &OperatorPolicy::default(), &probe(true), &closed).unwrap();
    assert_eq!(p.worker_ids, Some(WorkerIds::DEFAULT));
    let mut no_mount = probe(true);
    no_mount.mount_namespaces = false;
    no_mount.namespace_failure = Some("unshare: EPERM".into());
    let err = derive_facts(&[], &OperatorPolicy::default(), &no_mount, &closed).unwrap_err();
    assert!(
        err.to_string().contains("unprivileged_identity: lost")
            && err.to_string().contains("/root"),
        "{err}"
    );
    let p = derive_facts(&[], &best, &no_mount, &closed).unwrap();
    assert_eq!(p.worker_ids, None);
    let why = lost(&p).expect("reported");
    assert!(why.contains("other users cannot enter /root"), "{why}");
    assert!(
        p.to_string()
            .contains("identity: uid 0 without capabilities"),
        "{p}"
    );

    // A writable workspace that cannot be idmapped: uid 0, reported; a
    // read-only one is read as the worker's uid.
    let no_idmap = IdentityFacts {
        workspace_idmap: Some(Err(
            "its file system does not support idmapped mounts".into()
        )),
        ..Default::default()
    };
    let p = derive_facts(&["filesystem.write"], &best, &probe(true), &no_idmap).unwrap();
    assert_eq!(p.worker_ids, None);
    assert!(
        lost(&p).unwrap().contains("does not support idmapped"),
        "{:?}",
        p.degraded
    );
    let p = derive_facts(&["filesystem.read"], &best, &probe(true), &no_idmap).unwrap();
    assert_eq!(
        (p.worker_ids, p.idmapped_workspace.clone()),
        (Some(WorkerIds::DEFAULT), None)
    );
    let p = derive_facts(&["filesystem.write"], &best, &no_mount, &idmap_ok).unwrap();
    assert_eq!(p.worker_ids, None);
    assert!(
        lost(&p).unwrap().contains("no mount namespace"),
        "{:?}",
        p.degraded
    );

    // Where no idmapped mount can be made, a workspace ACL entries can be
    // set on is lent to the worker's uid; one they cannot: uid 0, and why.
    let acl_ok = IdentityFacts {
        workspace_acl: Some(Ok(())),
        ..idmap_ok.clone()
    };
    for (facts, probe) in [
        (&acl_ok, &no_mount),
        (
            &IdentityFacts {
                workspace_acl: Some(Ok(())),
                ..no_idmap.clone()
            },
            &probe(true),
        ),
    ] {
        let p = derive_facts(&["filesystem.write"], &best, probe, facts).unwrap();
        assert_eq!(
            (
                p.worker_ids,
                p.idmapped_workspace.clone(),
                p.lent_workspace.as_deref()
            ),
            (Some(WorkerIds::DEFAULT), None, Some(Path::new("/ws"))),
            "{:?}",
            p.degraded
        );
        assert_eq!(lost(&p), None);
        assert!(
            p.to_string()
                .contains("lent to the worker's uid with ACL entries"),
            "{p}"
        );
    }
    let acl_refused = IdentityFacts {
        workspace_acl: Some(Err("its file system does not support POSIX ACLs".into())),
        ..idmap_ok.clone()
    };
    let p = derive_facts(&["filesystem.write"], &best, &no_mount, &acl_refused).unwrap();
    assert_eq!((p.worker_ids, p.lent_workspace.clone()), (None, None));
    let why = lost(&p).unwrap();
    assert!(
        why.contains("no mount namespace") && why.contains("does not support POSIX ACLs"),
        "{why}"
    );

    // An extension folder only its owner may read (pytest's 0700 tmp_path):
    // idmapped with a private root; without a mount namespace, uid 0.
    let closed_ext = IdentityFacts {
        extension_closed: true,
        extension_idmap: Some(Ok(())),
        ..Default::default()
    };
    let p = derive_facts(&[], &OperatorPolicy::default(), &probe(true), &closed_ext).unwrap();
    assert_eq!(p.worker_ids, Some(WorkerIds::DEFAULT));
    assert_eq!(p.idmapped_extension.as_deref(), Some(Path::new("/ext")));
    let p = derive_facts(&[], &best, &no_mount, &closed_ext).unwrap();
    assert_eq!(p.worker_ids, None);
    assert!(
        lost(&p).unwrap().contains("extension folder"),
        "{:?}",
        p.degraded
    );

    // Root in a user namespace that maps only uid 0: uid 0, reported.
    let unmapped = IdentityFacts {
        mapped_uids: vec![(0, 1)],
        ..Default::default()
    };
    let p = derive_facts(&[], &best, &probe(true), &unmapped).unwrap();
    assert!(
        lost(&p).unwrap().contains("does not map"),
        "{:?}",
        p.degraded
    );

    // "worker_ids": false is the operator's choice: reported, not refused
    // (with a pids cgroup, tasks stay bounded).
    let mut off = OperatorPolicy::default();
    off.worker_ids = Some(WorkerIdsSetting::Switch(false));
    let p = derive_facts(&[], &off, &probe(true), &Default::default()).unwrap();
    assert_eq!(p.worker_ids, None);
    assert!(
        lost(&p).unwrap().contains("\"worker_ids\": false"),
        "{:?}",
        p.degraded
    );
    // `true` and a range of the operator's.
    let mut on = OperatorPolicy::default();
    on.worker_ids = Some(WorkerIdsSetting::Switch(true));
    let p = derive_facts(&[], &on, &probe(true), &Default::default()).unwrap();
    assert_eq!(p.worker_ids, Some(WorkerIds::DEFAULT));
    let parsed: OperatorPolicy = serde_json::from_str(r#"{"worker_ids": false}"#).unwrap();
    assert_eq!(parsed.worker_ids, Some(WorkerIdsSetting::Switch(false)));
    let parsed: OperatorPolicy =
        serde_json::from_str(r#"{"worker_ids": {"first": 200000, "count": 10}}"#).unwrap();
    assert_eq!(
        parsed.worker_ids,
        Some(WorkerIdsSetting::Range(WorkerIds::new(200000, 10)))
    );
}

/// Issue 12 item 3, root in a user namespace that does not map the default
/// range (rootless Podman, a Kubernetes pod with `hostUsers: false`, a
/// nested user namespace): the default `worker_ids` takes a range derived
/// from the uid and gid maps (the top ids mapped both ways, avoiding 0, ids
/// below 1000, 65534, 65535, the overflow ids and the runner's own), shown
/// with its reason in the dry run; an operator's unmapped range keeps
/// refusing; a namespace mapping only 0 and 65534 refuses rather than give
/// every worker nobody's uid.
#[test]
fn root_workers_take_a_derived_range_where_the_default_is_not_mapped() {
    use policy::{IdentityFacts, WorkerIds, WorkerIdsSetting};
    let derive_facts = |caps: &[&str], op: &OperatorPolicy, facts: &IdentityFacts| {
        derive_identity(caps, op, &probe(true), facts)
    };
    let maps = |uids: &[(u32, u32)], gids: &[(u32, u32)], reserved: &[u32]| IdentityFacts {
        mapped_uids: uids.to_vec(),
        mapped_gids: gids.to_vec(),
        reserved_ids: reserved.to_vec(),
        workspace_idmap: Some(Ok(())),
        ..Default::default()
    };
    let derived = |f: &IdentityFacts| f.derived_worker_ids().map(|r| (r.first, r.count));
    let kube = maps(&[(0, 65536)], &[(0, 65536)], &[0, 65534]);
    // Kubernetes hostUsers: false (0..65535): the top 1024 below 65534.
    assert_eq!(WorkerIds::DERIVED_COUNT, 1024);
    assert_eq!(derived(&kube), Some((64510, 1024)));
    // Rootless Podman ("0 1000 1", "1 100000 65536": inside 0, 1..65536):
    // the same block; 65536 alone above the avoided 65534 and 65535 is too small.
    let podman = maps(&[(0, 1), (1, 65536)], &[(0, 1), (1, 65536)], &[0]);
    assert_eq!(derived(&podman), Some((64510, 1024)));
    // The runner's own group and the overflow ids are avoided: a run cut
    // below 1024 ids gives way to the next one down.
    let own_group = maps(&[(0, 65536)], &[(0, 65536)], &[0, 65000, 65534]);
    assert_eq!(derived(&own_group), Some((63976, 1024)));
    let overflow = maps(&[(0, 65536)], &[(0, 65536)], &[0, 65533]);
    assert_eq!(derived(&overflow), Some((64509, 1024)));
    // A gid map narrower than the uid map bounds the range.
    let gids = maps(&[(0, 65536)], &[(0, 30000)], &[]);
    assert_eq!(derived(&gids), Some((28976, 1024)));
    // Fewer than 1024 usable ids: the longest run entire, never below 1000.
    let small = maps(&[(0, 1010)], &[(0, 1010)], &[]);
    assert_eq!(derived(&small), Some((1000, 10)));
    let split = maps(&[(0, 1200), (5000, 20)], &[(0, 65536)], &[]);
    assert_eq!(derived(&split), Some((1000, 200)));
    // Nothing usable: only 0 and 65534, or ids below 1000; not read: none.
    let bare = maps(&[(0, 1), (65534, 1)], &[(0, 1), (65534, 1)], &[0, 65534]);
    assert_eq!(derived(&bare), None);
    assert_eq!(derived(&maps(&[(0, 1000)], &[], &[])), None);
    assert_eq!(derived(&IdentityFacts::default()), None);
    // Derived ranges pass the operator ranges' own check.
    for f in [&kube, &podman, &own_group, &overflow, &gids, &small, &split] {
        let r = f.derived_worker_ids().unwrap();
        assert!(r.check().is_ok(), "{r:?}");
        assert!(f.maps(&r), "{r:?}");
    }

    // The policy: strict starts, each worker a uid of the derived range,
    // the workspace idmapped; the dry run shows the range and why.
    for op in [OperatorPolicy::default(), {
        let mut on = OperatorPolicy::default();
        on.worker_ids = Some(WorkerIdsSetting::Switch(true));
        on
    }] {
        let p = derive_facts(&["filesystem.write"], &op, &kube).unwrap();
        assert_eq!(p.worker_ids, Some(WorkerIds::new(64510, 1024)));
        assert!(p.degraded.is_empty(), "{:?}", p.degraded);
        assert_eq!(p.idmapped_workspace.as_deref(), Some(Path::new("/ws")));
        let why = p.worker_ids_derived.clone().expect("the reason");
        for words in [
            "does not map the default range",
            "0..65535",
            "65534 (nobody",
            "the top",
        ] {
            assert!(why.contains(words), "{words}: {why}");
        }
        let text = p.to_string();
        assert!(
            text.contains("a uid and gid of its own from 64510..65533") && text.contains(&why),
            "{text}"
        );
    }
    // Where the default range is mapped it stays, with no derivation.
    let all = maps(&[(0, u32::MAX)], &[(0, u32::MAX)], &[0]);
    let p = derive_facts(&[], &OperatorPolicy::default(), &all).unwrap();
    assert_eq!(
        (p.worker_ids, p.worker_ids_derived),
        (Some(WorkerIds::DEFAULT), None)
    );

    // An operator's range that is not mapped keeps refusing, with the
    // actionable message; nothing is derived for it.
    let mut theirs = OperatorPolicy::default();
    theirs.worker_ids = Some(WorkerIdsSetting::Range(WorkerIds::new(200000, 10)));
    let err = derive_facts(&[], &theirs, &kube).unwrap_err().to_string();
    assert!(
        err.contains("unprivileged_identity: lost")
            && err.contains("does not map the uids 200000..200009 of worker_ids")
            && err.contains("give \"worker_ids\" a range it maps"),
        "{err}"
    );
    // A range inside the map is the operator's to take.
    theirs.worker_ids = Some(WorkerIdsSetting::Range(WorkerIds::new(20000, 10)));
    let p = derive_facts(&[], &theirs, &kube).unwrap();
    assert_eq!(
        (p.worker_ids, p.worker_ids_derived),
        (Some(WorkerIds::new(20000, 10)), None)
    );

    // Only 0 and 65534 mapped: strict refuses naming the maps; best effort
    // runs as uid 0 without capabilities and says why (nobody's uid, shared
    // by every worker, is not taken).
    let err = derive_facts(&[], &OperatorPolicy::default(), &bare)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unprivileged_identity: lost")
            && err.contains("nor any id a worker could take")
            && err.contains("/proc/self/uid_map 0, 65534"),
        "{err}"
    );
    let mut best = OperatorPolicy::default();
    best.mode = Mode::BestEffort;
    let p = derive_facts(&[], &best, &bare).unwrap();
    assert_eq!(p.worker_ids, None);
    assert!(
        p.degraded
            .iter()
            .any(|d| d.starts_with("unprivileged_identity: lost")
                && d.contains("shared overflow uid")),
        "{:?}",
        p.degraded
    );
}

/// Concurrent workers get distinct ids, and a small range runs out with an
/// error that names it and says what to change (a derived range: map more
/// ids). Root only: the locks are in a folder of root's.
#[test]
fn worker_id_leases_are_distinct_and_a_small_range_runs_out_clearly() {
    use nodus_extension::internals::sandbox::launch::IdLease;
    use policy::WorkerIds;
    if !nix::unistd::getuid().is_root() {
        eprintln!("SKIP: worker id leases are taken by root runners only");
        return;
    }
    // A range no other test or runner uses.
    let range = WorkerIds::new(3_000_000_000, 3);
    let mut leases: Vec<IdLease> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| s.spawn(|| IdLease::take(&range, true, &[]).expect("a free id")))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ids: Vec<u32> = leases.iter().map(|l| l.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![3_000_000_000, 3_000_000_001, 3_000_000_002]);
    for derived in [true, false] {
        let err = IdLease::take(&range, derived, &[]).unwrap_err().to_string();
        assert!(
            err.contains("worker_ids: all 3 uids from 3000000000 are in use by running workers"),
            "{err}"
        );
        assert_eq!(err.contains("map more ids into it"), derived, "{err}");
        assert_eq!(err.contains("give the range more ids"), !derived, "{err}");
    }
    // The control: a released id is taken again.
    let freed = leases.remove(1).id;
    assert_eq!(
        IdLease::take(&range, true, &[]).expect("the freed id").id,
        freed
    );
    assert_eq!(leases.len(), 2, "the others are still held");
}

/// A lease never gives an id that an account names (here the policy's
/// accounts; `tests/security`'s worker test binds an /etc/passwd): the
/// others of the range are given, and a range all of whose ids are
/// accounts' fails naming them and what to change. The control: without
/// the accounts the same ids are given.
#[test]
fn worker_id_leases_skip_the_accounts_ids() {
    use nodus_extension::internals::sandbox::launch::IdLease;
    use policy::{AccountId, WorkerIds};
    if !nix::unistd::getuid().is_root() {
        eprintln!("SKIP: worker id leases are taken by root runners only");
        return;
    }
    // A range no other test or runner uses.
    let range = WorkerIds::new(3_000_000_100, 3);
    let named = [
        AccountId::new(3_000_000_100, "user a's uid"),
        AccountId::new(3_000_000_102, "group g's gid"),
    ];
    // Whichever id the lease starts at (it turns), it gives the free one.
    for _ in 0..3 {
        let id = IdLease::take(&range, false, &named)
            .expect("the free id")
            .id;
        assert_eq!(id, 3_000_000_101);
    }
    // Held: every id is in use or an account's, and the error says both.
    let one = IdLease::take(&range, false, &named).expect("the free id");
    let err = IdLease::take(&range, false, &named)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("in use by running workers or named by accounts of /etc/passwd or /etc/group (2: 3000000100 (user a's uid), 3000000102 (group g's gid))"),
        "{err}"
    );
    drop(one);
    // Every id an account's: refused at once, naming them.
    let all = [
        named[0].clone(),
        AccountId::new(3_000_000_101, "user b's primary gid"),
        named[1].clone(),
    ];
    for derived in [false, true] {
        let err = IdLease::take(&range, derived, &all)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("every one of the 3 ids from 3000000100 is named by an account of /etc/passwd or /etc/group (3000000100 (user a's uid), 3000000101 (user b's primary gid), 3000000102 (group g's gid))")
                && err.contains("share that account's files and processes")
                && err.contains("that no account names")
                && err.contains("derived from the runner's user namespace") == derived,
            "{err}"
        );
    }
    // The control: without the accounts, all three ids are given.
    let held: Vec<IdLease> = (0..3)
        .map(|_| IdLease::take(&range, false, &[]).expect("a free id"))
        .collect();
    let mut ids: Vec<u32> = held.iter().map(|l| l.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![3_000_000_100, 3_000_000_101, 3_000_000_102]);
}

/// The account files' ids: each well-formed line of /etc/passwd names a
/// uid and a primary gid, of /etc/group a gid; comments, NIS compat lines
/// and malformed lines are passed over without hiding the rest.
#[test]
fn account_files_name_their_ids() {
    use policy::AccountId;
    let passwd = "root:x:0:0:root:/root:/bin/bash\n\
        # a comment:x:5000:5000\n\
        \n\
        +nisuser::::::\n\
        +@netgroup:x:6000:6000::/:/bin/sh\n\
        -baduser\n\
        alice:x:1000:1001:Alice \u{e9}:/home/alice:/bin/sh\r\n\
        short:x:7000\n\
        neg:x:-1:abc:::\n\
        big:x:4294967296:2000:::\n\
        svc:x:64999:64999::/:/usr/sbin/nologin";
    let group = "root:x:0:\nstaff:x:1002:alice\nbroken\nwheel:x::\n+:::\ndev:x:1001:";
    let ids: Vec<(u32, String)> = AccountId::parse(passwd, group)
        .into_iter()
        .map(|a| (a.id, a.account))
        .collect();
    let want: Vec<(u32, String)> = [
        (0, "group root's gid"),
        (0, "user root's primary gid"),
        (0, "user root's uid"),
        (1000, "user alice's uid"),
        (1001, "group dev's gid"),
        (1001, "user alice's primary gid"),
        (1002, "group staff's gid"),
        (2000, "user big's primary gid"),
        (64999, "user svc's primary gid"),
        (64999, "user svc's uid"),
    ]
    .iter()
    .map(|&(i, w)| (i, w.to_string()))
    .collect();
    assert_eq!(ids, want);
    assert!(AccountId::parse("", "").is_empty());
    let accounts = AccountId::parse(passwd, group);
    assert_eq!(AccountId::distinct_ids(&accounts), 6);
    let in_range = AccountId::within(&accounts, &policy::WorkerIds::new(1000, 2));
    assert_eq!(
        AccountId::words(&in_range, 2),
        "1000 (user alice's uid), 1001 (group dev's gid, user alice's primary gid)"
    );
    assert_eq!(
        AccountId::words(&accounts, 2),
        "0 (group root's gid, user root's primary gid, user root's uid), 1000 (user alice's uid), 4 more ids"
    );
    assert_eq!(
        AccountId::words(&accounts[..4], 1),
        "0 (group root's gid, user root's primary gid, user root's uid), 1 more id"
    );
}

/// A derived range avoids every id an account names, as it avoids the
/// runner's own: a run cut by an account below 1024 ids gives way to the
/// next one down, and the reason says accounts were avoided. The policy of
/// an explicit range (or the default one) that accounts name says how many
/// of its ids are skipped, and that none is left when none is.
#[test]
fn derived_ranges_avoid_the_accounts_ids_and_the_policy_counts_them() {
    use policy::{AccountId, IdentityFacts, WorkerIds, WorkerIdsSetting};
    let facts = |uids: &[(u32, u32)], accounts: &[u32]| IdentityFacts {
        mapped_uids: uids.to_vec(),
        mapped_gids: uids.to_vec(),
        reserved_ids: vec![0, 65534],
        accounts: accounts
            .iter()
            .map(|&i| AccountId::new(i, format!("user u{i}'s uid")))
            .collect(),
        workspace_idmap: Some(Ok(())),
        ..Default::default()
    };
    let derived = |f: &IdentityFacts| f.derived_worker_ids().map(|r| (r.first, r.count));
    let kube = [(0u32, 65536u32)];
    // (mapped, account ids, derived range)
    /// The ids mapped, the accounts' ids, the range derived (first, count).
    type Row<'a> = (&'a [(u32, u32)], &'a [u32], Option<(u32, u32)>);
    let table: &[Row] = &[
        // Accounts at the bottom (a container's useradd): the top is free.
        (&kube, &[0, 100, 1000, 1001, 1002], Some((64510, 1024))),
        // An account in the top block: the range moves below it.
        (&kube, &[65000], Some((63976, 1024))),
        // At the top block's lowest id: the run above it is 1023 ids, so
        // the next run down gives 1024 ending just below it.
        (&kube, &[64510], Some((63486, 1024))),
        // At its highest: the block shifts down by one.
        (&kube, &[65533], Some((64509, 1024))),
        // Accounts every 1000 ids: no run of 1024, the longest run entire
        // (the higher of equals): 64001..64999 has 999, 65001..65533 533.
        (
            &kube,
            &(1..=65).map(|k| k * 1000).collect::<Vec<_>>(),
            Some((64001, 999)),
        ),
        // A small map all of whose ids are accounts': none.
        (&[(0, 1003)], &[1000, 1001, 1002], None),
        // A small map with one free id left: that one.
        (&[(0, 1003)], &[1000, 1002], Some((1001, 1))),
        // No accounts: as before.
        (&kube, &[], Some((64510, 1024))),
    ];
    for (i, &(map, accounts, want)) in table.iter().enumerate() {
        let f = facts(map, accounts);
        assert_eq!(derived(&f), want, "row {i}");
        if let Some(r) = f.derived_worker_ids() {
            assert!(
                accounts.iter().all(|&a| !r.contains(a)),
                "row {i}: {r:?} holds an account's id"
            );
            assert!(r.check().is_ok() && f.maps(&r), "row {i}: {r:?}");
        }
    }

    // The reason names the accounts avoided.
    let f = facts(&kube, &[0, 1000, 65000]);
    let p = derive_identity(&[], &OperatorPolicy::default(), &probe(true), &f).unwrap();
    assert_eq!(p.worker_ids, Some(WorkerIds::new(63976, 1024)));
    assert!(p.worker_ids_accounts.is_empty());
    let why = p.worker_ids_derived.clone().expect("the reason");
    assert!(
        why.contains("every id an account of the runner's /etc/passwd or /etc/group names")
            && why.contains("3 distinct ids read, 2 of them from 1000 up: 1000 (user u1000's uid), 65000 (user u65000's uid)")
            && why.contains("LDAP or SSSD, are not seen"),
        "{why}"
    );
    let text = p.to_string();
    assert!(!text.contains("ids skipped"), "{text}");

    // An operator's range (and the default) keeps its ids; the policy holds
    // the accounts in it and the dry run counts them.
    let all = [(0u32, u32::MAX)];
    let d = WorkerIds::DEFAULT;
    let mut theirs = OperatorPolicy::default();
    theirs.worker_ids = Some(WorkerIdsSetting::Range(WorkerIds::new(5000, 3)));
    for (op, accounts, range, skipped, none_left) in [
        (
            &theirs,
            vec![4999, 5000, 5002, 5003],
            WorkerIds::new(5000, 3),
            2,
            false,
        ),
        (
            &theirs,
            vec![5000, 5001, 5002],
            WorkerIds::new(5000, 3),
            3,
            true,
        ),
        (
            &OperatorPolicy::default(),
            vec![1000, d.first + 7],
            d,
            1,
            false,
        ),
        (&theirs, vec![1000], WorkerIds::new(5000, 3), 0, false),
    ] {
        let f = facts(&all, &accounts);
        let p = derive_identity(&[], op, &probe(true), &f).unwrap();
        assert_eq!(p.worker_ids, Some(range));
        let held: Vec<u32> = p.worker_ids_accounts.iter().map(|a| a.id).collect();
        let want: Vec<u32> = accounts
            .iter()
            .copied()
            .filter(|&a| range.contains(a))
            .collect();
        assert_eq!(held, want);
        let text = p.to_string();
        let line = format!("{skipped} of its {} ids skipped: accounts of the runner's /etc/passwd or /etc/group name them", range.count);
        assert_eq!(text.contains(&line), skipped > 0, "{accounts:?}: {text}");
        assert_eq!(
            text.contains("that leaves none, so no worker can start"),
            none_left,
            "{text}"
        );
    }
}

#[test]
fn operator_layers_switch_off() {
    let mut op = OperatorPolicy::default();
    op.mode = Mode::BestEffort;
    op.layers.landlock = false;
    op.layers.limits = false;
    let p = derive_with(&[], &op, &probe(false), None).unwrap();
    assert!(p.landlock.is_none());
    assert!(p.limits.is_none());
    assert!(p.degraded.iter().any(|d| d.contains("switched off")));
}

#[test]
fn the_policy_prints() {
    let p = derive(&["filesystem.read"]);
    let text = p.render();
    assert!(
        text.contains("/ws") && text.contains("clone3") && text.contains("$SCRATCH"),
        "{text}"
    );
    let json = serde_json::to_value(&p).unwrap();
    assert!(json["filesystem"].as_array().unwrap().len() > 5);
}

#[test]
fn operator_policy_files_are_checked() {
    let dir = std::env::temp_dir().join(format!("nodus-policy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    assert!(OperatorPolicy::load(&write(
        "ok.json",
        r#"{"tcp_ports": [443], "limits": {"cpu_seconds": 5}}"#
    ))
    .is_ok());
    for bad in [
        r#"{"tcp_portz": []}"#,
        r#"{"limits": {"cpu": 5}}"#,
        r#"{"trust_classes": {"gold": []}}"#,
        "not json",
    ] {
        let err = OperatorPolicy::load(&write("bad.json", bad)).unwrap_err();
        assert_eq!(err.class(), "SandboxError", "{bad}");
    }
    assert!(OperatorPolicy::load(&dir.join("missing.json")).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An extension's own program names its dynamic loader; only a loader where
/// the system keeps them is granted execute, or a crafted PT_INTERP could name
/// any host file and have it opened to the worker.
#[test]
fn a_program_cannot_pick_its_loader_outside_the_system_libraries() {
    use nodus_extension::internals::sandbox::interpreter::elf_loader;
    let dir = std::env::temp_dir().join(format!("nodus-elf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "not a loader").unwrap();
    // A minimal ELF64 header with one PT_INTERP program header naming `secret`.
    let interp = format!("{}\0", secret.display());
    let mut elf = vec![0u8; 64 + 56];
    elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
    elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    elf[64..68].copy_from_slice(&3u32.to_le_bytes()); // PT_INTERP
    elf[64 + 8..64 + 16].copy_from_slice(&((64 + 56) as u64).to_le_bytes()); // p_offset
    elf[64 + 32..64 + 40].copy_from_slice(&(interp.len() as u64).to_le_bytes()); // p_filesz
    elf.extend_from_slice(interp.as_bytes());
    let crafted = dir.join("crafted");
    std::fs::write(&crafted, &elf).unwrap();
    assert_eq!(
        elf_loader(&crafted),
        None,
        "a loader outside /lib*, /usr/lib* must not be granted"
    );
    // The control: a real program's loader is found, under the system libraries.
    let real = elf_loader(Path::new("/bin/true")).expect("/bin/true has a loader");
    assert!(
        real.starts_with("/lib") || real.starts_with("/usr/lib"),
        "{}",
        real.display()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn egress_op(allow: &[&str]) -> OperatorPolicy {
    {
        let mut op = OperatorPolicy::default();
        op.egress = Some(serde_json::from_value(serde_json::json!({"allow": allow})).unwrap());
        op.tcp_ports = vec![443];
        op
    }
}

fn derive_manifest(
    m: serde_json::Value,
    op: &OperatorPolicy,
    probe: &Probe,
) -> nodus_extension::Result<Policy> {
    let m = Manifest::parse(m.to_string().as_bytes(), "test").unwrap();
    policy::derive(&Inputs {
        manifest: &m,
        extension_dir: Path::new("/ext"),
        workspace: None,
        operator: op,
        program: &program(),
        identity: &Default::default(),
        probe,
    })
}

#[test]
fn egress_puts_the_worker_in_its_own_network_with_the_proxy_port_only() {
    let op = egress_op(&["api.example.com:443"]);
    let p = derive_with(&["network.outbound"], &op, &probe(false), None).unwrap();
    assert!(
        p.namespaces.net,
        "egress needs the worker's own network namespace"
    );
    let e = p.egress.as_ref().expect("an egress plan");
    assert_eq!(e.allow.len(), 1);
    // Landlock: the proxy's port only (tcp_ports is the proxy's business now).
    let ll = p.landlock.as_ref().unwrap();
    assert!(ll.tcp_handled);
    assert_eq!(ll.tcp_connect, Some(vec![e.proxy.port()]));
    // seccomp still lets it make the IP socket it reaches the proxy with.
    assert_eq!(
        action(&p, "socket"),
        Some("if socket_network_families_and_unix".into())
    );
    assert_eq!(p.environment["HTTPS_PROXY"], format!("http://{}", e.proxy));
    assert_eq!(p.environment["no_proxy"], "");
    assert!(
        p.render().contains("granted: api.example.com:443"),
        "{}",
        p.render()
    );
    // Root too.
    let p = derive_with(&["network.outbound"], &op, &probe(true), None).unwrap();
    assert!(p.namespaces.net && p.egress.is_some());
}

#[test]
fn without_egress_or_without_network_outbound_nothing_changes() {
    let p = derive_with(
        &["network.outbound"],
        &OperatorPolicy::default(),
        &probe(false),
        None,
    )
    .unwrap();
    assert!(!p.namespaces.net && p.egress.is_none());
    assert!(!p.environment.contains_key("HTTP_PROXY"));
    let op = egress_op(&["api.example.com:443"]);
    let p = derive_with(&["tool.invoke"], &op, &probe(false), None).unwrap();
    assert!(p.namespaces.net && p.egress.is_none());
    // No network socket; unix sockets only, in the private root.
    assert_eq!(action(&p, "socket"), Some("if socket_unix".into()));
}

#[test]
fn egress_without_a_network_namespace_is_refused_in_both_modes() {
    let mut no_netns = probe(false);
    no_netns.network_namespaces = false;
    let mut no_userns = probe(false);
    no_userns.user_namespaces = false;
    for mode in [Mode::Strict, Mode::BestEffort] {
        let mut op = egress_op(&["api.example.com:443"]);
        op.mode = mode;
        for pr in [&no_netns, &no_userns] {
            let e = derive_with(&["network.outbound"], &op, pr, None).unwrap_err();
            assert_eq!(e.class(), "SandboxError");
            assert!(e.to_string().contains("refused in every mode"), "{e}");
        }
        op.layers.namespaces = false;
        let e = derive_with(&["network.outbound"], &op, &probe(true), None).unwrap_err();
        assert!(e.to_string().contains("namespaces layer off"), "{e}");
    }
}

#[test]
fn the_manifest_request_narrows_the_grant_and_a_malformed_one_is_refused() {
    let op = egress_op(&["api.example.com:443", "*.example.org:*"]);
    let m = |egress: serde_json::Value| {
        serde_json::json!({"name": "t.ext", "version": "1", "description": "d",
            "capabilities": ["network.outbound"], "egress": egress})
    };
    let p = derive_manifest(
        m(serde_json::json!(["cdn.example.org:443", "evil.com:443"])),
        &op,
        &probe(false),
    )
    .unwrap();
    let e = p.egress.unwrap();
    assert_eq!(
        e.allow.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        ["cdn.example.org:443"]
    );
    assert_eq!(e.not_granted, ["evil.com:443"]);
    assert_eq!(e.requested.unwrap().len(), 2);
    let err = derive_manifest(
        m(serde_json::json!("api.example.com:443")),
        &op,
        &probe(false),
    )
    .unwrap_err();
    assert_eq!(err.class(), "ManifestError", "{err}");
    // Without an operator allowlist the request changes nothing (network.outbound as today).
    let p = derive_manifest(
        m(serde_json::json!(["api.example.com:443"])),
        &OperatorPolicy::default(),
        &probe(false),
    )
    .unwrap();
    assert!(p.egress.is_none() && !p.namespaces.net);
}

/// A probe without a pid namespace (and so without a private /proc).
fn probe_without_pid_ns() -> Probe {
    Probe {
        pid_namespaces: false,
        ..probe(false)
    }
}

#[test]
fn a_mount_namespace_brings_the_private_root() {
    let p = derive(&[]);
    let r = p
        .private_root
        .expect("a private root with a mount namespace");
    assert!(r.proc, "a /proc of its own pid namespace");
    assert!(!r.devpts, "no devpts without subprocess.run");
    assert_eq!(r.shm_bytes, 64 << 20, "the default /dev/shm size");
    let r = derive(&["subprocess.run"]).private_root.unwrap();
    assert!(r.devpts, "a devpts with subprocess.run");
    // shm_bytes is a limit the operator may set.
    let op: OperatorPolicy = serde_json::from_str(r#"{"limits": {"shm_bytes": 1048576}}"#).unwrap();
    let r = derive_with(&[], &op, &probe(true), None)
        .unwrap()
        .private_root
        .unwrap();
    assert_eq!(r.shm_bytes, 1 << 20);
    // No pid namespace: a root without /proc.
    let p = derive_with(
        &[],
        &OperatorPolicy::default(),
        &probe_without_pid_ns(),
        None,
    )
    .unwrap();
    assert!(!p.private_root.unwrap().proc);
    // No mount namespace: no private root, and the printed policy says who carries it.
    let op: OperatorPolicy =
        serde_json::from_str(r#"{"mode": "best-effort", "layers": {"namespaces": false}}"#)
            .unwrap();
    let p = derive_with(&[], &op, &probe(false), None).unwrap();
    assert!(p.private_root.is_none());
    assert!(
        p.render().contains("Landlock alone confines files"),
        "{}",
        p.render()
    );
    assert_eq!(
        p.environment.get("MALLOC_ARENA_MAX").map(String::as_str),
        Some("2")
    );
}

#[test]
fn seccomp_relaxes_only_what_the_namespaces_make_harmless() {
    let allow = Some("allow".to_string());
    let eperm = Some("EPERM".to_string());
    // With its own pid namespace and private root.
    let p = derive(&[]);
    for n in ["setsid", "setpgid", "setpriority", "listen"] {
        assert_eq!(action(&p, n), allow, "{n}");
    }
    assert_eq!(action(&p, "socket"), Some("if socket_unix".into()));
    let p = derive(&["network.outbound"]);
    assert_eq!(
        action(&p, "socket"),
        Some("if socket_network_families_and_unix".into())
    );
    assert_eq!(
        action(&p, "listen"),
        eperm,
        "an inet socket could listen (autobind)"
    );
    // Without a pid namespace: setsid would let a process outlive the worker's group.
    let p = derive_with(
        &[],
        &OperatorPolicy::default(),
        &probe_without_pid_ns(),
        None,
    )
    .unwrap();
    for n in ["setsid", "setpgid", "setpriority"] {
        assert_eq!(action(&p, n), eperm, "{n}");
    }
    // Without a mount namespace the host's sockets are in view: no AF_UNIX.
    let op: OperatorPolicy =
        serde_json::from_str(r#"{"mode": "best-effort", "layers": {"namespaces": false}}"#)
            .unwrap();
    let p = derive_with(&[], &op, &probe(false), None).unwrap();
    assert_eq!(action(&p, "socket"), eperm);
    assert_eq!(action(&p, "listen"), eperm);
    let p = derive_with(&["network.outbound"], &op, &probe(false), None).unwrap();
    assert_eq!(
        action(&p, "socket"),
        Some("if socket_network_families".into())
    );
    // In the host's network namespace (network.outbound) with Landlock below
    // ABI 6 (no abstract_unix_socket scope), the host's abstract names would
    // be reachable: no AF_UNIX, though there is a private root. In a network
    // namespace of its own (no network.outbound) they are not.
    let abi5 = Probe {
        landlock_abi: 5,
        ..probe(false)
    };
    let p = derive_with(
        &["network.outbound"],
        &OperatorPolicy::default(),
        &abi5,
        None,
    )
    .unwrap();
    assert!(p.private_root.is_some());
    assert_eq!(
        action(&p, "socket"),
        Some("if socket_network_families".into())
    );
    let p = derive_with(&[], &OperatorPolicy::default(), &abi5, None).unwrap();
    assert_eq!(action(&p, "socket"), Some("if socket_unix".into()));
}

#[test]
fn operator_environment_and_extension_sections() {
    let op: OperatorPolicy = serde_json::from_value(serde_json::json!({
        "environment": {"pass": ["HTTPS_PROXY"], "set": {"TZ": "UTC", "LANG": "de_DE.UTF-8"}},
        "read_only_paths": ["/srv/shared"],
        "limits": {"cpu_seconds": 5, "open_files": 100},
        "tcp_ports": [443],
        "extensions": {
            "t.ext": {
                "read_only_paths": ["/srv/models"],
                "limits": {"cpu_seconds": 30},
                "tcp_ports": [8443],
                "environment": {"pass": ["SSL_CERT_FILE"], "set": {"MODEL": "small"}}
            },
            "other.ext": {"read_only_paths": ["/srv/other"], "limits": {"cpu_seconds": 1}}
        }
    }))
    .unwrap();
    let p = derive_with(&["network.outbound"], &op, &probe(false), None).unwrap();
    assert_eq!(p.environment.get("TZ").map(String::as_str), Some("UTC"));
    assert_eq!(
        p.environment.get("LANG").map(String::as_str),
        Some("de_DE.UTF-8")
    );
    assert_eq!(
        p.environment.get("MODEL").map(String::as_str),
        Some("small")
    );
    assert_eq!(
        p.environment.get("TMPDIR").map(String::as_str),
        Some("$SCRATCH")
    );
    assert_eq!(p.environment_pass, vec!["HTTPS_PROXY", "SSL_CERT_FILE"]);
    assert_eq!(rule(&p, "/srv/shared"), Some(Access::Read));
    assert_eq!(rule(&p, "/srv/models"), Some(Access::Read));
    assert_eq!(rule(&p, "/srv/other"), None, "another extension's section");
    let l = p.limits.unwrap();
    assert_eq!(
        (l.cpu_seconds, l.open_files),
        (30, 100),
        "the section overrides by name"
    );
    assert_eq!(
        p.landlock.as_ref().unwrap().tcp_connect,
        Some(vec![8443]),
        "the section's ports replace"
    );
    assert!(p
        .render()
        .contains("passed from the runner's environment: HTTPS_PROXY SSL_CERT_FILE"));
    // An extension without a section gets the global policy.
    let m = manifest(&["network.outbound"], "dev");
    let m = Manifest {
        name: "third.ext".into(),
        ..m
    };
    let p = policy::derive(&Inputs {
        manifest: &m,
        extension_dir: Path::new("/ext"),
        workspace: None,
        operator: &op,
        program: &program(),
        identity: &Default::default(),
        probe: &probe(false),
    })
    .unwrap();
    assert_eq!(p.limits.unwrap().cpu_seconds, 5);
    assert_eq!(p.landlock.as_ref().unwrap().tcp_connect, Some(vec![443]));
    assert!(!p.environment.contains_key("MODEL"));
}

#[test]
fn operator_policy_refuses_proc_paths_and_runner_variables() {
    let dir = std::env::temp_dir().join(format!("nodus-policy-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("p.json");
    let load = |text: &str| {
        std::fs::write(&f, text).unwrap();
        OperatorPolicy::load(&f)
    };
    assert!(load(r#"{"environment": {"pass": ["TZ"], "set": {"A": "b"}}, "extensions": {"x.y": {"limits": {"shm_bytes": 1}}}}"#).is_ok());
    for (bad, says) in [
        (r#"{"read_only_paths": ["/proc"]}"#, "private root"),
        (r#"{"read_only_paths": ["/proc/self"]}"#, "/proc"),
        (r#"{"read_only_paths": ["/proc/1/root/etc"]}"#, "/proc"),
        (
            r#"{"extensions": {"x.y": {"read_only_paths": ["/proc/self"]}}}"#,
            "extensions.x.y",
        ),
        (
            r#"{"extensions": {"x.y": {"limits": {"cpu": 1}}}}"#,
            "unknown field `cpu`",
        ),
        (r#"{"extensions": {"x.y": {"color": 1}}}"#, "unknown field"),
        (
            r#"{"environment": {"set": {"TMPDIR": "/x"}}}"#,
            "set by the runner",
        ),
        (
            r#"{"environment": {"pass": ["HOME"]}}"#,
            "set by the runner",
        ),
        (
            r#"{"environment": {"pass": ["A=B"]}}"#,
            "not a variable name",
        ),
    ] {
        let err = load(bad).unwrap_err();
        assert_eq!(err.class(), "SandboxError", "{bad}");
        assert!(err.to_string().contains(says), "{bad}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// RLIMIT_AS is the memory bound only where no memory cgroup holds the
/// worker, and then at `ADDRESS_SPACE_PER_MEMORY` × `memory_bytes`: threads
/// reserve address space they never touch (a 64-thread numpy worker 2.7 GiB
/// for 75 MiB resident, docs/deploy.md), which the old bound,
/// `memory_bytes` itself, refused. With a memory cgroup it is not set. The
/// guarantee names RLIMIT_AS as an address-space bound, the reason says why,
/// and the operator's `limits` move it: `memory_bytes` scales it,
/// `address_space_bytes` sets it (with or without a cgroup, per extension too).
#[test]
fn rlimit_as_is_the_fallback_memory_bound_at_a_multiple_of_memory() {
    use nodus_extension::policy::{Guarantee, ADDRESS_SPACE_PER_MEMORY};
    let memory = |p: &Policy| {
        p.guarantees
            .iter()
            .find(|g| g.guarantee == Guarantee::Memory)
            .cloned()
            .unwrap()
    };
    let with_cgroup = {
        let mut p = probe(false);
        p.memory_cgroup = Some("/sys/fs/cgroup/memory/nodus".into());
        p
    };
    let op = |v: serde_json::Value| -> OperatorPolicy { serde_json::from_value(v).unwrap() };
    let gib = 1u64 << 30;
    // VmPeak of the compat scenario numpy_threads under ext-runner as uid
    // 65534 (64 threads calling OpenBLAS, MALLOC_ARENA_MAX=2): 2831552 kB.
    let numpy_64_threads = 2_831_552u64 * 1024;

    // No memory cgroup (an unprivileged runner here): RLIMIT_AS is the bound.
    let p = derive(&[]);
    let (l, a) = (p.limits.unwrap(), p.address_space.clone().unwrap());
    assert_eq!(ADDRESS_SPACE_PER_MEMORY, 4);
    assert_eq!((l.memory_bytes, a.bytes), (gib, Some(4 * gib)));
    assert!(
        l.memory_bytes < numpy_64_threads && numpy_64_threads < 4 * gib,
        "the default holds 64 numpy threads, memory_bytes alone did not"
    );
    assert!(
        a.why
            .starts_with("4 × limits.memory_bytes: no memory cgroup")
            && a.why.contains("not on resident memory")
            && a.why.contains("threads reserve"),
        "{}",
        a.why
    );
    let m = memory(&p);
    assert_eq!(m.kept_by, vec![Mechanism::RlimitAs]);
    assert!(m
        .missing
        .iter()
        .any(|x| x.mechanism == Mechanism::MemoryCgroup
            && x.why.contains("RLIMIT_AS bounds address space instead")));
    assert_eq!(
        Mechanism::RlimitAs.describe(),
        "RLIMIT_AS (address space, not resident memory)"
    );
    let text = p.render();
    assert!(
        text.contains("  RLIMIT_AS 4 GiB of address space: 4 × limits.memory_bytes: "),
        "{text}"
    );
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["address_space"]["bytes"], 4 * gib);

    // A memory cgroup: it holds memory, RLIMIT_AS is not set, and says why.
    let p = derive_with(&[], &OperatorPolicy::default(), &with_cgroup, None).unwrap();
    let a = p.address_space.clone().unwrap();
    assert_eq!(a.bytes, None);
    assert!(
        a.why
            .starts_with("not set: the memory cgroup bounds memory"),
        "{}",
        a.why
    );
    let m = memory(&p);
    assert_eq!(m.kept_by, vec![Mechanism::MemoryCgroup]);
    assert!(
        m.missing
            .iter()
            .any(|x| x.mechanism == Mechanism::RlimitAs && x.why == a.why),
        "{m:?}"
    );
    assert!(p
        .render()
        .contains("  RLIMIT_AS not set: the memory cgroup"));
    assert!(serde_json::to_value(&p).unwrap()["address_space"]["bytes"].is_null());

    // The operator's memory_bytes scales it; address_space_bytes sets it,
    // and with a cgroup adds it as a second bound.
    let small = op(serde_json::json!({"limits": {"memory_bytes": 256u64 << 20}}));
    let p = derive_with(&[], &small, &probe(false), None).unwrap();
    assert_eq!(p.address_space.unwrap().bytes, Some(1 << 30));
    let p = derive_with(&[], &small, &with_cgroup, None).unwrap();
    assert_eq!(p.address_space.unwrap().bytes, None);
    let exact = op(
        serde_json::json!({"limits": {"memory_bytes": 256u64 << 20, "address_space_bytes": 256u64 << 20}}),
    );
    let p = derive_with(&[], &exact, &probe(false), None).unwrap();
    let a = p.address_space.clone().unwrap();
    assert_eq!(a.bytes, Some(256 << 20));
    assert!(
        a.why
            .starts_with("limits.address_space_bytes, the operator's"),
        "{}",
        a.why
    );
    let p = derive_with(&[], &exact, &with_cgroup, None).unwrap();
    assert_eq!(p.address_space.clone().unwrap().bytes, Some(256 << 20));
    let kept = memory(&p).kept_by;
    assert!(
        kept.len() == 2
            && kept.contains(&Mechanism::RlimitAs)
            && kept.contains(&Mechanism::MemoryCgroup),
        "{kept:?}"
    );
    // Per extension, by manifest name.
    let section = op(serde_json::json!({
        "extensions": {"t.ext": {"limits": {"address_space_bytes": 8u64 << 30}}}
    }));
    let p = derive_with(&[], &section, &probe(false), None).unwrap();
    assert_eq!(p.address_space.unwrap().bytes, Some(8 << 30));
    // A memory limit near u64::MAX saturates (RLIM_INFINITY), never wraps.
    let huge = op(serde_json::json!({"limits": {"memory_bytes": u64::MAX / 2}}));
    let p = derive_with(&[], &huge, &probe(false), None).unwrap();
    assert_eq!(p.address_space.unwrap().bytes, Some(u64::MAX));
    // The limits layer off: no decision at all.
    let mut off = OperatorPolicy::default();
    off.mode = Mode::BestEffort;
    off.layers.limits = false;
    let p = derive_with(&[], &off, &probe(false), None).unwrap();
    assert!(p.address_space.is_none());
}
