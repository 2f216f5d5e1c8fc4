//! `ext-reaper`: what a worker's pid-namespace monitor and reaper exec, so
//! that they are a few pages each instead of copies of the runner (see
//! `sandbox/child.rs`, `waiter_main`). Started by ext-runner and the
//! library only; it must sit beside `ext-runner` (or the host's binary), or
//! be named by `NODUS_EXTENSION_REAPER`.
fn main() {
    nodus_extension::internals::reaper_main()
}
