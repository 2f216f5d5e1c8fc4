//! Each deployment environment the suite builds on this machine is what it
//! claims: the same facts script runs outside (the control: the check can
//! fail) and inside, and the difference is exactly the environment's.

mod common;

use common::envs::{facts, Env};
use common::sandbox::Who;
use serde_json::{json, Value};

fn ready(env: Env, who: Who) -> bool {
    env.available() && who.available()
}

fn host(who: Who) -> Value {
    facts(Env::Host, who)
}

#[test]
fn docker_like_refuses_namespaces_mounts_and_clone3_and_drops_cap_sys_admin() {
    if !ready(Env::DockerLike, Who::Root) {
        return;
    }
    let (out, inside) = (host(Who::Root), facts(Env::DockerLike, Who::Root));
    for k in ["unshare_user", "unshare_mount", "unshare_user_mount"] {
        assert_eq!(out[k], "ok", "control {k}: {out}");
        assert_eq!(inside[k], "EPERM", "{k}: {inside}");
    }
    assert_ne!(out["clone3"], "ENOSYS", "control: {out}");
    assert_eq!(inside["clone3"], "ENOSYS", "{inside}");
    assert_eq!(out["cap_sys_admin"], true, "control: {out}");
    assert_eq!(inside["cap_sys_admin"], false, "{inside}");
    // Landlock stays (moby allows its calls), as does root.
    assert_eq!(inside["landlock_version"], out["landlock_version"]);
    assert_eq!(inside["uid"], 0);
}

#[test]
fn apparmor_userns_allows_a_bare_user_namespace_and_nothing_in_it() {
    if !ready(Env::AppArmorUserns, Who::Nobody) {
        return;
    }
    let (out, inside) = (host(Who::Nobody), facts(Env::AppArmorUserns, Who::Nobody));
    for k in ["unshare_user", "unshare_user_mount", "user_with_map"] {
        assert_eq!(out[k], "ok", "control {k}: {out}");
    }
    assert_eq!(inside["unshare_user"], "ok", "{inside}");
    assert_eq!(inside["unshare_user_mount"], "EPERM", "{inside}");
    assert_eq!(inside["user_with_map"], "EPERM", "{inside}");
    assert_eq!(inside["uid"], 65534);
}

#[test]
fn landlock_abi_n_is_answered_and_newer_rights_are_refused() {
    if !ready(Env::LandlockAbi(1), Who::Root) {
        return;
    }
    let out = host(Who::Root);
    let real = out["landlock_version"].as_u64().unwrap_or(0);
    if real < 6 {
        eprintln!("SKIP: the ABI-faking supervisor needs a kernel with Landlock ABI 6 or later (this one: {real})");
        return;
    }
    for k in 1..=6 {
        assert_eq!(
            out["landlock_rulesets"][k.to_string()],
            "ok",
            "control: {out}"
        );
    }
    for n in 1..=6u64 {
        let inside = facts(Env::LandlockAbi(n as u8), Who::Root);
        assert_eq!(inside["landlock_version"], n, "{inside}");
        for k in 1..=6u64 {
            let got = &inside["landlock_rulesets"][k.to_string()];
            if k <= n {
                assert_eq!(got, "ok", "ABI {n}, rights of {k}: {inside}");
            } else {
                // A field the ABI-n struct lacks, set: E2BIG; unknown rights: EINVAL.
                assert!(
                    *got == json!("EINVAL") || *got == json!("E2BIG"),
                    "ABI {n}, rights of {k}: {inside}"
                );
            }
        }
    }
}

#[test]
fn ubuntu_2404_is_the_apparmor_restriction_with_landlock_4() {
    if !ready(Env::Ubuntu2404, Who::Nobody) {
        return;
    }
    let inside = facts(Env::Ubuntu2404, Who::Nobody);
    assert_eq!(inside["landlock_version"], 4, "{inside}");
    assert_eq!(inside["unshare_user"], "ok", "{inside}");
    assert_eq!(inside["unshare_user_mount"], "EPERM", "{inside}");
    assert_eq!(inside["user_with_map"], "EPERM", "{inside}");
    assert_eq!(inside["landlock_rulesets"]["4"], "ok", "{inside}");
    assert_ne!(inside["landlock_rulesets"]["5"], "ok", "{inside}");
}

#[test]
fn no_landlock_answers_enosys() {
    if !ready(Env::NoLandlock, Who::Root) {
        return;
    }
    let (out, inside) = (host(Who::Root), facts(Env::NoLandlock, Who::Root));
    assert!(out["landlock_version"].is_u64(), "control: {out}");
    assert_eq!(inside["landlock_version"], "ENOSYS", "{inside}");
    assert_eq!(inside["landlock_rulesets"]["1"], "ENOSYS", "{inside}");
}

#[test]
fn nested_user_namespace_with_zero_limits_refuses_every_namespace() {
    if !ready(Env::UsernsLimits, Who::Root) || !Who::Nobody.available() {
        return;
    }
    let out = host(Who::Root);
    assert_ne!(out["max_user_namespaces"], "0", "control: {out}");
    assert_eq!(out["unshare_mount"], "ok", "control: {out}");
    for who in Who::BOTH {
        let inside = facts(Env::UsernsLimits, who);
        assert_eq!(inside["max_user_namespaces"], "0", "{inside}");
        assert_eq!(
            inside["unshare_user"],
            "ENOSPC",
            "{}: {inside}",
            who.label()
        );
        assert_eq!(
            inside["unshare_user_mount"],
            "ENOSPC",
            "{}: {inside}",
            who.label()
        );
        assert_eq!(inside["uid"], who.uid());
    }
    // Root of the namespace, with every capability in it, is still refused.
    let root = facts(Env::UsernsLimits, Who::Root);
    assert_eq!(root["unshare_mount"], "ENOSPC", "{root}");
    assert_eq!(
        root["uid_map"],
        serde_json::json!(["0", "0", "1", "65534", "65534", "1"]),
        "{root}"
    );
    // The Kubernetes/Podman-like one: the same limits, ids 0..65535 mapped.
    for who in Who::BOTH {
        let inside = facts(Env::UsernsLimitsMapped, who);
        assert_eq!(
            inside["unshare_user"],
            "ENOSPC",
            "{}: {inside}",
            who.label()
        );
        assert_eq!(inside["uid"], who.uid());
        for map in ["uid_map", "gid_map"] {
            assert_eq!(
                inside[map],
                serde_json::json!(["0", "0", "65536"]),
                "{inside}"
            );
        }
    }
}

#[test]
fn cgroup_views_show_v2_only_nothing_or_read_only_mounts() {
    if !ready(Env::CgroupV2, Who::Root) {
        return;
    }
    let out = host(Who::Root);
    let mounts = out["cgroup_mounts"].as_array().cloned().unwrap_or_default();
    assert!(!mounts.is_empty(), "control: no cgroup mounts here: {out}");

    let v2 = facts(Env::CgroupV2, Who::Root);
    assert_eq!(
        v2["cgroup_mounts"],
        json!([["/sys/fs/cgroup", "cgroup2", "rw"]]),
        "{v2}"
    );
    let none = facts(Env::CgroupNone, Who::Root);
    assert_eq!(none["cgroup_mounts"], json!([]), "{none}");
    assert_eq!(none["cgroup_mkdir"], "ENOENT", "{none}");

    let ro = facts(Env::CgroupRo, Who::Root);
    let ro_mounts = ro["cgroup_mounts"].as_array().cloned().unwrap_or_default();
    assert_eq!(ro_mounts.len(), mounts.len(), "{ro}");
    assert!(ro_mounts.iter().all(|m| m[2] == "ro"), "{ro}");
    if out["cgroup_mkdir"] == "ok" {
        assert_eq!(ro["cgroup_mkdir"], "EROFS", "{ro}");
    } else {
        eprintln!("NOTE: no writable v1 pids hierarchy here ({}); the read-only view is judged by its mounts", out["cgroup_mkdir"]);
    }
    // The views are private: the host's mounts are as they were.
    assert_eq!(host(Who::Root)["cgroup_mounts"], out["cgroup_mounts"]);
}

#[test]
fn a_real_docker_container_has_the_default_profile() {
    if !ready(Env::Docker, Who::Root) {
        return;
    }
    let inside = facts(Env::Docker, Who::Root);
    assert_eq!(inside["uid"], 0, "{inside}");
    assert_eq!(inside["cap_sys_admin"], false, "{inside}");
    assert_eq!(inside["unshare_user"], "EPERM", "{inside}");
    assert_eq!(inside["unshare_mount"], "EPERM", "{inside}");
    let nobody = facts(Env::Docker, Who::Nobody);
    assert_eq!(nobody["uid"], 65534, "{nobody}");
    assert_eq!(nobody["unshare_user"], "EPERM", "{nobody}");
    println!("Docker container facts: {inside}");
}

/// Rootless Podman: the container's root is the service user on the host,
/// its other ids 65536 of the user's subordinate ids (the container's
/// uid_map); Podman's default profile refuses namespaces as Docker's does.
#[test]
fn a_rootless_podman_container_is_a_service_users_user_namespace() {
    if !ready(Env::Podman, Who::Root) {
        return;
    }
    let inside = facts(Env::Podman, Who::Root);
    assert_eq!(inside["uid"], 0, "{inside}");
    assert_eq!(inside["cap_sys_admin"], false, "{inside}");
    assert_eq!(inside["unshare_mount"], "EPERM", "{inside}");
    let map: Vec<&str> = inside["uid_map"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let service = nix::unistd::User::from_name("nodus-podman")
        .unwrap()
        .expect("the service user scripts/podman-env made");
    // 0 -> the service user, 1.. -> 65536 subordinate ids.
    assert_eq!(&map[..3], ["0", &service.uid.to_string(), "1"], "{inside}");
    assert_eq!(map.get(5), Some(&"65536"), "{inside}");
    assert_ne!(service.uid.as_raw(), 0);
    let nobody = facts(Env::Podman, Who::Nobody);
    assert_eq!(nobody["uid"], 65534, "{nobody}");
    println!("rootless Podman container facts: {inside}");
}

/// `ext-runner probe --json` as `who` in `env`.
fn runner_probe(env: Env, who: Who) -> Value {
    let out = env
        .command(who, common::sandbox::runner(who))
        .args(["probe", "--json"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("ext-runner probe");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("probe in {}: {out:?}", env.label()))
}

#[test]
fn the_probe_reports_each_environment_with_its_cause_and_a_verdict() {
    if !ready(Env::DockerLike, Who::Root) || !Who::Nobody.available() {
        return;
    }
    let host = runner_probe(Env::Host, Who::Root);
    assert!(host["namespace_failure"].is_null(), "control: {host}");
    assert!(
        host["verdict"]
            .as_str()
            .unwrap_or("")
            .starts_with("verdict: strict mode starts"),
        "{host}"
    );

    // Docker's profile: unshare refused, named as a container's seccomp profile.
    let docker = runner_probe(Env::DockerLike, Who::Root);
    assert_eq!(docker["mount_namespaces"], false, "{docker}");
    let why = docker["namespace_failure"].as_str().unwrap_or("");
    assert!(
        why.starts_with("unshare(") && why.contains("EPERM") && why.contains("seccomp profile"),
        "{docker}"
    );

    // Ubuntu 24.04: the ABI the kernel answers, what it lacks, the AppArmor
    // restriction named, and strict mode still starts.
    let ubuntu = runner_probe(Env::Ubuntu2404, Who::Nobody);
    assert_eq!(ubuntu["landlock_abi"], 4, "{ubuntu}");
    let missing = ubuntu["landlock_missing"].to_string();
    assert!(
        missing.contains("IOCTL_DEV") && missing.contains("scopes"),
        "{ubuntu}"
    );
    assert!(!missing.contains("TCP"), "{ubuntu}");
    assert_eq!(ubuntu["user_namespaces"], false, "{ubuntu}");
    assert!(
        ubuntu["namespace_failure"]
            .as_str()
            .unwrap_or("")
            .contains("AppArmor"),
        "{ubuntu}"
    );
    assert!(
        ubuntu["verdict"]
            .as_str()
            .unwrap_or("")
            .starts_with("verdict: strict mode starts"),
        "{ubuntu}"
    );

    // Every ABI from 1 to 6 is reported as such (no longer 0 below 6).
    for n in 1..=6u8 {
        let p = runner_probe(Env::LandlockAbi(n), Who::Root);
        assert_eq!(p["landlock_abi"], n, "{p}");
    }
    // Without Landlock the private root keeps file reads, but nothing keeps
    // exec to the interpreter: strict refuses a worker without subprocess.run.
    let none = runner_probe(Env::NoLandlock, Who::Root);
    assert_eq!(none["landlock_abi"], 0, "{none}");
    let verdict = none["verdict"].as_str().unwrap_or("");
    assert!(
        verdict.contains("exec: lost") && !verdict.contains("file_reads: lost"),
        "{none}"
    );

    // A namespace limit of 0: ENOSPC, named as the limit.
    let limited = runner_probe(Env::UsernsLimits, Who::Nobody);
    let why = limited["namespace_failure"].as_str().unwrap_or("");
    assert!(
        why.contains("ENOSPC") && why.contains("user.max_*_namespaces"),
        "{limited}"
    );

    // Read-only cgroups: no pids cgroup, and strict mode starts root's
    // workers all the same, each a uid of its own that RLIMIT_NPROC binds
    // (issue 12 item 3); `tasks` then rests on that one layer.
    let ro = runner_probe(Env::CgroupRo, Who::Root);
    assert!(ro["pids_cgroup"].is_null(), "{ro}");
    let verdict = ro["verdict"].as_str().unwrap_or("");
    assert!(
        verdict.starts_with("verdict: strict mode starts") && verdict.contains("tasks"),
        "{ro}"
    );
    // Root in a user namespace that maps only 0 and 65534: no uid of its
    // own for the workers, so strict refuses, naming it.
    let nested = runner_probe(Env::UsernsLimits, Who::Root);
    assert!(
        nested["verdict"]
            .as_str()
            .unwrap_or("")
            .contains("unprivileged_identity: lost"),
        "{nested}"
    );
    // With 0..65535 mapped (Kubernetes, Podman): a range derived from the
    // map, so strict starts.
    let mapped = runner_probe(Env::UsernsLimitsMapped, Who::Root);
    assert!(
        mapped["verdict"]
            .as_str()
            .unwrap_or("")
            .starts_with("verdict: strict mode starts"),
        "{mapped}"
    );
}

/// cgroup v2, by view (this machine's v2 hierarchy has no `pids` or
/// `memory` controller, so nothing here is enforced by the kernel): in a
/// subtree delegated as systemd's `DelegateSubgroup=` makes it, the probe
/// picks the runner's parent cgroup for both controllers, and a root worker
/// gets one cgroup there with `pids.max` and `memory.max` from the policy,
/// joins it before exec (it wrote 0 to its `cgroup.procs`), and runs without
/// RLIMIT_AS, all read from outside (the runner's `/proc/PID/root`, the
/// worker's `/proc/PID/limits`). The control: in the real v2-only view (no
/// controllers) the probe finds neither, says why, and the worker's
/// address space is limited to 4 × `memory_bytes` (the fallback).
#[test]
fn a_delegated_cgroup_v2_subtree_gets_the_workers_cgroup() {
    use common::sandbox::{Launch, Reply};
    if !ready(Env::CgroupV2Delegated, Who::Root) {
        return;
    }
    let bare = runner_probe(Env::CgroupV2, Who::Root);
    assert!(bare["memory_cgroup"].is_null(), "control: {bare}");
    assert!(
        bare["memory_cgroup_missing"]
            .as_str()
            .unwrap_or("")
            .contains("`memory` is not among the controllers"),
        "control: {bare}"
    );
    let p = runner_probe(Env::CgroupV2Delegated, Who::Root);
    let parent = p["memory_cgroup"].as_str().unwrap_or("").to_string();
    assert!(
        parent.starts_with("/sys/fs/cgroup/nodus-envwrap-") && !parent.ends_with("/runner"),
        "{p}"
    );
    assert_eq!(p["pids_cgroup"], p["memory_cgroup"], "{p}");
    assert_eq!(p["cgroup_v2_delegation"], true, "{p}");
    assert!(
        p["verdict"]
            .as_str()
            .unwrap_or("")
            .starts_with("verdict: strict mode starts"),
        "{p}"
    );

    let address_space = |pid: i32| -> String {
        std::fs::read_to_string(format!("/proc/{pid}/limits"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("Max address space"))
            .map(|l| l.split_whitespace().nth(3).unwrap_or("").to_string())
            .unwrap_or_default()
    };
    let limit = 768u64 << 20;
    let policy = serde_json::json!({"limits": {"processes": 48, "memory_bytes": limit}});
    // Control: no controllers, so RLIMIT_AS is the memory bound, at 4 ×
    // memory_bytes (and, root without a pids cgroup, strict would refuse:
    // best-effort).
    let mut best = policy.clone();
    best["mode"] = "best-effort".into();
    let mut s = Launch::new(Who::Root, &["subprocess.run"])
        .in_env(Env::CgroupV2)
        .policy(best)
        .start();
    let r = s.exec("result = 1");
    let control_as = s.worker_pid().map(address_space).unwrap_or_default();
    s.finish();
    assert!(matches!(r, Reply::Value(_)), "control: {r:?}");

    let mut s = Launch::new(Who::Root, &["subprocess.run"])
        .in_env(Env::CgroupV2Delegated)
        .policy(policy)
        .start();
    let r = s.exec("result = 1");
    assert!(matches!(r, Reply::Value(_)), "{r:?}");
    let worker = s.worker_pid().expect("the worker");
    // The runner: envwrap's child, inside the view.
    let envwrap = s.runner_pid();
    let runner: i32 = std::fs::read_to_string(format!("/proc/{envwrap}/task/{envwrap}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the runner under envwrap");
    // The subtree of this envwrap (named by its pid), seen from outside.
    let seen = std::path::PathBuf::from(format!(
        "/proc/{runner}/root/sys/fs/cgroup/nodus-envwrap-{envwrap}"
    ));
    let made: Vec<std::path::PathBuf> = std::fs::read_dir(&seen)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    let made: Vec<_> = made
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("nodus-ext-")
        })
        .collect();
    let read = |f: &str| {
        made.first()
            .and_then(|d| std::fs::read_to_string(d.join(f)).ok())
            .unwrap_or_default()
    };
    let (pids_max, memory_max, procs) =
        (read("pids.max"), read("memory.max"), read("cgroup.procs"));
    let worker_as = address_space(worker);
    s.finish();
    eprintln!("NOTE: cgroup v2 by view only (no v2 pids/memory controller here): files written {pids_max:?} {memory_max:?} {procs:?}; address space {worker_as} (control: {control_as})");
    assert_eq!(
        made.len(),
        1,
        "one cgroup for the worker in {}: {made:?}",
        seen.display()
    );
    assert_eq!(pids_max, "48");
    assert_eq!(memory_max, limit.to_string());
    assert_eq!(procs, "0", "the worker joined its cgroup before exec");
    assert_eq!(
        control_as,
        (4 * limit).to_string(),
        "control: RLIMIT_AS without a memory cgroup (4 × memory_bytes)"
    );
    assert_eq!(worker_as, "unlimited", "RLIMIT_AS with a memory cgroup");
}
