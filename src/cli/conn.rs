//! Where the server is and how to reach it, as flags shared by the operator's clients.

use std::path::PathBuf;

use anyhow::Context;
use vigil_actors::Status;

use crate::client::{ClientConfig, ClientTls};

/// Where the server is and how to reach it (shared by the operator's clients). Each flag
/// has its environment variable (`VIGIL_ADDR`, `VIGIL_TOKEN`, `VIGIL_TOKEN_FILE`, `VIGIL_CA`,
/// `VIGIL_TLS_NAME`), as a deployment's environment sets them once.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnArgs {
    /// The server's protocol listener (`server.agent_listen`), `host:port`.
    #[arg(
        long,
        env = "VIGIL_ADDR",
        default_value = "127.0.0.1:7400",
        global = true
    )]
    pub addr: String,
    /// The token of the role (admin for `agents`, `sinks`, `policy`; monitor for `watch`),
    /// when the server requires one.
    #[arg(long, env = "VIGIL_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Read the token from this file instead (its first line; e.g. a secret mounted by the
    /// service manager). Given, it wins over `--token` and `VIGIL_TOKEN`.
    #[arg(long, env = "VIGIL_TOKEN_FILE", value_name = "PATH", global = true)]
    pub token_file: Option<PathBuf>,
    /// Connect with TLS, trusting the certificates in this PEM file (a private CA, or the
    /// server's own self-signed certificate).
    #[arg(long, env = "VIGIL_CA", value_name = "PEM", global = true)]
    pub ca: Option<PathBuf>,
    /// The name to check the server's certificate against (default: the host of --addr).
    #[arg(long, env = "VIGIL_TLS_NAME", value_name = "NAME", global = true)]
    pub tls_name: Option<String>,
}

impl ConnArgs {
    /// The client configuration these flags describe.
    pub fn client_config(&self, client_name: &str) -> anyhow::Result<ClientConfig> {
        let mut cfg = ClientConfig::new(self.addr.clone());
        cfg.client_name = format!("{client_name}/{}", env!("CARGO_PKG_VERSION"));
        cfg.token = match &self.token_file {
            Some(path) => Some(read_token(path)?),
            None => self.token.clone(),
        };
        if let Some(ca) = &self.ca {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            let name = match &self.tls_name {
                Some(n) => n.clone(),
                None => crate::client::host_of(&self.addr).to_string(),
            };
            let tls = ClientTls::with_root_pem(&pem, name)
                .with_context(|| format!("loading the certificates in {}", ca.display()))?;
            cfg.tls = Some(tls);
        }
        Ok(cfg)
    }
}

/// The token in a file: its first line, without surrounding blanks; an empty one is an error
/// (it would silently connect without a token).
pub fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or_default().trim();
    anyhow::ensure!(
        !token.is_empty(),
        "the token file {} is empty",
        path.display()
    );
    Ok(token.to_string())
}

/// Parses a status for clap (`online`, `degraded`, `offline`, `maintenance`, `left`,
/// `unknown`).
pub fn parse_status(s: &str) -> Result<Status, String> {
    s.parse::<Status>().map_err(|_| {
        let all: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
        format!("expected one of {}", all.join(", "))
    })
}
