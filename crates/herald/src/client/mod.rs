//! Client commands: `herald topic …` (shaped after `rpk topic …`), `herald group …` and
//! `herald user …`, talking to a running server over its HTTP API. One module per command
//! family (`topic`, `produce`, `consume`, `group`, `user`), the HTTP client (`http`), output
//! (`output`) and argument parsers (`args`); the unit tests are in `tests`.
//!
//! Nothing here opens the log: every command is one or more HTTP requests, so the same binary
//! administers a local or a remote server. The pure parts (argument parsing, line splitting,
//! request bodies, output rendering) are plain functions with unit tests; the HTTP calls are
//! exercised against a real server.

mod args;
mod consume;
mod group;
mod http;
mod output;
mod produce;
mod topic;
mod user;

#[cfg(test)]
mod tests;

use args::*;
use consume::*;
use http::*;
use output::*;
use produce::*;
use topic::*;

pub use group::{GroupCommand, run_group};
pub(crate) use http::{Api, REQUEST_TIMEOUT};
pub(crate) use output::{field, table, text};
pub use topic::{TopicCommand, run_topic};
pub use user::{UserCommand, run_user};
