//! The `switchboard` command: run the server, migrate, administer the directory, check config.
//!
//! Every subcommand reads the same config file and `SWITCHBOARD_*` environment as the server, so
//! `switchboard user add` works on exactly the store `switchboard serve` uses. Logs go to stderr;
//! stdout carries only what a script may want to capture (tokens, passwords, lists).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use switchboard::config::{Config, LogFormat};
use switchboard::directory::{ExternalNumber, NewPhone, NewUser, Scope};
use switchboard::store::{Page, Store};
use switchboard::Server;

// mimalloc: see the module's documentation for why, and why called this way.
#[global_allocator]
static ALLOCATOR: switchboard::allocator::Allocator = switchboard::allocator::Allocator;

#[derive(Parser)]
#[command(name = "switchboard", version, about = "A self-hosted PBX")]
struct Cli {
    /// TOML config file; every key is optional.
    #[arg(long, global = true, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the PBX (SIP, HTTP API) until interrupted.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Print the effective configuration (file + environment + defaults) and exit.
    CheckConfig,
    /// Manage users.
    #[command(subcommand)]
    User(UserCmd),
    /// Manage phones.
    #[command(subcommand)]
    Phone(PhoneCmd),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Brute-force bans of source addresses.
    #[command(subcommand)]
    Ban(BanCmd),
}

#[derive(Subcommand)]
enum BanCmd {
    /// List bans in force: address, end (unix ms), failures.
    List,
    /// Lift the ban of an address (a running server notices within seconds).
    Remove { ip: std::net::IpAddr },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a user.
    Add {
        /// Extension: digits, unique.
        extension: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        fax: Option<String>,
        /// An external number as LABEL=NUMBER (e.g. mobile=+491701234567); repeatable.
        #[arg(long = "number")]
        numbers: Vec<String>,
    },
    /// List users.
    List,
    /// Remove a user with their phones, locations and tokens.
    Remove { extension: String },
}

#[derive(Subcommand)]
enum PhoneCmd {
    /// Add a phone to a user; prints the SIP password when it was generated.
    Add {
        /// The owner's extension.
        #[arg(long)]
        user: String,
        /// SIP username the phone authenticates with.
        #[arg(long)]
        username: String,
        /// A label such as "Desk phone".
        #[arg(long, default_value = "Phone")]
        name: String,
        /// SIP password; generated when absent.
        #[arg(long)]
        password: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create an API token and print it (only the token, for scripts).
    Create(TokenArgs),
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct TokenArgs {
    /// An admin token.
    #[arg(long)]
    admin: bool,
    /// A token for the user with this extension.
    #[arg(long, value_name = "EXTENSION")]
    user: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchboard: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(if cli.log_json {
        LogFormat::Json
    } else {
        config.log_format
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(main_workers())
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchboard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Worker threads of the main runtime: `TOKIO_WORKER_THREADS` when set (tokio's own knob), else
/// half the CPUs (at least one). The hot paths do not run here: the SIP core and the media relay
/// have threads of their own, and SQLite its own. What remains (the API, the store's writers,
/// TCP/TLS connections, trunks) is light, and every worker beyond what it needs is one more
/// thread to wake and park under load: on two cores, one worker instead of two cut the server's
/// CPU per registration by about 10 % and per call by about 6 % (bench/RESULTS.md).
fn main_workers() -> usize {
    if let Some(n) = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
    {
        return n;
    }
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    (cpus / 2).max(1)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => serve(config).await,
        Command::CheckConfig => {
            // The dialplan is part of the configuration: an error in it fails the check.
            let plan = config.open_dialplan()?.current();
            print!("{}", config.to_toml());
            eprintln!(
                "dialplan {}: {} routes",
                config.dialplan.display(),
                plan.routes().len()
            );
            Ok(())
        }
        Command::Migrate => {
            Store::open(&config.database_url).await?;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::User(cmd) => user(cmd, &config).await,
        Command::Ban(cmd) => {
            let store = Store::open(&config.database_url).await?;
            match cmd {
                BanCmd::List => {
                    for b in store.active_bans(switchboard::store::now_ms()).await? {
                        println!("{}\t{}\t{}", b.ip, b.until_ms, b.failures);
                    }
                }
                BanCmd::Remove { ip } => {
                    if !store.remove_ban(&ip.to_string()).await? {
                        bail!("{ip} is not banned");
                    }
                    eprintln!("ban of {ip} lifted");
                }
            }
            Ok(())
        }
        Command::Phone(cmd) => phone(cmd, &config).await,
        Command::Token(TokenCmd::Create(args)) => {
            let store = Store::open(&config.database_url).await?;
            let token = if args.admin {
                store.create_token(Scope::Admin, None, "cli").await?
            } else {
                let ext = args.user.unwrap_or_default();
                let user = find_user(&store, &ext).await?;
                store.create_token(Scope::User, Some(user), "cli").await?
            };
            println!("{token}");
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let server = Server::start(config).await?;
    if let Some(token) = server.initial_admin_token() {
        // Shown once: only its hash is stored.
        println!("Created the first admin token (it is shown only this once):\n\n    {token}\n");
        println!("Create more with: switchboard token create --admin");
    }
    wait_for_stop(&server).await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

/// Serves until SIGINT/SIGTERM; SIGHUP reloads the dialplan.
async fn wait_for_stop(server: &Server) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            let stop = shutdown_signal();
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = &mut stop => return,
                    _ = hup.recv() => match server.dialplan().reload() {
                        Ok(plan) => tracing::info!(routes = plan.routes().len(), "dialplan reloaded"),
                        Err(e) => tracing::error!(error = %e, "dialplan not reloaded; the running one stays"),
                    },
                }
            }
        }
    }
    shutdown_signal().await;
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

async fn find_user(store: &Store, extension: &str) -> anyhow::Result<i64> {
    match store.user_by_extension(extension).await? {
        Some(u) => Ok(u.id),
        None => bail!("no user with extension {extension}"),
    }
}

async fn user(cmd: UserCmd, config: &Config) -> anyhow::Result<()> {
    let store = Store::open(&config.database_url).await?;
    match cmd {
        UserCmd::Add {
            extension,
            name,
            email,
            fax,
            numbers,
        } => {
            let external_numbers = numbers
                .iter()
                .map(|n| {
                    let (label, number) = n
                        .split_once('=')
                        .with_context(|| format!("--number {n}: expected LABEL=NUMBER"))?;
                    Ok(ExternalNumber {
                        label: label.into(),
                        number: number.into(),
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let user = store
                .create_user(&NewUser {
                    extension,
                    display_name: name,
                    email,
                    fax_number: fax,
                    external_numbers,
                })
                .await?;
            println!("{}\t{}\t{}", user.id, user.extension, user.display_name);
        }
        UserCmd::List => {
            let mut page = Page {
                after: 0,
                limit: switchboard::store::MAX_PAGE,
            };
            loop {
                let p = store.list_users(page).await?;
                for u in &p.items {
                    println!("{}\t{}\t{}\t{}", u.id, u.extension, u.display_name, u.email);
                }
                match p.next {
                    Some(n) => page.after = n,
                    None => break,
                }
            }
        }
        UserCmd::Remove { extension } => {
            let id = find_user(&store, &extension).await?;
            store.delete_user(id).await?;
            eprintln!("removed user {extension}");
        }
    }
    Ok(())
}

async fn phone(cmd: PhoneCmd, config: &Config) -> anyhow::Result<()> {
    let store = Store::open(&config.database_url).await?;
    match cmd {
        PhoneCmd::Add {
            user,
            username,
            name,
            password,
        } => {
            let uid = find_user(&store, &user).await?;
            let generated = password.is_none();
            let (phone, password) = store
                .create_phone(
                    uid,
                    &NewPhone {
                        sip_username: username,
                        name,
                        password,
                    },
                    &config.sip.realm,
                )
                .await?;
            eprintln!("phone {} ({}) added", phone.id, phone.sip_username);
            if generated {
                println!("{password}");
            }
        }
    }
    Ok(())
}
