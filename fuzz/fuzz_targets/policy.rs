//! Arbitrary capability subsets, trust classes, operator policies and kernel
//! facts into `policy::derive`: no panic, it refuses exactly what it must, and
//! every policy it returns keeps its invariants (Write only on the workspace,
//! socket never plainly allowed, clone3 ENOSYS, one rule a system call,
//! nothing an undeclared capability adds; declaring less never grants more).
#![no_main]

use arbitrary::Arbitrary;
use nodus_extension::policy::Probe;
use nodus_extension::policy::{Layers, Mode, OperatorPolicy, ProgramFacts};
use nodus_extension::Capability;
use nodus_extension::TrustClass;

#[path = "../properties.rs"]
mod properties;
use properties::{path, PolicyCase};

#[derive(Debug, Arbitrary)]
struct Case {
    capabilities: Vec<u8>,
    trust_class: u8,
    workspace: Option<u8>,
    extension_dir: u8,
    program: u8,
    loader: Option<u8>,
    runtime_dirs: Vec<u8>,
    workspace_roots: Vec<u8>,
    read_only_paths: Vec<u8>,
    tcp_ports: Vec<u16>,
    limits: Vec<(u8, u64)>,
    best_effort: bool,
    trust_classes: Vec<(u8, Vec<u8>)>,
    layers: [bool; 4],
    root: bool,
    uid: u32,
    landlock_abi: u8,
    seccomp_filter: bool,
    user_namespaces: bool,
    pids_cgroup: Option<String>,
    memory_cgroup: Option<String>,
    cgroup_v2_delegation: bool,
}

impl Case {
    fn build(self) -> PolicyCase {
        let all = Capability::ALL;
        let classes = TrustClass::ALL;
        PolicyCase {
            capabilities: self
                .capabilities
                .iter()
                .take(10)
                .map(|c| all[*c as usize % all.len()])
                .collect(),
            trust_class: classes[self.trust_class as usize % classes.len()],
            operator: {
                let mut op = OperatorPolicy::default();
                op.workspace_roots = self
                    .workspace_roots
                    .iter()
                    .take(4)
                    .map(|p| path(*p))
                    .collect();
                op.read_only_paths = self
                    .read_only_paths
                    .iter()
                    .take(4)
                    .map(|p| path(*p))
                    .collect();
                op.tcp_ports = self.tcp_ports;
                op.limits = properties::limits(&self.limits);
                op.mode = if self.best_effort {
                    Mode::BestEffort
                } else {
                    Mode::Strict
                };
                op.trust_classes = properties::trust_classes(&self.trust_classes);
                op.layers = {
                    let mut v = Layers::default();
                    v.landlock = self.layers[0];
                    v.seccomp = self.layers[1];
                    v.namespaces = self.layers[2];
                    v.limits = self.layers[3];
                    v
                };
                op
            },
            probe: Probe {
                kernel: "fuzz".into(),
                uid: self.uid,
                root: self.root,
                landlock_abi: self.landlock_abi % 9,
                landlock_missing: vec![],
                seccomp_filter: self.seccomp_filter,
                seccomp_listener: self.seccomp_filter && self.uid % 2 == 0,
                seccomp_listener_missing: (!(self.seccomp_filter && self.uid % 2 == 0))
                    .then(|| "EBUSY".into()),
                user_namespaces: self.user_namespaces,
                mount_namespaces: self.user_namespaces,
                network_namespaces: self.user_namespaces,
                pid_namespaces: self.user_namespaces,
                ipc_namespaces: self.user_namespaces,
                uts_namespaces: self.user_namespaces,
                namespace_failure: None,
                pids_cgroup: self.pids_cgroup,
                memory_cgroup: self.memory_cgroup,
                pids_cgroup_missing: None,
                memory_cgroup_missing: None,
                cgroup_v2_delegation: self.cgroup_v2_delegation,
            },
            workspace: self.workspace.map(path),
            extension_dir: path(self.extension_dir),
            program: ProgramFacts {
                program: path(self.program),
                loader: self.loader.map(path),
                runtime_dirs: self.runtime_dirs.iter().take(3).map(|p| path(*p)).collect(),
            },
        }
    }
}

libfuzzer_sys::fuzz_target!(|case: Case| {
    let case = case.build();
    properties::check_policy(&case);
    properties::check_capability_monotonicity(&case);
});
