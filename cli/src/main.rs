//! `hapnd-auth`: a ready API gateway, key administration, and client login.
//!
//! The `hapnd-auth-cli` package: the command built on the `hapnd-auth` library, kept in a
//! package of its own so the library's users never compile its dependencies.

/// A request allocates and frees a few dozen small blocks; mimalloc does that in fewer
/// instructions than glibc's malloc (see benches/upstream.sh and docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin;
mod client;
mod credentials;
mod events;
mod expiring;
mod health;
mod keys;
mod logging;
mod metrics;
mod output;
mod scan;
mod secret_scanning;
mod serve;
mod server;
mod store;
mod time;
mod upstream;
mod verify;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// An API gateway that authenticates every request with an API key, the keys'
/// administration on its database, and a client login.
#[derive(Parser)]
#[command(
    name = "hapnd-auth",
    version,
    long_about = "An API gateway that authenticates every request with an API key \
                  (Authorization: Bearer sk_live_... or sk_test_...), the administration of \
                  those keys on the gateway's database (SQLite file or PostgreSQL), and a \
                  client login that saves a key for `whoami` and other client tools.\n\n\
                  First start: `hapnd-auth serve` creates ./hapnd-auth.db and prints a \
                  sandbox key."
)]
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
    Serve(Box<serve::Args>),
    /// Create, list, revoke and rotate keys.
    #[command(subcommand)]
    Keys(keys::Command),
    /// Create, list and revoke admin credentials that manage one tenant's keys through the
    /// admin API and the API Keys page (hapnd_adm_...).
    #[command(subcommand)]
    AdminCredentials(credentials::Command),
    /// Save a key to ~/.hapnd/config.json (mode 0600) for client tools, after checking it
    /// against the gateway.
    Login {
        /// The API key (sk_live_... or sk_test_...). Omit it, or pass `-`, to read it from
        /// standard input (hidden when typed in a terminal), which keeps it out of shell
        /// history and `ps`.
        key: Option<String>,
        /// Save the key without asking the gateway whether it works.
        #[arg(long)]
        no_verify: bool,
        #[command(flatten)]
        gateway: client::Gateway,
        #[command(flatten)]
        config: client::Config,
    },
    /// Remove the saved key.
    Logout {
        #[command(flatten)]
        config: client::Config,
    },
    /// Show which key client tools use, and where it comes from (HAPND_API_KEY or the file).
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: client::Config,
    },
    /// Ask a gateway who the saved key (or HAPND_API_KEY) belongs to. Exits with 4 when the
    /// gateway refuses the key.
    Whoami {
        /// Print the gateway's JSON answer.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        gateway: client::Gateway,
        #[command(flatten)]
        config: client::Config,
    },
    /// Find API keys in files (directories recursively, `.git` skipped), as a pre-commit
    /// hook or CI step: prints `file:line: hint` (never the key) and exits 1 when it finds
    /// one, 2 when a path cannot be read, 0 when there is none.
    Scan {
        /// Files or directories to scan.
        #[arg(required = true)]
        paths: Vec<std::path::PathBuf>,
    },
    /// Print a shell completion script: `hapnd-auth completions bash > ...`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// A failure: the message for stderr and the exit code (1 unless said otherwise).
pub(crate) struct Exit {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl From<String> for Exit {
    fn from(message: String) -> Self {
        Exit { code: 1, message }
    }
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
                output::write_stdout(format_args!("{}", text.trim_end()));
            }
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(format!("cannot start the async runtime: {e}").into()),
    };
    let result: Result<(), Exit> = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => Ok(serve::run(*args).await?),
            Command::Keys(command) => Ok(keys::run(command).await?),
            Command::AdminCredentials(command) => Ok(credentials::run(command).await?),
            Command::Login {
                key,
                no_verify,
                gateway,
                config,
            } => client::login(key, no_verify, gateway, config).await,
            Command::Logout { config } => Ok(client::logout(config)?),
            Command::Status { json, config } => Ok(client::status(config, json)?),
            Command::Whoami {
                json,
                gateway,
                config,
            } => client::whoami(gateway, config, json).await,
            Command::Scan { paths } => scan::run(&paths),
            Command::Completions { shell } => {
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut Cli::command(), "hapnd-auth", &mut script);
                output::write_stdout(format_args!(
                    "{}",
                    String::from_utf8_lossy(&script).trim_end()
                ));
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(exit) => fail(exit),
    }
}

fn fail(exit: Exit) -> ExitCode {
    eprintln!("error: {}", exit.message);
    ExitCode::from(exit.code)
}
