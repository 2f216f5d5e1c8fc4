//! `ext-relay`: what `ext-runner run DIR --server PATH` execs in its own
//! place once the fork server has started the worker, so that the process a
//! host holds for an idle warm worker is small (see `cli/relay.rs`). Started
//! by ext-runner only; it must sit beside `ext-runner`, or be named by
//! `NODUS_EXTENSION_RELAY`.
fn main() {
    std::process::exit(nodus_extension::internals::relay_main())
}
