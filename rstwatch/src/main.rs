use std::process::ExitCode;

use clap::FromArgMatches as _;
use rstwatch::{
    cli::config,
    cli::{self, Cli, Command},
    error::UserError,
};

/// Messages from the library (the syslog sender's reconnects, aya's warnings) on stderr, in the
/// same one-line form as rstwatch's own.
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let level = record.level().as_str().to_ascii_lowercase();
            eprintln!("rstwatch: {level}: {}", record.args());
        }
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

/// Parses the command line, with the options of its `--config` file; a mistake gets one line
/// on stderr and exit code 2 (help, version and `--print-config` print and exit 0).
fn parse_cli() -> Result<Cli, ExitCode> {
    let command = cli::command();
    let argv =
        config::with_config_file(&command, std::env::args_os().collect()).map_err(|err| {
            eprintln!("rstwatch: error: {err}");
            ExitCode::from(2)
        })?;
    let matches = command
        .clone()
        .try_get_matches_from(argv)
        .map_err(clap_error)?;
    if let Some(effective) = config::print_requested(&command, &matches) {
        print!("{effective}");
        return Err(ExitCode::SUCCESS);
    }
    Cli::from_arg_matches(&matches).map_err(clap_error)
}

fn clap_error(err: clap::Error) -> ExitCode {
    if !err.use_stderr() {
        let _ = err.print();
        return ExitCode::SUCCESS;
    }
    // Clap's first paragraph says what is wrong; usage and tips follow after a blank line.
    let rendered = err.render().to_string();
    let paragraph: Vec<&str> = rendered
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    let joined = paragraph.join(" ");
    let message = joined.strip_prefix("error: ").unwrap_or(&joined);
    eprintln!("rstwatch: error: {message} (rstwatch --help explains every option)");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("rstwatch: error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Watch(args) => rstwatch::daemon::run(*args).await,
            Command::Detach(args) => rstwatch::kernel::detach::run(&args),
            Command::Explain(args) => rstwatch::offline::run(*args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rstwatch: error: {err:#}");
            if err.downcast_ref::<UserError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
