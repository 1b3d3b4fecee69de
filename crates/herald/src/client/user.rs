//! `herald user …`: Kafka users (SCRAM credentials).

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::*;
use crate::Connection;

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user, or replace its password (SCRAM-SHA-256 and -512 unless --mechanism).
    /// Without --password-stdin a password is generated and printed once.
    Create {
        name: String,
        /// Read the password from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
        /// SCRAM-SHA-256 or SCRAM-SHA-512; repeatable.
        #[arg(long = "mechanism", value_name = "MECHANISM")]
        mechanisms: Vec<String>,
    },
    /// List users and their mechanisms.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete users and their credentials.
    Delete { names: Vec<String> },
}

pub(crate) fn generated_password() -> String {
    let bytes: [u8; 18] = rand::random();
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

pub async fn run_user(conn: Connection, cmd: UserCommand) -> anyhow::Result<()> {
    let api = Api::new(&conn)?;
    match cmd {
        UserCommand::Create {
            name,
            password_stdin,
            mechanisms,
        } => {
            let (password, generated) = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                (line.trim_end_matches(['\r', '\n']).to_owned(), false)
            } else {
                (generated_password(), true)
            };
            let body = if mechanisms.is_empty() {
                json!({ "password": password })
            } else {
                json!({ "password": password, "mechanisms": mechanisms })
            };
            let v: Value = api
                .call(
                    Method::PUT,
                    api.url(&["v1", "users", &name], &[]),
                    Some(body),
                    REQUEST_TIMEOUT,
                )
                .await?;
            println!(
                "user {} ({}) with {}",
                text(field(&v, "user")),
                text(field(&v, "principal")),
                field(&v, "mechanisms")
                    .as_array()
                    .map(|a| a.iter().map(text).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            );
            if generated {
                println!("password {password}  (shown only this once)");
            }
            Ok(())
        }
        UserCommand::List { json } => {
            let v: Value = api
                .call(
                    Method::GET,
                    api.url(&["v1", "users"], &[]),
                    None,
                    REQUEST_TIMEOUT,
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = field(&v, "users")
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|u| {
                            let mechs = field(u, "mechanisms")
                                .as_array()
                                .map(|m| {
                                    m.iter()
                                        .map(|x| text(field(x, "mechanism")))
                                        .collect::<Vec<_>>()
                                        .join(",")
                                })
                                .unwrap_or_default();
                            vec![text(field(u, "user")), mechs]
                        })
                        .collect()
                })
                .unwrap_or_default();
            print!("{}", table(&["USER", "MECHANISMS"], &rows));
            Ok(())
        }
        UserCommand::Delete { names } => {
            for name in names {
                api.send(
                    Method::DELETE,
                    api.url(&["v1", "users", &name], &[]),
                    None,
                    REQUEST_TIMEOUT,
                )
                .await?;
                println!("deleted user {name}");
            }
            Ok(())
        }
    }
}
