//! facegate-tools: what an operator or an evaluator runs beside the server. The HTTP
//! tools (enrol-dir, bench load, bench abuse) speak only the public API; the engine tools
//! (eval, faces, bench gallery, bench seed) drive the pipeline and gallery through their
//! public crates and read only the configuration sections they use.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use facegate_tools::{bench, config, enrol_dir, eval, faces};

#[derive(Parser)]
#[command(name = "facegate-tools", version, about = "facegate's evaluation, benchmark and operator tools")]
struct Cli {
    /// Configuration file of the engine tools (layered over config/default.toml, like the server's).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure the real pipeline on an evaluation set.
    Eval {
        #[command(subcommand)]
        set: eval::EvalSet,
    },
    /// What the pipeline sees in each image of a folder: JSON lines, and the MAD crops.
    Faces(faces::Faces),
    /// Enrol every image of a folder through a running server.
    EnrolDir(enrol_dir::EnrolDir),
    /// Benchmarks that print figures (BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        set: bench::BenchSet,
    },
}

type AnyError = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,ort=warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let engine = || config::Config::load(cli.config.as_deref()).map_err(AnyError::from);
    let result = match cli.command {
        Command::Eval { set } => engine().and_then(|cfg| eval::run(&cfg, set)),
        Command::Faces(args) => engine().and_then(|cfg| faces::run(&cfg, args)),
        Command::Bench { set } => bench::run(set),
        Command::EnrolDir(args) => enrol_dir::run(args).map(|_| ()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("facegate-tools: {e}");
            ExitCode::FAILURE
        }
    }
}
