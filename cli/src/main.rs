//! `hapnd-auth`: a ready API gateway, key administration, and client login.
//!
//! The `hapnd-auth-cli` package: the command built on the `hapnd-auth` library, kept in a
//! package of its own so the library's users never compile its dependencies.

mod admin;
mod client;
mod health;
mod keys;
mod logging;
mod metrics;
mod serve;
mod store;
mod time;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// API-key authentication for Hapnd: run a gateway, manage keys, log in.
#[derive(Parser)]
#[command(name = "hapnd-auth", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where keys are stored: a SQLite file, or a `postgres://` URL.
#[derive(clap::Args, Clone)]
struct Database {
    /// SQLite file path, or a postgres:// URL (several gateways share PostgreSQL).
    #[arg(
        long = "db",
        env = "HAPND_AUTH_DATABASE",
        hide_env_values = true,
        default_value = "./hapnd-auth.db"
    )]
    url: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run an HTTP API gateway that authenticates every request.
    Serve(serve::Args),
    /// Create, list, revoke and rotate keys.
    #[command(subcommand)]
    Keys(keys::Command),
    /// Save a key to ~/.hapnd/config.json (mode 0600) for client tools.
    Login {
        /// The API key (sk_live_... or sk_test_...). Omit it, or pass `-`, to read it from
        /// standard input, which keeps it out of shell history and `ps`.
        key: Option<String>,
        /// Where to save it (default ~/.hapnd/config.json).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Ask a gateway who the saved key (or HAPND_API_KEY) belongs to.
    Whoami {
        /// The gateway's base URL.
        #[arg(
            long,
            env = "HAPND_URL",
            hide_env_values = true,
            default_value = "http://127.0.0.1:8080"
        )]
        url: String,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap echoes stray or invalid arguments: a key pasted in the wrong place
            // must not be printed back.
            let text = hapnd_auth::redact_keys(&e.render().to_string());
            if e.use_stderr() {
                eprint!("{text}");
            } else {
                print!("{text}");
            }
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Keys(command) => keys::run(command).await,
            Command::Login { key, config } => client::login(key, config),
            Command::Whoami { url } => client::whoami(&url).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(message),
    }
}

fn fail(message: String) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}
