//! The `pixelgate` command line: argument types and what each command does.
//!
//! `main.rs` parses and reports errors; everything here takes its inputs (arguments, the
//! environment snapshot, an output stream) as parameters so that tests can drive it directly.

use std::{io::Write, net::SocketAddr, path::PathBuf, time::SystemTime};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use pixelgate_core::{Claims, Destination, Ids, Keyring, Secret, token::expiry};

use crate::{
    config::{Config, Environment, Overrides, PublicUrl, RedisKey, RedisUrl},
    keys::load_keyring,
};

/// The email-tracking edge: open pixels and click redirects, recorded through Redis.
#[derive(Debug, Parser)]
#[command(name = "pixelgate", version, arg_required_else_help = true)]
pub struct Cli {
    /// Configuration file [default: /etc/pixelgate/pixelgate.toml, when it exists]
    #[arg(short = 'c', long = "config", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Check the configuration and exit, like `check-config`
    #[arg(short = 't')]
    pub test_config: bool,

    #[command(flatten)]
    pub overrides: OverrideArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Flags that take precedence over the file and the environment.
#[derive(Debug, Clone, Default, Args)]
pub struct OverrideArgs {
    /// Public listener address (server.listen)
    #[arg(long, global = true, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Admin listener address (server.admin_listen)
    #[arg(long, global = true, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Base of signed URLs (server.public_url)
    #[arg(long, global = true, value_name = "URL")]
    pub public_url: Option<PublicUrl>,
    /// Redis server (redis.url)
    #[arg(long, global = true, value_name = "URL")]
    pub redis_url: Option<RedisUrl>,
    /// Redis key events are queued under (queue.key)
    #[arg(long, global = true, value_name = "KEY")]
    pub queue_key: Option<RedisKey>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the edge: pixels, clicks, health, readiness, metrics
    Serve,
    /// Run the drain: events from Redis into the sink (drain.sink_url)
    Drain {
        /// Create or update the sink's table, then exit
        #[arg(long)]
        migrate: bool,
    },
    /// Print a signed tracking URL
    #[command(subcommand)]
    Sign(SignCommand),
    /// Print a new random signing secret
    Keygen,
    /// Check the configuration (and the signing keys, when configured); print `configuration OK`
    CheckConfig,
}

#[derive(Debug, Subcommand)]
pub enum SignCommand {
    /// The open pixel URL for one message to one recipient
    Open(SignArgs),
    /// A click URL that redirects to --url
    Click {
        #[command(flatten)]
        ids: SignArgs,
        /// Destination: an http or https URL with a host and no user name
        #[arg(long, value_name = "DEST")]
        url: String,
    },
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// Account id (1 to 128 bytes)
    #[arg(long)]
    pub account: String,
    /// Campaign id (1 to 128 bytes)
    #[arg(long)]
    pub campaign: String,
    /// Message id (1 to 128 bytes)
    #[arg(long)]
    pub message: String,
    /// Recipient id (1 to 128 bytes)
    #[arg(long)]
    pub recipient: String,
    /// Link lifetime such as `90d` [default: signing.link_ttl, else never expires]
    #[arg(long, value_name = "DURATION")]
    pub expires_in: Option<humantime::Duration>,
}

impl From<OverrideArgs> for Overrides {
    fn from(a: OverrideArgs) -> Self {
        Self {
            listen: a.listen,
            admin_listen: a.admin_listen,
            public_url: a.public_url,
            redis_url: a.redis_url,
            queue_key: a.queue_key,
        }
    }
}

/// Runs one command, writing its output to `out`.
pub fn run(cli: Cli, env: &Environment, out: &mut dyn Write) -> anyhow::Result<()> {
    let load = || Config::load(cli.config.as_deref(), env, &cli.overrides.clone().into());
    match cli.command {
        Some(_) if cli.test_config => {
            anyhow::bail!("-t checks the configuration and takes no command")
        }
        None if cli.test_config => check_config(&load()?, out),
        Some(Command::CheckConfig) => check_config(&load()?, out),
        Some(Command::Serve) => crate::serve::serve(load()?),
        Some(Command::Drain { migrate }) => crate::drain::drain(load()?, migrate, out),
        Some(Command::Keygen) => {
            writeln!(out, "{}", Secret::generate()?)?;
            Ok(())
        }
        Some(Command::Sign(what)) => {
            let config = load()?;
            let keys = load_keyring(&config.signing)?;
            writeln!(out, "{}", sign(&config, &keys, what, SystemTime::now())?)?;
            Ok(())
        }
        None => anyhow::bail!("no command given (see pixelgate --help)"),
    }
}

fn check_config(config: &Config, out: &mut dyn Write) -> anyhow::Result<()> {
    // Keys are checked when configured; a drain-only host has none.
    if config.signing.env_key.is_some() || config.signing.key_dir.is_some() {
        load_keyring(&config.signing)?;
    }
    writeln!(out, "configuration OK")?;
    Ok(())
}

/// The full URL for a sign command.
pub fn sign(
    config: &Config,
    keys: &Keyring,
    what: SignCommand,
    now: SystemTime,
) -> anyhow::Result<String> {
    let (args, destination) = match what {
        SignCommand::Open(args) => (args, None),
        SignCommand::Click { ids, url } => (ids, Some(Destination::parse(&url).context("--url")?)),
    };
    let ids = Ids::new(args.account, args.campaign, args.message, args.recipient)
        .map_err(|e| anyhow::anyhow!("--{e}"))?;
    let mut claims = match destination {
        Some(dest) => Claims::click(ids, dest),
        None => Claims::open(ids),
    };
    let ttl = args.expires_in.map(Into::into).or(config.signing.link_ttl);
    if let Some(ttl) = ttl {
        claims = claims.expiring_at(expiry(now, ttl));
    }
    let token = keys.seal(&claims);
    let base = config.server.public_url.as_str();
    Ok(match claims.target {
        pixelgate_core::Target::Open => format!("{base}/o/{token}.gif"),
        pixelgate_core::Target::Click(_) => format!("{base}/c/{token}"),
    })
}
