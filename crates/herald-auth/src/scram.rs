//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), as Kafka uses them in SASL (KIP-84).
//! Sans-I/O: a [`ServerExchange`] takes the client's messages as bytes and returns the bytes to
//! send back; a [`ClientExchange`] is the other side, for Herald's own admin client of a Kafka
//! cluster. Neither opens a socket or reads a clock.
//!
//! One exchange is `client_first` → server-first-message → `client_final` → server-final-message.
//! Any failure, a call out of order, or a completed exchange ends it: every later call returns
//! [`ScramError::Done`], so a replayed client-final-message is refused.
//!
//! Decisions, matching Kafka where Kafka decides:
//! - **No SASLprep.** Kafka's clients and broker use the password's UTF-8 bytes as they are.
//! - **Iterations.** [`StoredCredential::derive`] clamps the count into
//!   [`MIN_ITERATIONS`]`..=`[`MAX_ITERATIONS`] (Kafka's 4096..=16384): below it Kafka's clients
//!   refuse the exchange, above it a typo would stall the broker. A credential from `lookup` with
//!   fewer than `MIN_ITERATIONS` iterations, another mechanism, an empty salt or keys of the wrong
//!   length is unusable and is treated as an unknown user.
//! - **Unknown users.** The server-first-message for an unknown user carries a fake salt derived
//!   from the username and a server secret (HMAC), so it is stable per username and shaped like a
//!   real one (32-byte salt, [`DEFAULT_ITERATIONS`]); the proof is still checked, and only then is
//!   [`ScramError::UnknownUser`] returned. The secret is random per process unless set with
//!   [`ServerExchange::with_unknown_user_secret`]; set one shared, stable secret on every node so
//!   salts do not change across restarts. Real credentials should also use 32-byte salts and
//!   `DEFAULT_ITERATIONS` to stay indistinguishable. Callers must send the client the same
//!   generic failure for `UnknownUser` and `InvalidProof`.
//! - **Channel binding** is not supported: gs2 flags `y` and `p=` are refused, and `c=` must be
//!   the base64 of the exact gs2 header (`biws` for `n,,`).
//! - **authzid**, when present, must equal the username (as Kafka requires).
//! - **Extensions.** The reserved `m=` and any unknown extension are refused; Kafka's
//!   `tokenauth=true` (delegation tokens) is refused with [`ScramError::UnsupportedExtension`].
//!   Extensions in the client-final-message are ignored.

use std::fmt;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256, Sha512};
use subtle::ConstantTimeEq as _;

/// Kafka's minimum iteration count for SCRAM credentials.
pub const MIN_ITERATIONS: u32 = 4096;
/// Kafka's maximum iteration count for SCRAM credentials.
pub const MAX_ITERATIONS: u32 = 16384;
/// Iteration count of generated fake credentials for unknown users (Kafka's tooling default).
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Longest client message accepted; real ones are a few hundred bytes.
pub const MAX_MESSAGE_LEN: usize = 16 * 1024;
const SALT_LEN: usize = 32;
const NONCE_BYTES: usize = 32;

/// Runs `$body` with `$d` naming the mechanism's hash type.
macro_rules! with_digest {
    ($mech:expr, $d:ident => $body:expr) => {
        match $mech {
            Mechanism::Sha256 => {
                type $d = Sha256;
                $body
            }
            Mechanism::Sha512 => {
                type $d = Sha512;
                $body
            }
        }
    };
}

/// A SCRAM mechanism; serialized as its SASL name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Mechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    Sha256,
    #[serde(rename = "SCRAM-SHA-512")]
    Sha512,
}

impl Mechanism {
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha256, Mechanism::Sha512];

    /// The SASL mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism with this SASL name (exact, as Kafka matches it).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Length in bytes of the hash, and so of keys, proofs and signatures.
    pub fn digest_len(self) -> usize {
        with_digest!(self, D => <D as sha2::Digest>::output_size())
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        with_digest!(self, D => D::digest(data).to_vec())
    }

    /// HMAC over the concatenation of `parts`.
    fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        with_digest!(self, D => {
            // HMAC takes keys of any length, so this never fails; were it to, the empty result
            // matches no key or signature and the exchange fails closed.
            let Ok(mut mac) = <Hmac<D> as Mac>::new_from_slice(key) else {
                return Vec::new();
            };
            parts.iter().for_each(|part| mac.update(part));
            mac.finalize().into_bytes().to_vec()
        })
    }

    /// RFC 5802's `Hi()`: PBKDF2 with HMAC and one output block.
    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.digest_len()];
        with_digest!(self, D => pbkdf2::pbkdf2_hmac::<D>(password, salt, iterations, &mut out));
        out
    }
}

/// What the server keeps for a user and mechanism (never the password). Byte fields serialize
/// as standard base64. `Debug` hides the keys.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCredential {
    pub mechanism: Mechanism,
    #[serde(with = "b64")]
    pub salt: Vec<u8>,
    pub iterations: u32,
    #[serde(with = "b64")]
    pub stored_key: Vec<u8>,
    #[serde(with = "b64")]
    pub server_key: Vec<u8>,
}

impl fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredCredential")
            .field("mechanism", &self.mechanism)
            .field("salt", &STANDARD.encode(&self.salt))
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl StoredCredential {
    /// Derives the credential for `password`. `iterations` is clamped into
    /// `MIN_ITERATIONS..=MAX_ITERATIONS`; `salt` must not be empty for the credential to be usable.
    pub fn derive(mechanism: Mechanism, password: &str, salt: &[u8], iterations: u32) -> Self {
        let iterations = iterations.clamp(MIN_ITERATIONS, MAX_ITERATIONS);
        let salted = mechanism.salted_password(password.as_bytes(), salt, iterations);
        Self::keys_from_salted(mechanism, salt, &salted, iterations)
    }

    fn keys_from_salted(
        mechanism: Mechanism,
        salt: &[u8],
        salted_password: &[u8],
        iterations: u32,
    ) -> Self {
        let client_key = mechanism.hmac(salted_password, &[b"Client Key"]);
        StoredCredential {
            mechanism,
            salt: salt.to_vec(),
            iterations,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted_password, &[b"Server Key"]),
        }
    }

    /// The credential from an already salted password (`Hi(password, salt, iterations)`), as
    /// Kafka's AlterUserScramCredentials carries it. `None` if the salted password's length is
    /// not the mechanism's digest length, the salt is empty, or `iterations` is out of range.
    pub fn from_salted_password(
        mechanism: Mechanism,
        salt: &[u8],
        salted_password: &[u8],
        iterations: u32,
    ) -> Option<Self> {
        if salt.is_empty()
            || salted_password.len() != mechanism.digest_len()
            || !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations)
        {
            return None;
        }
        Some(Self::keys_from_salted(
            mechanism,
            salt,
            salted_password,
            iterations,
        ))
    }

    /// Derives the credential for `password` with a random 32-byte salt.
    pub fn generate(mechanism: Mechanism, password: &str, iterations: u32) -> Self {
        Self::derive(mechanism, password, &random_bytes::<SALT_LEN>(), iterations)
    }

    fn usable_for(&self, mechanism: Mechanism) -> bool {
        self.mechanism == mechanism
            && self.iterations >= MIN_ITERATIONS
            && !self.salt.is_empty()
            && self.stored_key.len() == mechanism.digest_len()
            && self.server_key.len() == mechanism.digest_len()
    }
}

/// Why an exchange failed. Details are for logs; tell the client only that authentication failed.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(String),
    #[error("unknown user")]
    UnknownUser,
    #[error("invalid client proof")]
    InvalidProof,
    #[error("nonce does not match the exchange")]
    InvalidNonce,
    #[error("unsupported SCRAM extension: {0}")]
    UnsupportedExtension(String),
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("SCRAM exchange already finished")]
    Done,
}

fn malformed(what: &str) -> ScramError {
    ScramError::Malformed(what.to_owned())
}

/// What to do after a client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes and wait for the client's next message (SCRAM's two rounds never need
    /// it after the client-final-message; kept for a uniform SASL driver).
    Continue(Vec<u8>),
    /// Authenticated: send `final_message` (server-final-message) and treat `username` as the
    /// authenticated identity.
    Done {
        username: String,
        final_message: Vec<u8>,
    },
}

/// One server-side authentication attempt.
pub struct ServerExchange {
    mechanism: Mechanism,
    server_nonce: String,
    unknown_user_secret: Option<Vec<u8>>,
    state: State,
}

enum State {
    Initial,
    AwaitingFinal(Box<Pending>),
    Finished,
}

struct Pending {
    username: String,
    gs2_header: String,
    /// client-first-message-bare "," server-first-message "," — the start of AuthMessage.
    auth_prefix: String,
    nonce: String,
    credential: StoredCredential,
    known_user: bool,
}

impl fmt::Debug for ServerExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Initial => "initial",
            State::AwaitingFinal(_) => "awaiting client-final",
            State::Finished => "finished",
        };
        f.debug_struct("ServerExchange")
            .field("mechanism", &self.mechanism)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl ServerExchange {
    /// A new exchange with a random server nonce (32 random bytes, base64url).
    pub fn new(mechanism: Mechanism) -> Self {
        let nonce = URL_SAFE_NO_PAD.encode(random_bytes::<NONCE_BYTES>());
        Self::with_nonce(mechanism, &nonce)
    }

    /// A new exchange with a fixed server nonce, for tests. It must be printable ASCII without
    /// `,`, or `client_first` fails with `Malformed`.
    pub fn with_nonce(mechanism: Mechanism, server_nonce: &str) -> Self {
        ServerExchange {
            mechanism,
            server_nonce: server_nonce.to_owned(),
            unknown_user_secret: None,
            state: State::Initial,
        }
    }

    /// Sets the secret that fake salts for unknown users are derived from (default: random per
    /// process). Use the same stable secret on every node.
    pub fn with_unknown_user_secret(mut self, secret: &[u8]) -> Self {
        self.unknown_user_secret = Some(secret.to_vec());
        self
    }

    /// Handles the client-first-message and returns the server-first-message. `lookup` gets the
    /// unescaped username and returns its credential for this mechanism, if any.
    pub fn client_first(
        &mut self,
        msg: &[u8],
        lookup: impl FnOnce(&str) -> Option<StoredCredential>,
    ) -> Result<Vec<u8>, ScramError> {
        match std::mem::replace(&mut self.state, State::Finished) {
            State::Initial => {}
            State::AwaitingFinal(_) => return Err(malformed("unexpected client-first-message")),
            State::Finished => return Err(ScramError::Done),
        }
        let (gs2_header, bare, username, client_nonce) = parse_client_first(msg)?;
        if !valid_nonce(&self.server_nonce) {
            return Err(malformed("server nonce is not printable"));
        }
        let (credential, known_user) = match lookup(&username) {
            Some(c) if c.usable_for(self.mechanism) => (c, true),
            _ => (self.fake_credential(&username), false),
        };
        let nonce = format!("{client_nonce}{}", self.server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&credential.salt),
            credential.iterations
        );
        let auth_prefix = format!("{bare},{server_first},");
        self.state = State::AwaitingFinal(Box::new(Pending {
            username,
            gs2_header: gs2_header.to_owned(),
            auth_prefix,
            nonce,
            credential,
            known_user,
        }));
        Ok(server_first.into_bytes())
    }

    /// Handles the client-final-message: checks channel binding, nonce and proof, and on success
    /// returns [`Step::Done`] with the server-final-message `v=<ServerSignature>`.
    pub fn client_final(&mut self, msg: &[u8]) -> Result<Step, ScramError> {
        let pending = match std::mem::replace(&mut self.state, State::Finished) {
            State::AwaitingFinal(p) => p,
            State::Initial => return Err(malformed("client-final before client-first")),
            State::Finished => return Err(ScramError::Done),
        };
        let text = utf8(msg)?;
        let (without_proof, proof) = text
            .rsplit_once(',')
            .ok_or_else(|| malformed("client-final-message has too few fields"))?;
        let proof = proof
            .strip_prefix("p=")
            .ok_or_else(|| malformed("client proof must be the last field"))?;
        let mut fields = without_proof.split(',');
        let binding = attribute(fields.next(), "c=")?;
        let nonce = attribute(fields.next(), "r=")?;
        for extension in fields {
            parse_extension(extension)?;
        }
        let binding = decode_base64(binding, "channel binding")?;
        let proof = decode_base64(proof, "client proof")?;
        if binding != pending.gs2_header.as_bytes() {
            return Err(ScramError::ChannelBinding);
        }
        if nonce != pending.nonce {
            return Err(ScramError::InvalidNonce);
        }

        let mech = self.mechanism;
        let cred = &pending.credential;
        let auth_message: [&[u8]; 2] = [pending.auth_prefix.as_bytes(), without_proof.as_bytes()];
        let client_signature = mech.hmac(&cred.stored_key, &auth_message);
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let proof_ok = proof.len() == client_signature.len()
            && bool::from(mech.hash(&client_key).ct_eq(&cred.stored_key));
        if !pending.known_user {
            return Err(ScramError::UnknownUser);
        }
        if !proof_ok {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = mech.hmac(&cred.server_key, &auth_message);
        Ok(Step::Done {
            username: pending.username,
            final_message: format!("v={}", STANDARD.encode(server_signature)).into_bytes(),
        })
    }

    /// A credential no password matches, stable per (secret, mechanism, username).
    fn fake_credential(&self, username: &str) -> StoredCredential {
        let secret: &[u8] = match &self.unknown_user_secret {
            Some(secret) => secret,
            None => process_secret(),
        };
        let mech = self.mechanism;
        let (name, user) = (mech.name().as_bytes(), username.as_bytes());
        let derive = |label: &[u8]| mech.hmac(secret, &[label, name, b"\0", user]);
        let mut salt = derive(b"herald-scram-unknown-user-salt\0");
        salt.truncate(SALT_LEN);
        StoredCredential {
            mechanism: mech,
            salt,
            iterations: DEFAULT_ITERATIONS,
            stored_key: derive(b"herald-scram-unknown-user-stored-key\0"),
            server_key: derive(b"herald-scram-unknown-user-server-key\0"),
        }
    }
}

/// Why a client-side exchange failed.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ScramClientError {
    #[error("malformed server SCRAM message: {0}")]
    Malformed(String),
    #[error("the server refused the exchange: {0}")]
    Rejected(String),
    #[error("the server's nonce does not extend the client's")]
    InvalidNonce,
    #[error("iteration count {0} is outside {MIN_ITERATIONS}..={MAX_ITERATIONS}")]
    Iterations(u32),
    #[error("the server's signature is wrong: it does not know this user's credential")]
    InvalidServerSignature,
    #[error("SCRAM exchange called out of order")]
    OutOfOrder,
}

/// One client-side authentication attempt: [`client_first`](Self::client_first) →
/// [`server_first`](Self::server_first) (returns the client-final-message) →
/// [`server_final`](Self::server_final), which verifies the server's signature, so a server
/// that does not hold the credential cannot pass itself off as one that does.
pub struct ClientExchange {
    mechanism: Mechanism,
    username: String,
    password: String,
    client_nonce: String,
    state: ClientState,
}

enum ClientState {
    Initial,
    AwaitingServerFirst,
    AwaitingServerFinal { expected_signature: Vec<u8> },
    Finished,
}

impl fmt::Debug for ClientExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientExchange")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl ClientExchange {
    /// A new exchange with a random client nonce (32 random bytes, base64url).
    pub fn new(mechanism: Mechanism, username: &str, password: &str) -> Self {
        let nonce = URL_SAFE_NO_PAD.encode(random_bytes::<NONCE_BYTES>());
        Self::with_nonce(mechanism, username, password, &nonce)
    }

    /// A new exchange with a fixed client nonce, for tests.
    pub fn with_nonce(mechanism: Mechanism, username: &str, password: &str, nonce: &str) -> Self {
        ClientExchange {
            mechanism,
            username: username.to_owned(),
            password: password.to_owned(),
            client_nonce: nonce.to_owned(),
            state: ClientState::Initial,
        }
    }

    fn bare(&self) -> String {
        let name = self.username.replace('=', "=3D").replace(',', "=2C");
        format!("n={name},r={}", self.client_nonce)
    }

    /// The client-first-message (no channel binding, no authzid, as Kafka's clients send it).
    pub fn client_first(&mut self) -> Vec<u8> {
        self.state = ClientState::AwaitingServerFirst;
        format!("n,,{}", self.bare()).into_bytes()
    }

    /// Handles the server-first-message and returns the client-final-message.
    pub fn server_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramClientError> {
        if !matches!(
            std::mem::replace(&mut self.state, ClientState::Finished),
            ClientState::AwaitingServerFirst
        ) {
            return Err(ScramClientError::OutOfOrder);
        }
        let text = client_text(msg)?;
        if let Some(error) = text.strip_prefix("e=") {
            return Err(ScramClientError::Rejected(
                error.chars().take(256).collect(),
            ));
        }
        let mut fields = text.split(',');
        let nonce = client_attribute(fields.next(), "r=")?;
        let salt = client_attribute(fields.next(), "s=")?;
        let iterations = client_attribute(fields.next(), "i=")?;
        if !nonce.starts_with(self.client_nonce.as_str())
            || nonce.len() <= self.client_nonce.len()
            || !valid_nonce(nonce)
        {
            return Err(ScramClientError::InvalidNonce);
        }
        let salt = STANDARD
            .decode(salt)
            .map_err(|_| ScramClientError::Malformed("bad base64 in salt".to_owned()))?;
        if salt.is_empty() {
            return Err(ScramClientError::Malformed("empty salt".to_owned()));
        }
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| ScramClientError::Malformed("bad iteration count".to_owned()))?;
        // Below the minimum Kafka's clients refuse too; above the maximum a hostile server could
        // make the client spin on PBKDF2.
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(ScramClientError::Iterations(iterations));
        }
        let mech = self.mechanism;
        let salted = mech.salted_password(self.password.as_bytes(), &salt, iterations);
        let client_key = mech.hmac(&salted, &[b"Client Key"]);
        let stored_key = mech.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.bare());
        let client_signature = mech.hmac(&stored_key, &[auth_message.as_bytes()]);
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = mech.hmac(&salted, &[b"Server Key"]);
        self.state = ClientState::AwaitingServerFinal {
            expected_signature: mech.hmac(&server_key, &[auth_message.as_bytes()]),
        };
        Ok(format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes())
    }

    /// Checks the server-final-message `v=<ServerSignature>`.
    pub fn server_final(&mut self, msg: &[u8]) -> Result<(), ScramClientError> {
        let expected = match std::mem::replace(&mut self.state, ClientState::Finished) {
            ClientState::AwaitingServerFinal { expected_signature } => expected_signature,
            _ => return Err(ScramClientError::OutOfOrder),
        };
        let text = client_text(msg)?;
        if let Some(error) = text.strip_prefix("e=") {
            return Err(ScramClientError::Rejected(
                error.chars().take(256).collect(),
            ));
        }
        let signature = client_attribute(text.split(',').next(), "v=")?;
        let signature = STANDARD.decode(signature).map_err(|_| {
            ScramClientError::Malformed("bad base64 in server signature".to_owned())
        })?;
        if bool::from(signature.ct_eq(&expected)) {
            Ok(())
        } else {
            Err(ScramClientError::InvalidServerSignature)
        }
    }
}

/// `Hi(password, salt, iterations)`, the salted password Kafka's AlterUserScramCredentials
/// carries (the client computes it, so the password never leaves the client).
pub fn salted_password(
    mechanism: Mechanism,
    password: &str,
    salt: &[u8],
    iterations: u32,
) -> Vec<u8> {
    mechanism.salted_password(password.as_bytes(), salt, iterations)
}

/// A random salt of the length Herald uses for its own credentials (32 bytes).
pub fn random_salt() -> Vec<u8> {
    random_bytes::<SALT_LEN>().to_vec()
}

fn client_text(msg: &[u8]) -> Result<&str, ScramClientError> {
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(ScramClientError::Malformed("message too long".to_owned()));
    }
    std::str::from_utf8(msg).map_err(|_| ScramClientError::Malformed("not UTF-8".to_owned()))
}

fn client_attribute<'a>(field: Option<&'a str>, prefix: &str) -> Result<&'a str, ScramClientError> {
    field
        .and_then(|f| f.strip_prefix(prefix))
        .ok_or_else(|| ScramClientError::Malformed(format!("missing attribute {prefix}")))
}

/// Parses a client-first-message into (gs2 header, client-first-message-bare, username, nonce).
fn parse_client_first(msg: &[u8]) -> Result<(&str, &str, String, &str), ScramError> {
    let text = utf8(msg)?;
    let (flag, rest) = split_comma(text, "missing gs2 header")?;
    match flag {
        "n" => {}
        "y" => return Err(ScramError::ChannelBinding),
        f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
        _ => return Err(malformed("bad gs2 channel-binding flag")),
    }
    let (authzid, bare) = split_comma(rest, "missing gs2 header")?;
    let gs2_header = text
        .get(..flag.len() + authzid.len() + 2)
        .unwrap_or_default();
    let authzid = match authzid {
        "" => None,
        a => Some(decode_saslname(attribute(Some(a), "a=")?)?),
    };
    let mut fields = bare.split(',').peekable();
    if fields.peek().is_some_and(|f| f.starts_with("m=")) {
        return Err(ScramError::UnsupportedExtension("m".to_owned()));
    }
    let username = decode_saslname(attribute(fields.next(), "n=")?)?;
    let nonce = attribute(fields.next(), "r=")?;
    if !valid_nonce(nonce) {
        return Err(malformed("nonce is not printable"));
    }
    for extension in fields {
        match parse_extension(extension)? {
            ("tokenauth", value) if !value.eq_ignore_ascii_case("true") => {}
            (key, _) => {
                let key = key.chars().take(64).collect();
                return Err(ScramError::UnsupportedExtension(key));
            }
        }
    }
    if authzid.is_some_and(|a| a != username) {
        return Err(malformed("authzid differs from the username"));
    }
    Ok((gs2_header, bare, username, nonce))
}

fn split_comma<'a>(text: &'a str, what: &str) -> Result<(&'a str, &'a str), ScramError> {
    text.split_once(',').ok_or_else(|| malformed(what))
}

fn utf8(msg: &[u8]) -> Result<&str, ScramError> {
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(malformed("message too long"));
    }
    std::str::from_utf8(msg).map_err(|_| malformed("not UTF-8"))
}

/// The value of a `key=value` field that must be present with this key.
fn attribute<'a>(field: Option<&'a str>, prefix: &str) -> Result<&'a str, ScramError> {
    field
        .and_then(|f| f.strip_prefix(prefix))
        .ok_or_else(|| ScramError::Malformed(format!("missing attribute {prefix}")))
}

/// An extension `key=value`, key made of ASCII letters (Kafka's keys are words, RFC's letters).
fn parse_extension(field: &str) -> Result<(&str, &str), ScramError> {
    match field.split_once('=') {
        Some((key, value)) if !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphabetic()) => {
            Ok((key, value))
        }
        _ => Err(malformed("bad extension attribute")),
    }
}

/// RFC 5802 saslname: `=2C` → `,`, `=3D` → `=`, any other `=` is an error; not empty.
fn decode_saslname(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '=' => match (chars.next(), chars.next()) {
                (Some('2'), Some('C')) => out.push(','),
                (Some('3'), Some('D')) => out.push('='),
                _ => return Err(malformed("bad escape in name")),
            },
            '\0' | ',' => return Err(malformed("bad character in name")),
            c => out.push(c),
        }
    }
    if out.is_empty() {
        return Err(malformed("empty name"));
    }
    Ok(out)
}

/// RFC 5802 nonce: printable ASCII except `,`, not empty.
fn valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

fn decode_base64(s: &str, what: &str) -> Result<Vec<u8>, ScramError> {
    STANDARD
        .decode(s)
        .map_err(|_| ScramError::Malformed(format!("bad base64 in {what}")))
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

fn process_secret() -> &'static [u8] {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    SECRET.get_or_init(random_bytes::<32>)
}

mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use Mechanism::{Sha256, Sha512};
    use ScramError as E;
    use proptest::prelude::*;

    const SNONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const CNONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";

    fn first(gs2: &str, user: &str) -> Vec<u8> {
        format!("{gs2}n={user},r={CNONCE}").into_bytes()
    }

    /// A minimal SCRAM client written from RFC 5802 (`user` already escaped): returns the
    /// client-final-message and the server-final-message it expects.
    fn finish(m: Mechanism, gs2: &str, user: &str, pw: &str, sf: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let sf = std::str::from_utf8(sf).unwrap();
        let get = |k: &str| sf.split(',').find_map(|f| f.strip_prefix(k)).unwrap();
        let nonce = get("r=");
        assert!(nonce.starts_with(CNONCE) && nonce.len() > CNONCE.len());
        let salt = STANDARD.decode(get("s=")).unwrap();
        let salted = m.salted_password(pw.as_bytes(), &salt, get("i=").parse().unwrap());
        let ck = m.hmac(&salted, &[b"Client Key"]);
        let without_proof = format!("c={},r={nonce}", STANDARD.encode(gs2));
        let auth = format!("n={user},r={CNONCE},{sf},{without_proof}");
        let sig = m.hmac(&m.hash(&ck), &[auth.as_bytes()]);
        let proof: Vec<u8> = ck.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        let server_sig = m.hmac(&m.hmac(&salted, &[b"Server Key"]), &[auth.as_bytes()]);
        let v = format!("v={}", STANDARD.encode(server_sig));
        let cf = format!("{without_proof},p={}", STANDARD.encode(proof));
        (cf.into_bytes(), v.into_bytes())
    }

    /// "user"/"pencil" with the RFC 7677 salt, derived once per mechanism (PBKDF2 is slow here).
    fn cached(m: Mechanism) -> StoredCredential {
        static CREDS: OnceLock<[StoredCredential; 2]> = OnceLock::new();
        let salt = STANDARD.decode(SALT).unwrap();
        let creds = CREDS.get_or_init(|| {
            Mechanism::ALL.map(|m| StoredCredential::derive(m, "pencil", &salt, 4096))
        });
        creds[usize::from(m == Sha512)].clone()
    }

    fn lookup(m: Mechanism) -> impl FnOnce(&str) -> Option<StoredCredential> {
        move |name| (name == "user").then(|| cached(m))
    }

    /// An exchange after the RFC client-first for `user`, and the server-first-message.
    fn started(m: Mechanism, user: &str) -> (ServerExchange, Vec<u8>) {
        let mut ex = ServerExchange::with_nonce(m, SNONCE).with_unknown_user_secret(b"k");
        let sf = ex.client_first(&first("n,,", user), lookup(m)).unwrap();
        (ex, sf)
    }

    /// As `started`, plus the client-final-message for `password`.
    fn ready(m: Mechanism, user: &str, password: &str) -> (ServerExchange, String) {
        let (ex, sf) = started(m, user);
        let (cf, _) = finish(m, "n,,", user, password, &sf);
        (ex, String::from_utf8(cf).unwrap())
    }

    fn done(step: Result<Step, ScramError>) -> (String, Vec<u8>) {
        match step {
            Ok(Step::Done {
                username: u,
                final_message: f,
            }) => (u, f),
            other => panic!("expected Done, got {other:?}"),
        }
    }

    /// The client side reproduces RFC 7677's exchange byte for byte and checks its signature.
    #[test]
    fn client_exchange_follows_rfc7677() {
        let mut client = ClientExchange::with_nonce(Sha256, "user", "pencil", CNONCE);
        assert_eq!(client.client_first(), first("n,,", "user"));
        let sf = format!("r={CNONCE}{SNONCE},s={SALT},i=4096");
        let cf = client.server_first(sf.as_bytes()).unwrap();
        let proof = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            cf,
            format!("c=biws,r={CNONCE}{SNONCE},p={proof}").into_bytes()
        );
        client
            .server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
    }

    #[test]
    fn client_and_server_agree_and_refuse_what_they_must() {
        for m in Mechanism::ALL {
            let mut server = ServerExchange::new(m);
            let mut client = ClientExchange::new(m, "user", "pencil");
            let sf = server
                .client_first(&client.client_first(), lookup(m))
                .unwrap();
            let cf = client.server_first(&sf).unwrap();
            let (user, v) = done(server.client_final(&cf));
            assert_eq!(user, "user");
            client.server_final(&v).unwrap();

            // A wrong password fails at the server.
            let mut server = ServerExchange::new(m);
            let mut client = ClientExchange::new(m, "user", "pen");
            let sf = server
                .client_first(&client.client_first(), lookup(m))
                .unwrap();
            let cf = client.server_first(&sf).unwrap();
            assert_eq!(server.client_final(&cf), Err(E::InvalidProof));

            // A server that does not hold the credential cannot forge its signature.
            let mut client = ClientExchange::new(m, "user", "pencil");
            let mut server = ServerExchange::new(m);
            let sf = server
                .client_first(&client.client_first(), lookup(m))
                .unwrap();
            client.server_first(&sf).unwrap();
            let forged = format!("v={}", STANDARD.encode(vec![0u8; m.digest_len()]));
            assert_eq!(
                client.server_final(forged.as_bytes()),
                Err(ScramClientError::InvalidServerSignature)
            );
        }
        // A nonce that does not extend the client's, and a runaway iteration count, are refused.
        let mut client = ClientExchange::with_nonce(Sha256, "user", "pencil", CNONCE);
        client.client_first();
        let bad = format!("r=other{SNONCE},s={SALT},i=4096");
        assert_eq!(
            client.server_first(bad.as_bytes()),
            Err(ScramClientError::InvalidNonce)
        );
        let mut client = ClientExchange::with_nonce(Sha256, "user", "pencil", CNONCE);
        client.client_first();
        let slow = format!("r={CNONCE}x,s={SALT},i=100000000");
        assert_eq!(
            client.server_first(slow.as_bytes()),
            Err(ScramClientError::Iterations(100_000_000))
        );
        let mut client = ClientExchange::with_nonce(Sha256, "user", "pencil", CNONCE);
        assert_eq!(
            client.server_final(b"v=x"),
            Err(ScramClientError::OutOfOrder)
        );
    }

    #[test]
    fn rfc7677_sha256_vector() {
        let (mut ex, sf) = started(Sha256, "user");
        assert_eq!(sf, format!("r={CNONCE}{SNONCE},s={SALT},i=4096").as_bytes());
        let proof = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let cf = format!("c=biws,r={CNONCE}{SNONCE},p={proof}");
        let v = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec();
        // The test client reproduces the RFC too.
        assert_eq!(
            finish(Sha256, "n,,", "user", "pencil", &sf),
            (cf.clone().into(), v.clone())
        );
        assert_eq!(done(ex.client_final(cf.as_bytes())), ("user".to_owned(), v));
    }

    /// The RFC 7677 inputs through SCRAM-SHA-512; expected values from an independent
    /// implementation (Python's hashlib/hmac, checked against the RFC 7677 vector first).
    #[test]
    fn salted_password_form_matches_derive() {
        let m = Mechanism::Sha256;
        let d = StoredCredential::derive(m, "pencil", b"salt1234", 4096);
        let salted = m.salted_password(b"pencil", b"salt1234", 4096);
        assert_eq!(
            StoredCredential::from_salted_password(m, b"salt1234", &salted, 4096),
            Some(d)
        );
        assert_eq!(
            StoredCredential::from_salted_password(m, b"", &salted, 4096),
            None
        );
        assert_eq!(
            StoredCredential::from_salted_password(m, b"s", &salted[1..], 4096),
            None
        );
        assert_eq!(
            StoredCredential::from_salted_password(m, b"s", &salted, 1),
            None
        );
    }

    #[test]
    fn sha512_known_answer() {
        let (mut ex, _) = started(Sha512, "user");
        let proof = "gMGXRcevScNtxZ6/8lQYpGtnsNAc3mGcmNomv+xnoOMw+3R2xNJdMNnzMlTN8PPC6wdp6dybEmDYXYTxwnYPJQ==";
        let cf = format!("c=biws,r={CNONCE}{SNONCE},p={proof}");
        let v = "v=ZQnYEgWQMFmmsM8aQMF0nDDCy/AgCzkwk8CmMZYcMg0vSVlKDanekLtifDSeVGT4+5ZxXnJq199RVG2rR7N7Zw==";
        assert_eq!(done(ex.client_final(cf.as_bytes())).1, v.as_bytes());
    }

    #[test]
    fn round_trip_both_mechanisms_with_escaped_name_and_authzid() {
        for m in Mechanism::ALL {
            let cred = StoredCredential::generate(m, "s3cret ü", 1);
            assert_eq!((cred.salt.len(), cred.iterations), (32, MIN_ITERATIONS));
            let (gs2, user) = ("n,a=a=2Cb=3Dc,", "a=2Cb=3Dc");
            let mut ex = ServerExchange::new(m);
            let lookup = |n: &str| (n == "a,b=c").then_some(cred);
            let sf = ex.client_first(&first(gs2, user), lookup).unwrap();
            let (cf, expected) = finish(m, gs2, user, "s3cret ü", &sf);
            assert_eq!(done(ex.client_final(&cf)), ("a,b=c".to_owned(), expected));
        }
    }

    #[test]
    fn wrong_password_is_invalid_proof() {
        for m in Mechanism::ALL {
            let (mut ex, cf) = ready(m, "user", "pencil2");
            assert_eq!(ex.client_final(cf.as_bytes()), Err(E::InvalidProof));
            assert_eq!(ex.client_final(cf.as_bytes()), Err(E::Done));
        }
    }

    #[test]
    fn unknown_user_fails_only_at_final_with_stable_realistic_salt() {
        let cred = StoredCredential::generate(Sha256, "pencil", 4096);
        let mut ex = ServerExchange::with_nonce(Sha256, SNONCE);
        let real = ex
            .client_first(&first("n,,", "user"), |_| Some(cred))
            .unwrap();
        let (_, fake) = started(Sha256, "mallory");
        assert_eq!(fake, started(Sha256, "mallory").1, "stable per username");
        assert_ne!(fake, started(Sha256, "trudy").1);
        let shape = |sf: &[u8]| {
            let sf = String::from_utf8(sf.to_vec()).unwrap();
            let f: Vec<_> = sf
                .split(',')
                .map(|f| (f[..2].to_owned(), f.len()))
                .collect();
            (f, sf.ends_with(",i=4096"))
        };
        assert_eq!(shape(&fake), shape(&real));
        let (mut ex, cf) = ready(Sha256, "mallory", "pencil");
        assert_eq!(ex.client_final(cf.as_bytes()), Err(E::UnknownUser));
    }

    #[test]
    fn unusable_stored_credentials_are_treated_as_unknown() {
        let mut low = cached(Sha256);
        low.iterations = 1;
        for cred in [low, cached(Sha512)] {
            let mut ex = ServerExchange::with_nonce(Sha256, SNONCE);
            let sf = ex
                .client_first(&first("n,,", "user"), |_| Some(cred))
                .unwrap();
            let (cf, _) = finish(Sha256, "n,,", "user", "pencil", &sf);
            assert!(sf.ends_with(b",i=4096"));
            assert_eq!(ex.client_final(&cf), Err(E::UnknownUser));
        }
    }

    #[test]
    fn tampered_nonce_is_invalid_nonce() {
        let (mut ex, cf) = ready(Sha256, "user", "pencil");
        let tampered = cf.replace("k0,p=", "k1,p=");
        assert_eq!(ex.client_final(tampered.as_bytes()), Err(E::InvalidNonce));
    }

    #[test]
    fn channel_binding_is_refused() {
        for gs2 in ["y,,", "p=tls-server-end-point,,"] {
            let mut ex = ServerExchange::new(Sha256);
            let r = ex.client_first(&first(gs2, "user"), lookup(Sha256));
            assert_eq!(r, Err(E::ChannelBinding), "{gs2}");
        }
        // c= must be the base64 of the exact gs2 header ("eSws" is "y,,").
        let (mut ex, cf) = ready(Sha256, "user", "pencil");
        let cf = cf.replace("c=biws", "c=eSws");
        assert_eq!(ex.client_final(cf.as_bytes()), Err(E::ChannelBinding));
    }

    #[test]
    fn extensions_and_authzid_mismatch_are_refused() {
        let ext = |k: &str| E::UnsupportedExtension(k.to_owned());
        let cases = [
            ("n,,n=user,r=abc,tokenauth=true", ext("tokenauth")),
            ("n,,m=ext,n=user,r=abc", ext("m")),
            ("n,,n=user,r=abc,x=1", ext("x")),
            (
                "n,a=admin,n=user,r=abc",
                malformed("authzid differs from the username"),
            ),
        ];
        for (msg, err) in cases {
            let mut ex = ServerExchange::new(Sha512);
            assert_eq!(ex.client_first(msg.as_bytes(), |_| None), Err(err), "{msg}");
        }
        let mut ex = ServerExchange::new(Sha512);
        let r = ex.client_first(b"n,,n=user,r=abc,tokenauth=false", |_| None);
        assert!(r.is_ok());
    }

    fn is_malformed<T: fmt::Debug>(r: Result<T, ScramError>) -> bool {
        matches!(r, Err(E::Malformed(_)))
    }

    #[test]
    fn malformed_inputs_are_rejected() {
        let firsts = "|n|n,|n,,|n,,n=user|n,,r=abc|n,,n=,r=abc|n,,n=us=er,r=x|n,,n=user,r=|\
                      n,,n=user,r=a b|x,,n=user,r=abc|n,b=x,n=user,r=abc|n,,n=user,r=abc,=1";
        let long = vec![b'a'; MAX_MESSAGE_LEN + 1];
        let bytes = [b"n,,n=u\xff,r=abc".as_slice(), &long];
        for msg in firsts.split('|').map(str::as_bytes).chain(bytes) {
            let mut ex = ServerExchange::new(Sha256);
            let r = ex.client_first(msg, lookup(Sha256));
            assert!(is_malformed(r), "{msg:?}");
        }
        let finals = "|c=biws|c=biws,r=N|c=biws,r=N,p=!!!|c=b!ws,r=N,p=AAAA|r=N,c=biws,p=AAAA|\
                      c=biws,p=AAAA|c=biws,r=N,bad,p=AAAA";
        let nonce = format!("{CNONCE}{SNONCE}");
        for cf in finals.split('|').map(|f| f.replace('N', &nonce)) {
            let (mut ex, _) = started(Sha256, "user");
            assert!(is_malformed(ex.client_final(cf.as_bytes())), "{cf}");
        }
        let (mut ex, _) = started(Sha256, "user");
        assert!(is_malformed(ex.client_final(b"c=biws,r=\xff,p=AAAA")));
        // A well-formed proof of the wrong length is simply wrong.
        let (mut ex, _) = started(Sha256, "user");
        let short = format!("c=biws,r={nonce},p=AAAA");
        assert_eq!(ex.client_final(short.as_bytes()), Err(E::InvalidProof));
    }

    #[test]
    fn calls_out_of_order_end_the_exchange() {
        let msg = first("n,,", "user");
        let mut ex = ServerExchange::new(Sha256);
        assert!(is_malformed(ex.client_final(b"c=biws,r=x,p=AAAA")));
        assert_eq!(ex.client_first(&msg, lookup(Sha256)), Err(E::Done));

        let (mut ex, _) = started(Sha256, "user");
        assert!(is_malformed(ex.client_first(&msg, lookup(Sha256))));
        assert_eq!(ex.client_final(b"anything"), Err(E::Done));

        let mut ex = ServerExchange::new(Sha256);
        assert!(ex.client_first(b"garbage", |_| None).is_err());
        assert_eq!(ex.client_first(&msg, lookup(Sha256)), Err(E::Done));
        assert!(format!("{ex:?}").contains("finished"));
    }

    #[test]
    fn replayed_client_final_is_refused() {
        let (mut ex, cf) = ready(Sha256, "user", "pencil");
        assert!(ex.client_final(cf.as_bytes()).is_ok());
        assert_eq!(ex.client_final(cf.as_bytes()), Err(E::Done));
        // Against a fresh exchange (new server nonce) the captured message is stale.
        let mut fresh = ServerExchange::new(Sha256);
        let r = fresh.client_first(&first("n,,", "user"), lookup(Sha256));
        assert!(r.is_ok());
        assert_eq!(fresh.client_final(cf.as_bytes()), Err(E::InvalidNonce));
    }

    #[test]
    fn derive_clamps_iterations() {
        let derive = |i| StoredCredential::derive(Sha256, "pw", b"salt", i);
        assert_eq!(derive(1), derive(MIN_ITERATIONS));
        assert_eq!(derive(0).iterations, MIN_ITERATIONS);
        assert_eq!(derive(u32::MAX).iterations, MAX_ITERATIONS);
    }

    #[test]
    fn mechanism_names_serde_and_redacted_debug() {
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::from_name(m.name()), Some(m));
        }
        assert_eq!(Mechanism::from_name("scram-sha-256"), None);
        let cred = cached(Sha512);
        let json = serde_json::to_string(&cred).unwrap();
        assert!(
            json.contains("\"SCRAM-SHA-512\"") && json.contains(SALT),
            "{json}"
        );
        let parse = |j: &str| serde_json::from_str::<StoredCredential>(j);
        assert_eq!(parse(&json).unwrap(), cred);
        assert!(parse(&json.replace(SALT, "***")).is_err());
        assert!(!format!("{cred:?}").contains(&STANDARD.encode(&cred.stored_key)));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut ex = ServerExchange::new(Sha256);
            let _ = ex.client_first(&bytes, lookup(Sha256));
            let _ = ex.client_final(&bytes);
            let (mut ex, _) = started(Sha512, "user");
            prop_assert!(ex.client_final(&bytes).is_err());
        }

        #[test]
        fn near_valid_messages_never_panic(
            first in "[ny]?,(a=[a-z]{0,2})?,n=[a-z]{0,3}(=2C|=3D|=)?[a-z]{0,2},r=[!-+\\--~]{1,6}(,tokenauth=[a-z]{0,4})?",
            last in "c=(biws|[A-Za-z0-9+/=]{0,8}),r=[!-~]{0,12}(,[a-z]=[a-z]*)?,p=[A-Za-z0-9+/=]{0,90}",
        ) {
            let mut ex = ServerExchange::new(Sha256);
            if ex.client_first(first.as_bytes(), lookup(Sha256)).is_ok() {
                prop_assert!(ex.client_final(last.as_bytes()).is_err());
            }
        }
    }
}
