use clap::Parser;

fn main() {
    let cli = nodus_extension::internals::cli::Cli::parse();
    let runtime = match nodus_extension::internals::cli::runtime() {
        Ok(rt) => rt,
        Err(code) => std::process::exit(code),
    };
    let code = runtime.block_on(nodus_extension::internals::cli::main(cli));
    // Tasks still blocked on a host that stopped reading are not waited for.
    runtime.shutdown_background();
    std::process::exit(code);
}
