//! The `herald` binary: `herald serve` runs the server; every other command is a client of a
//! running server, or a benchmark.

#![deny(clippy::unwrap_used, clippy::expect_used)]

mod bench;
mod client;
mod config;
mod security_cli;
mod serve;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about = "Herald: a multi-tenant event backbone in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (embedded log, HTTP API).
    Serve(Box<config::ServeArgs>),
    /// Manage and use topics on a running server.
    Topic {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        command: client::TopicCommand,
    },
    /// Inspect and manage consumer groups on a running server.
    Group {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        command: client::GroupCommand,
    },
    /// Manage tenants: credentials, default ACLs and API keys, in one step.
    Tenant {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        command: security_cli::TenantCommand,
    },
    /// Manage ACLs (Kafka's model; enforced on the Kafka listener, the HTTP API and the gateway).
    Acl {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        command: security_cli::AclCommand,
    },
    /// Issue, list and revoke HTTP API keys.
    ApiKey {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        command: security_cli::KeyCommand,
    },
    /// Manage Kafka users (SCRAM credentials for SASL listeners) on a running server.
    User {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        command: client::UserCommand,
    },
    /// Certificates for TLS listeners.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Measure throughput and latency.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

#[derive(Subcommand)]
enum CertCommand {
    /// Write a development CA and a server certificate signed by it (ca.pem, cert.pem,
    /// key.pem) for localhost, the loopback addresses, this host's name and every --host.
    Dev {
        /// Directory to write into.
        #[arg(long, default_value = "./herald-tls")]
        out: std::path::PathBuf,
        /// Another name or address the certificate must be valid for; repeatable.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Also write a client certificate for this principal (client-NAME.pem, for mTLS
        /// listeners with tls.client_ca = the written ca.pem); repeatable.
        #[arg(long = "client")]
        clients: Vec<String>,
    },
}

fn cert_dev(out: &std::path::Path, hosts: &[String], clients: &[String]) -> anyhow::Result<()> {
    let hosts = herald_auth::tls::dev_hosts(hosts);
    let dev = herald_auth::tls::generate_dev_with_clients(out, &hosts, clients)
        .map_err(anyhow::Error::msg)?;
    println!("development certificate for {}", hosts.join(", "));
    println!("  CA           {}", dev.ca.display());
    println!("  certificate  {}", dev.cert.display());
    println!("  key          {}", dev.key.display());
    for c in clients {
        println!(
            "  client       {}  (User:{c}; key {})",
            out.join(format!("client-{c}.pem")).display(),
            out.join(format!("client-{c}-key.pem")).display()
        );
    }
    println!();
    println!(
        "herald serve --kafka-listener SASL_SSL=SASL_SSL://127.0.0.1:9093 --tls-cert {} --tls-key {}",
        dev.cert.display(),
        dev.key.display()
    );
    println!(
        "clients trust the CA: kafka-python ssl_cafile='{0}', librdkafka ssl.ca.location={0}, or SSL_CERT_FILE={0}",
        dev.ca.display()
    );
    Ok(())
}

/// How client commands reach the server.
#[derive(Args, Clone, Debug)]
pub struct Connection {
    /// Base URL of the server's HTTP API.
    #[arg(
        long,
        env = "HERALD_SERVER",
        default_value = "http://127.0.0.1:8000",
        global = true
    )]
    pub server: String,
    /// API key (falls back to HERALD_ADMIN_API_KEY).
    #[arg(long, env = "HERALD_API_KEY", global = true, hide_env_values = true)]
    pub api_key: Option<String>,
    /// CA certificate to trust for an https:// server (e.g. DATA_DIR/tls/ca.pem).
    #[arg(long, env = "HERALD_CA_CERT", global = true, value_name = "PATH")]
    pub ca_cert: Option<std::path::PathBuf>,
}

impl Connection {
    pub fn key(&self) -> Option<String> {
        self.api_key
            .clone()
            .filter(|k| !k.is_empty())
            .or_else(|| std::env::var("HERALD_ADMIN_API_KEY").ok())
            .filter(|k| !k.is_empty())
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // One TLS provider for the whole process (ring): listeners, the CLI's HTTPS client and the
    // gateway's JWKS fetches.
    herald_auth::tls::install_default_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Topic { conn, command } => client::run_topic(conn, command).await,
            Command::Group { conn, command } => client::run_group(conn, command).await,
            Command::User { conn, command } => client::run_user(conn, command).await,
            Command::Tenant { conn, command } => security_cli::run_tenant(conn, command).await,
            Command::Acl { conn, command } => security_cli::run_acl(conn, command).await,
            Command::ApiKey { conn, command } => security_cli::run_key(conn, command).await,
            Command::Bench { command } => bench::run(command).await,
            Command::Cert {
                command:
                    CertCommand::Dev {
                        out,
                        hosts,
                        clients,
                    },
            } => cert_dev(&out, &hosts, &clients),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
