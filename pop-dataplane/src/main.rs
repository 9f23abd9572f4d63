//! `pop-dataplane`: the daemon and its command line (see [`pop_dataplane::cli`]).

fn main() -> std::process::ExitCode {
    pop_dataplane::cli::main()
}
