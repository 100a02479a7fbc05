//! The command line: parses arguments, loads settings, and maps outcomes to exit codes
//! (0 success, 1 the work ran but something failed, 2 bad configuration or arguments; `health`
//! answers 0 or 1 only, as a container health check must; `status` answers 1 when something
//! needs a person).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{ConfigError, SettingsSources};
use crate::connect::ConnectError;

mod health;
mod report;
mod run;
mod status;
mod validate;

#[derive(Debug, Parser)]
#[command(
    name = "connect-payg",
    version,
    about = "CloudBlue Connect Pay-As-You-Go usage reporting"
)]
pub struct Cli {
    /// Configuration file (TOML); none is read unless named here.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// More log lines: -v debug, -vv trace (from LOG_LEVEL, default info; RUST_LOG wins).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Fewer log lines: -q warnings and errors, -qq errors only.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// The periods and groups `report` and `status` work on.
#[derive(Debug, clap::Args)]
pub struct Selection {
    /// A period, YYYY-MM or YYYY-MM-DD; repeat it for several.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub period: Vec<String>,
    /// The first of a range of periods (with --to).
    #[arg(long, requires = "to")]
    pub from: Option<String>,
    /// The last of a range of periods (with --from).
    #[arg(long, requires = "from")]
    pub to: Option<String>,
    /// Only these contracts.
    #[arg(long)]
    pub contract: Vec<String>,
    /// Only these products.
    #[arg(long)]
    pub product: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Connect to the DevOps channel and serve tasks until shutdown.
    Run {
        /// Use ws:// and http:// instead of TLS (loopback and tests only).
        #[arg(long, short = 'u')]
        unsecure: bool,
    },
    /// Build and file the usage reports once, from a terminal: the periods named, else
    /// REPORT_PERIOD, else the catch-up window (as the schedule does).
    Report {
        #[command(flatten)]
        selection: Selection,
        /// monthly or daily (default: REPORT_CADENCE, or what --period/--from names).
        #[arg(long)]
        cadence: Option<String>,
        /// Write the workbooks to --out and change nothing on the platform.
        #[arg(long)]
        dry_run: bool,
        /// Where workbooks and the bad-records CSV go.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// A source without any record for the month is expected: no alert, exit 0.
        #[arg(long)]
        allow_empty: bool,
        /// Use http:// instead of TLS (loopback and tests only).
        #[arg(long, short = 'u')]
        unsecure: bool,
    },
    /// Show, without changing anything, what became of each period and group and what needs
    /// a person: the periods named, else REPORT_PERIOD, else the catch-up window. Exit 0 when
    /// nothing needs attention, 1 otherwise.
    Status {
        #[command(flatten)]
        selection: Selection,
        /// One JSON document instead of the table (fields: README, "Status").
        #[arg(long)]
        json: bool,
        /// Use http:// instead of TLS (loopback and tests only).
        #[arg(long, short = 'u')]
        unsecure: bool,
    },
    /// Check usage workbooks offline with the platform's template rules.
    Validate {
        /// One or more workbooks; each is checked whatever the others hold.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The month the records must fall in, YYYY-MM.
        #[arg(long)]
        period: Option<String>,
    },
    /// Ask the running instance's /healthz (at METRICS_ADDRESS): exit 0 when healthy, else 1.
    Health,
    /// Run the whole product against the built-in Connect simulator.
    Sandbox {
        /// How many subscriptions to generate (at least 10; at most what this machine's
        /// memory holds, and never more than 1000000).
        #[arg(long, default_value_t = 300)]
        subscriptions: usize,
        /// Keep the simulator running and print how to reach it.
        #[arg(long)]
        serve: bool,
    },
}

/// What a command run came to, mapped to the process exit code.
pub enum Outcome {
    Success,
    WorkFailed,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub fn main() -> ExitCode {
    let matches = Cli::command()
        .after_help(crate::config::settings_help())
        .get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    crate::logging::set_verbosity(
        i8::try_from(i16::from(cli.verbose) - i16::from(cli.quiet)).unwrap_or_default(),
    );
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::WorkFailed) => ExitCode::from(1),
        Err(error @ (CliError::Config(_) | CliError::Usage(_))) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
        Err(CliError::Connect(error)) => {
            eprintln!("error: {error}");
            ExitCode::from(1)
        }
        Err(CliError::Other(error)) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

async fn dispatch(cli: Cli) -> Result<Outcome, CliError> {
    let sources = |unsecure_flag| SettingsSources {
        file: cli.config.clone(),
        unsecure_flag,
        ..Default::default()
    };
    match cli.command {
        Command::Run { unsecure } => run::run(sources(unsecure)).await,
        Command::Report {
            unsecure,
            selection,
            cadence,
            dry_run,
            out,
            allow_empty,
        } => {
            report::report(
                sources(unsecure),
                report::ReportArgs {
                    periods: selection.period,
                    range: selection.from.zip(selection.to),
                    cadence,
                    contracts: selection.contract,
                    products: selection.product,
                    dry_run,
                    out,
                    allow_empty,
                },
            )
            .await
        }
        Command::Status {
            selection,
            json,
            unsecure,
        } => {
            status::status(
                sources(unsecure),
                status::StatusArgs {
                    periods: selection.period,
                    range: selection.from.zip(selection.to),
                    contracts: selection.contract,
                    products: selection.product,
                    json,
                },
            )
            .await
        }
        Command::Validate { files, period } => validate::validate(files, period).await,
        Command::Health => Ok(health::health().await),
        Command::Sandbox {
            subscriptions,
            serve,
        } => {
            crate::sandbox::check_subscriptions(subscriptions, crate::sandbox::memory_available())
                .map_err(CliError::Usage)?;
            crate::logging::init_with_default(
                Some(crate::config::LogFormat::Text),
                crate::config::LogLevel::Error,
            );
            let options = crate::sandbox::SandboxOptions {
                subscriptions,
                out_dir: PathBuf::from("sandbox-out"),
            };
            if serve {
                crate::sandbox::serve(options)
                    .await
                    .map_err(|e| CliError::Other(e.into()))?;
            } else {
                let summary = crate::sandbox::run(options)
                    .await
                    .map_err(|e| CliError::Other(e.into()))?;
                print!("{summary}");
            }
            Ok(Outcome::Success)
        }
    }
}
