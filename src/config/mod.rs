//! Typed configuration: one TOML file per environment (`conf/*.toml`), secrets from a
//! git-ignored `.env` (dotenvy), real environment variables over both. Every error names the
//! file, the key and what to do about it; nothing starts with a half-valid config.

mod raw;
mod secret;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use secret::Warning;

/// Which roles run on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MachineType {
    /// Register, gateways and business workers on one box.
    All,
    /// Register and gateways.
    Master,
    /// Business workers only, pointing at a master's register.
    Worker,
}

/// Client protocol of a gateway listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    WebSocket,
    Text,
    Frame,
}

impl Proto {
    pub fn scheme(self, tls: bool) -> &'static str {
        match (self, tls) {
            (Proto::WebSocket, false) => "websocket",
            (Proto::WebSocket, true) => "wss",
            (Proto::Text, _) => "text",
            (Proto::Frame, _) => "frame",
        }
    }
}

/// What a gateway does when a client's send buffer is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendFullPolicy {
    /// Drop the message and count it in `send_fail` (GatewayWorker's behaviour).
    Drop,
    /// Close the slow client.
    Close,
}

/// Certificate chain and private key (PEM) for wss.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One gateway group: `count` processes sharing one public listener.
#[derive(Clone, Debug)]
pub struct GatewayConf {
    /// `name`: the group's name in logs and `status`.
    pub name: String,
    /// The scheme of `listen`: what clients speak.
    pub proto: Proto,
    /// `listen`: the public address, shared by the group's processes.
    pub listen: SocketAddr,
    /// `count`: processes in the group.
    pub count: u16,
    /// Inner port of process `id` is `start_port + id`.
    pub start_port: u16,
    /// `ping_interval`: the heartbeat period (zero: no heartbeat).
    pub ping_interval: Duration,
    /// `ping_not_response_limit`: heartbeats a client may stay silent for before it is closed
    /// (zero: never closed for silence).
    pub ping_not_response_limit: u32,
    /// `ping_data`: what the gateway sends as a heartbeat (empty: nothing is sent).
    pub ping_data: Vec<u8>,
    /// wss: the listener speaks TLS with these files.
    pub tls: Option<TlsFiles>,
    pub limits: GatewayLimits,
}

/// Per-gateway limits; every one has a key in `[gateway.limits]` and a default safe on the
/// internet.
#[derive(Clone, Debug)]
pub struct GatewayLimits {
    /// Largest client message (and inner packet) accepted; bigger closes the connection.
    pub max_package_size: usize,
    /// Per-client send buffer (workerman `sendToClientBufferSize`).
    pub send_to_client_buffer_size: usize,
    /// Per-link send buffer to a business worker (`sendToWorkerBufferSize`).
    pub send_to_worker_buffer_size: usize,
    pub send_full_policy: SendFullPolicy,
    /// Client connections per gateway process; accepting pauses above it.
    pub max_connections: usize,
    /// A client must finish its websocket/TLS handshake within this time.
    pub handshake_timeout: Duration,
    /// Close a client silent for this long (zero = off; the heartbeat is the usual tool).
    pub idle_timeout: Duration,
    pub max_groups_per_client: usize,
    pub max_uid_len: usize,
    pub max_session_size: usize,
    /// Backpressure and per-client rates.
    pub flow: FlowLimits,
}

/// What a gateway does with a client over its rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RatePolicy {
    /// Stop reading the client until its bucket refills (TCP pushes back on the sender).
    Throttle,
    /// Close the client (websocket: close 1008, policy violation).
    Close,
}

/// Flow control keys of `[gateway.limits]`: the worker link's high-water mark and each
/// client's rate (token buckets holding one second's worth; 0 = no limit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowLimits {
    /// Bytes queued on a worker link above which the clients that queued more than their
    /// share since it last drained are paused; they resume below a quarter of it. Capped at
    /// half of `send_to_worker_buffer_size`, above which every client of the link waits.
    pub worker_high_water: usize,
    pub max_messages_per_second: u64,
    pub max_bytes_per_second: u64,
    pub rate_policy: RatePolicy,
}

impl Default for FlowLimits {
    /// Far above what an application's client sends (the closed-loop benchmark, W2, stays
    /// under 10,000 messages per second per connection).
    fn default() -> FlowLimits {
        FlowLimits {
            worker_high_water: 262_144,
            max_messages_per_second: 20_000,
            max_bytes_per_second: 33_554_432,
            rate_policy: RatePolicy::Throttle,
        }
    }
}

/// The business workers of this machine.
#[derive(Clone, Debug)]
pub struct WorkerConf {
    pub name: String,
    pub count: u16,
    /// Which bundled application runs (`chat`, `echo`, ...).
    pub app: String,
    // Parsed and checked, but nothing reads it: the key has no effect.
    #[allow(dead_code)]
    pub send_to_gateway_buffer_size: usize,
    /// Blocking queries give up after this long.
    pub query_timeout: Duration,
    /// Keep websocket binary frames binary end to end (our extension; off = GatewayWorker's
    /// behaviour, everything is sent as text frames unless the app says binary).
    // Parsed and checked, but nothing reads it: the key has no effect.
    #[allow(dead_code)]
    pub binary_passthrough: bool,
}

/// The register of this machine.
#[derive(Clone, Debug)]
pub struct RegisterConf {
    pub listen: SocketAddr,
    pub auth_timeout: Duration,
}

/// The optional HTTP listener (server API, metrics, probes, dashboard), `[http]`.
#[derive(Clone, Debug)]
pub struct HttpConf {
    pub listen: SocketAddr,
    /// Bearer key of the server API (`GW_HTTP_API_KEY`); empty only on loopback.
    pub api_key: String,
    /// Concurrent HTTP connections; accepting pauses above it.
    pub max_connections: usize,
    /// Largest request body (bigger gets 413).
    pub max_body_size: usize,
    /// Largest request head (request line and headers; bigger gets 431).
    pub max_header_size: usize,
    /// A request must arrive completely within this time of its first byte (else 408).
    pub header_timeout: Duration,
    /// A kept-alive connection silent for this long is closed.
    pub idle_timeout: Duration,
    /// How long an API call waits for gateway replies.
    pub query_timeout: Duration,
}

/// The whole configuration of one machine.
#[derive(Clone, Debug)]
pub struct Config {
    /// The TOML file it came from.
    pub file: PathBuf,
    pub machine_type: MachineType,
    /// The inner ports listen on it (may be 0.0.0.0).
    pub lan_ip: Ipv4Addr,
    /// The address put into client_ids and announced to the registers (default `lan_ip`):
    /// differs from it behind NAT or in a container.
    pub advertise_ip: Ipv4Addr,
    pub register_address: Vec<SocketAddrV4>,
    // Decides TLS while parsing; nothing reads it afterwards.
    #[allow(dead_code)]
    pub production: bool,
    pub secret_key: String,
    pub run_dir: PathBuf,
    pub pid_file: PathBuf,
    pub log_file: PathBuf,
    pub stdout_file: PathBuf,
    pub stop_timeout: Duration,
    /// Reload: how long a new business worker may take to link to every gateway, and an old
    /// one to drain, before the master goes on.
    pub reload_timeout: Duration,
    /// Upgrade: the window over which wss clients (whose TLS session cannot move to the new
    /// gateway process) get close 1012, spread evenly.
    pub upgrade_drain: Duration,
    pub register: Option<RegisterConf>,
    pub gateways: Vec<GatewayConf>,
    pub worker: Option<WorkerConf>,
    pub http: Option<HttpConf>,
    /// Start even with an empty secret on a non-loopback listener (warned at every start).
    pub allow_empty_secret: bool,
    /// Found while loading; the master logs each at every start.
    pub warnings: Vec<Warning>,
}

impl Config {
    /// Load `file`, the `.env` next to the working directory (if any) and the environment.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        raw::load(file)
    }

    /// `text` as the configuration file `file`, without `.env` or the environment (tests).
    #[cfg(test)]
    pub fn from_text(file: &Path, text: &str) -> Result<Config, ConfigError> {
        raw::parse(file, text, &[])
    }

    /// Path of the Unix socket on which the gateway replacing the one whose inner port is
    /// `port` receives the handover (`upgrade`).
    pub fn handover_socket_path(&self, port: u16) -> PathBuf {
        self.run_dir.join(format!("handover-{port}.sock"))
    }

    /// Path of the inner Unix socket of the gateway whose inner port is `port`.
    pub fn inner_socket_path(&self, port: u16) -> PathBuf {
        self.run_dir.join(format!("gateway-{port}.sock"))
    }

    /// Path of the shared-memory statistics file.
    pub fn stats_path(&self) -> PathBuf {
        self.run_dir.join("gatewayworker.stats")
    }

    /// Number of gateway processes on this machine.
    pub fn gateway_processes(&self) -> usize {
        self.gateways.iter().map(|g| g.count as usize).sum()
    }

    /// An empty secret is allowed on a non-loopback listener (`allow_empty_secret`).
    pub fn exposed_without_secret(&self) -> bool {
        self.warnings.iter().any(|w| w.exposed)
    }
}

/// A configuration error: the file, the key (dotted path), what is wrong and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "config error in {}: {}", self.file.display(), self.problem)?;
        } else {
            write!(f, "config error in {}: key `{}`: {}", self.file.display(), self.key, self.problem)?;
        }
        if !self.fix.is_empty() {
            write!(f, " (fix: {})", self.fix)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}
