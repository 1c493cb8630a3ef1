//! The `ceusd` command line. Each subcommand lives in `src/cli/`; this file parses, sets up
//! logging, hands the subcommand its arguments, and turns an error into one line and exit
//! status 1.

mod cli;

use cli::command::Command;

fn main() {
    // A library's error carries a backtrace when RUST_BACKTRACE is set (it is in many shells
    // and CI images); a user's error is one line. Panics keep theirs.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    let cli = cli::command::parse_arguments();
    cli::init_logging(matches!(cli.command, Command::Demo(_)));
    if let Err(e) = run(cli.command) {
        log::error!("{}", cli::one_line(&e));
        std::process::exit(1);
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    // Not locked for the whole command: the demo's live view draws on stdout from other threads.
    let mut out = std::io::stdout();
    match command {
        Command::Run(a) => cli::run::run(a),
        Command::Check(a) => cli::check::run(a, &mut out),
        Command::Demo(a) => cli::demo::run(a, &mut out),
        Command::Eval(a) => cli::eval::run(a, &mut out),
        Command::Train(a) => cli::train::run(a, &mut out),
        Command::Model(c) => cli::model::run(c, &mut out),
        Command::Analyze(a) => cli::analyze::run(a, &mut out),
        Command::Devices(a) => cli::devices::run(a, &mut out),
        Command::Synth(a) => cli::synth::run(a, &mut out),
        Command::Capture(a) => cli::capture::run(a, &mut out),
    }
}
