//! `stemedb serve`: settings from flags, environment and a TOML file (decision 0004), then the
//! server on a multi-threaded runtime.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use stemedb_server::{Config, ConfigLayer};

/// Settings for `serve`. Precedence: flag, then `STEMEDB_*` environment, then the config file,
/// then the built-in default (decision 0004). Every setting is declared once, in
/// `stemedb_server::config::ConfigLayer`.
#[derive(Args)]
pub(crate) struct ServeArgs {
    /// TOML config file with the same settings (snake_case keys).
    #[arg(long, env = "STEMEDB_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) settings: ConfigLayer,
}

pub(crate) fn serve(args: Box<ServeArgs>) -> anyhow::Result<()> {
    let args = *args;
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            ConfigLayer::from_toml(&text)
                .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?
        }
        None => ConfigLayer::default(),
    };
    let flags = args.settings;
    let config = Config::resolve(flags, file);
    stemedb_server::init_tracing(config.log_format, &config.log)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(stemedb_server::serve(config))?)
}
