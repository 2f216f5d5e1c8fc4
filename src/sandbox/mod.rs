//! Stages 3 and 4: the confinement of one worker, decided and then done.
//!
//! - Facts: `probe` (what this kernel and this user offer) and `interpreter`
//!   (which program runs the worker and the host folders it needs). They read
//!   the system, never change it.
//! - Decide: `policy`, a pure function of (manifest, operator policy, facts)
//!   over the data in `policies/*.json`; `ext-runner policy` prints it.
//! - Do: `launch` turns a policy into kernel objects before the fork and forks
//!   (`acl` lends a workspace to a root runner's worker uid where no idmapped
//!   mount can);
//!   `child` (the only `unsafe` in the crate) applies them between fork and
//!   exec. `seccomp` compiles the system call rules into BPF, `supervisor` answers the calls base.json marks supervised (chmod and utime without a mount namespace), `syscalls` maps the policy's system call names to numbers.

pub mod acl;
pub mod cgroup;
pub(crate) mod child;
pub mod egress;
pub mod guarantees;
pub mod interpreter;
pub mod launch;
pub mod policy;
pub mod probe;
pub(crate) mod root;
pub mod seccomp;
pub mod supervisor;
pub(crate) mod syscalls;
