use clap::Parser;

fn main() {
    let cli = nodus_extension::internals::cli::Cli::parse();
    // One thread for the protocol; workers are forked on the launcher thread
    // (launch::spawn), which lives as long as the process.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e} (SandboxError)");
            std::process::exit(6);
        }
    };
    let code = runtime.block_on(nodus_extension::internals::cli::main(cli));
    // Tasks still blocked on a host that stopped reading are not waited for.
    runtime.shutdown_background();
    std::process::exit(code);
}
