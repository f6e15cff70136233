//! Reading the TOML tree key by key, so that every error can name its key, and applying
//! `.env` / environment overrides.

use std::collections::BTreeSet;
use std::net::{SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

use super::{
    Config, ConfigError, FlowLimits, GatewayConf, GatewayLimits, HttpConf, MachineType, Proto, RatePolicy,
    RegisterConf, SendFullPolicy, TlsFiles, WorkerConf,
};

/// Environment variables read (from `.env` or the real environment), with what they set.
pub const ENV_KEYS: &[(&str, &str)] = &[
    ("GW_SECRET_KEY", "secret_key: shared by register, gateways, workers and GatewayClients"),
    ("GW_LAN_IP", "lan_ip: the address the inner ports listen on (may be 0.0.0.0)"),
    ("GW_ADVERTISE_IP", "advertise_ip: the address put into client_ids and announced (default lan_ip)"),
    ("GW_REGISTER_ADDRESS", "register_address: one or several ip:port, comma-separated"),
    ("GW_STAGE_MODE", "stage_mode: dev or production (production turns on wss)"),
    ("GW_MACHINE_TYPE", "machine_type: all, master or worker"),
    ("GW_RUN_DIR", "run_dir: pid, log, sockets and stats live here"),
    ("GW_TLS_CERT", "tls.cert: PEM certificate chain for wss"),
    ("GW_TLS_KEY", "tls.key: PEM private key for wss"),
    ("GW_HTTP_API_KEY", "http api key: `Authorization: Bearer <key>` of the HTTP server API"),
];

/// Load and validate.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    let env = load_env(file)?;
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        key: String::new(),
        problem: format!("cannot read the file: {e}"),
        fix: "pass an existing file with --conf FILE or GW_CONF".into(),
    })?;
    let table: Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
        file: file.to_path_buf(),
        key: String::new(),
        problem: format!("not valid TOML: {}", e.message()),
        fix: line_hint(&text, e.span()),
    })?;
    let mut top = Sec::new(file, "", &table);
    let cfg = build(&mut top, &env)?;
    top.finish()?;
    Ok(cfg)
}

/// Parse `text` as if read from `file`, with `env` as the environment (unit tests of other
/// modules: no `.env`, no process environment).
#[cfg(test)]
pub fn parse(file: &Path, text: &str, env: &[(String, String)]) -> Result<Config, ConfigError> {
    let table: Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
        file: file.to_path_buf(),
        key: String::new(),
        problem: format!("not valid TOML: {}", e.message()),
        fix: String::new(),
    })?;
    let mut top = Sec::new(file, "", &table);
    let cfg = build(&mut top, env)?;
    top.finish()?;
    Ok(cfg)
}

/// Variables from `.env` (path from `GW_ENV_FILE`, default `.env` in the working directory)
/// overlaid by the real environment.
fn load_env(conf: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let path = std::env::var_os("GW_ENV_FILE").map(PathBuf::from).unwrap_or_else(|| ".env".into());
    if path.as_os_str() != "none" && path.exists() {
        let iter = dotenvy::from_path_iter(&path).map_err(|e| env_error(&path, e))?;
        for item in iter {
            let (k, v) = item.map_err(|e| env_error(&path, e))?;
            if std::env::var_os(&k).is_none() {
                // SAFETY: called at start-up of a single-threaded process, before anything
                // else reads the environment concurrently.
                unsafe { std::env::set_var(&k, &v) };
            }
        }
    }
    let _ = conf;
    Ok(ENV_KEYS.iter().filter_map(|(k, _)| std::env::var(k).ok().map(|v| (k.to_string(), v))).collect())
}

fn env_error(path: &Path, e: dotenvy::Error) -> ConfigError {
    ConfigError {
        file: path.to_path_buf(),
        key: String::new(),
        problem: format!("cannot read the env file: {e}"),
        fix: "one KEY=value per line; see conf/example.env".into(),
    }
}

fn line_hint(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(s) => {
            let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
            format!("see line {line}")
        }
        None => String::new(),
    }
}

/// The value of an environment override; an empty one (`GW_SECRET_KEY=` as shipped in
/// conf/example.env) counts as not set, so it never wipes a key of the conf file.
fn env_get<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter().find(|(k, v)| k == key && !v.is_empty()).map(|(_, v)| v.as_str())
}

/// An IPv4 address from the top-level `key`, overridden by the environment variable `var`.
fn ipv4_key(
    top: &mut Sec<'_>,
    env: &[(String, String)],
    (key, var): (&str, &str),
    default: &str,
) -> Result<std::net::Ipv4Addr, ConfigError> {
    let v = top.string(key, Some(default))?;
    match env_get(env, var) {
        Some(e) => e.parse().map_err(|_| top.env_err(var, e, "an IPv4 address such as 10.0.0.5")),
        None => v.parse().map_err(|_| {
            top.err(
                key,
                format!("{v:?} is not an IPv4 address"),
                "use an IPv4 address of this machine, e.g. \"10.0.0.5\" (a hostname breaks client_id routing)",
            )
        }),
    }
}

fn build(top: &mut Sec<'_>, env: &[(String, String)]) -> Result<Config, ConfigError> {
    let mut cfg = top_level(top, env)?;
    let tls_files = tls_files(top, env)?;
    cfg.register = section(top, "register", register)?;
    for (i, mut s) in top.tables("gateway")?.into_iter().enumerate() {
        cfg.gateways.push(gateway(&mut s, i, cfg.production, tls_files.as_ref())?);
        s.finish()?;
    }
    cfg.worker = section(top, "worker", worker)?;
    cfg.http = section(top, "http", |s| http(s, env))?;
    check_roles(&cfg, top)?;
    check_secrets(&mut cfg, top)?;
    Ok(cfg)
}

/// The keys of the top level; the sections are left empty for [`build`] to fill.
fn top_level(top: &mut Sec<'_>, env: &[(String, String)]) -> Result<Config, ConfigError> {
    // Every key is read from the file (so its type is checked and it never counts as
    // unknown), then the environment overrides it.
    let machine_type = machine_type(top, env)?;
    let lan_ip = ipv4_key(top, env, ("lan_ip", "GW_LAN_IP"), "127.0.0.1")?;
    let advertise_ip = ipv4_key(top, env, ("advertise_ip", "GW_ADVERTISE_IP"), &lan_ip.to_string())?;
    if advertise_ip.is_unspecified() {
        return Err(top.err(
            "advertise_ip",
            format!("the advertised address is {advertise_ip}, which nobody can connect to"),
            "with lan_ip = \"0.0.0.0\" set advertise_ip to the address other machines reach this one at",
        ));
    }
    let register_address = register_address(top, env)?;
    let production = production(top, env)?;
    let v = top.string("secret_key", Some(""))?;
    let secret_key = env_get(env, "GW_SECRET_KEY").map(str::to_string).unwrap_or(v);
    let v = top.string("run_dir", Some("run"))?;
    let run_dir = PathBuf::from(env_get(env, "GW_RUN_DIR").map(str::to_string).unwrap_or(v));
    Ok(Config {
        file: top.file.to_path_buf(),
        machine_type,
        lan_ip,
        advertise_ip,
        register_address,
        production,
        secret_key,
        pid_file: top.path("pid_file", &run_dir.join("gatewayworker.pid"))?,
        log_file: top.path("log_file", &run_dir.join("gatewayworker.log"))?,
        stdout_file: top.path("stdout_file", Path::new("/dev/null"))?,
        stop_timeout: top.seconds("stop_timeout", 2.0)?,
        reload_timeout: top.seconds("reload_timeout", 10.0)?,
        upgrade_drain: top.seconds("upgrade_drain", 30.0)?,
        run_dir,
        register: None,
        gateways: Vec::new(),
        worker: None,
        http: None,
        allow_empty_secret: false,
        warnings: Vec::new(),
    })
}

fn machine_type(top: &mut Sec<'_>, env: &[(String, String)]) -> Result<MachineType, ConfigError> {
    let v = top.string("machine_type", Some("all"))?;
    match env_get(env, "GW_MACHINE_TYPE") {
        Some(e) => {
            parse_machine_type(e).ok_or_else(|| top.env_err("GW_MACHINE_TYPE", e, "all, master or worker"))
        }
        None => parse_machine_type(&v).ok_or_else(|| {
            top.err(
                "machine_type",
                format!("unknown machine type {v:?}"),
                "use \"all\", \"master\" or \"worker\"",
            )
        }),
    }
}

fn register_address(top: &mut Sec<'_>, env: &[(String, String)]) -> Result<Vec<SocketAddrV4>, ConfigError> {
    let list = top.string_or_list("register_address", "127.0.0.1:1236")?;
    match env_get(env, "GW_REGISTER_ADDRESS") {
        Some(e) => {
            let list: Vec<String> =
                e.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
            parse_register_list(&list)
                .map_err(|bad| top.env_err("GW_REGISTER_ADDRESS", &bad, "ip:port[,ip:port...]"))
        }
        None => parse_register_list(&list).map_err(|bad| {
            top.err(
                "register_address",
                format!("{bad:?} is not an ip:port address"),
                "write \"10.0.0.5:1236\" or a list [\"10.0.0.5:1236\", \"10.0.0.6:1236\"]",
            )
        }),
    }
}

/// `stage_mode`: true for production (which turns on wss).
fn production(top: &mut Sec<'_>, env: &[(String, String)]) -> Result<bool, ConfigError> {
    let v = top.string("stage_mode", Some("dev"))?;
    let stage = env_get(env, "GW_STAGE_MODE").map(str::to_string).unwrap_or(v);
    match stage.as_str() {
        "production" | "prod" => Ok(true),
        "dev" | "development" | "local" | "testing" | "test" => Ok(false),
        other => Err(top.err(
            "stage_mode",
            format!("unknown stage mode {other:?}"),
            "use \"dev\" or \"production\" (production turns on wss)",
        )),
    }
}

/// An optional section `key`, read by `read` and then checked for unknown keys.
fn section<T>(
    top: &mut Sec<'_>,
    key: &str,
    read: impl FnOnce(&mut Sec<'_>) -> Result<T, ConfigError>,
) -> Result<Option<T>, ConfigError> {
    let Some(mut s) = top.sub(key)? else { return Ok(None) };
    let v = read(&mut s)?;
    s.finish()?;
    Ok(Some(v))
}

/// `[register]`.
fn register(s: &mut Sec<'_>) -> Result<RegisterConf, ConfigError> {
    let (proto, listen) = s.listen("listen", Some("text://0.0.0.0:1236"))?;
    if proto != "text" {
        return Err(s.err("listen", format!("the register speaks text, not {proto}"), "use text://IP:PORT"));
    }
    let auth_timeout = s.seconds("auth_timeout", 10.0)?;
    Ok(RegisterConf { listen, auth_timeout })
}

/// `[worker]`.
fn worker(s: &mut Sec<'_>) -> Result<WorkerConf, ConfigError> {
    Ok(WorkerConf {
        name: s.string("name", Some("BusinessWorker"))?,
        count: s.int("count", 1, 1, 1024)? as u16,
        app: s.string("app", Some("chat"))?,
        send_to_gateway_buffer_size: s.int("send_to_gateway_buffer_size", 10_240_000, 1024, 1 << 32)?
            as usize,
        query_timeout: s.seconds("query_timeout", 5.0)?,
        binary_passthrough: s.bool("binary_passthrough", true)?,
    })
}

/// `allow_empty_secret`, then the exposure and length checks of the secret.
fn check_secrets(cfg: &mut Config, top: &mut Sec<'_>) -> Result<(), ConfigError> {
    cfg.allow_empty_secret = top.bool("allow_empty_secret", false)?;
    super::secret::check(cfg)
}

fn check_roles(cfg: &Config, top: &Sec<'_>) -> Result<(), ConfigError> {
    let needs_gateway = cfg.machine_type != MachineType::Worker;
    let needs_worker = cfg.machine_type != MachineType::Master;
    if needs_gateway && cfg.register.is_none() {
        return Err(top.err(
            "register",
            "missing: this machine type runs the register".into(),
            "add a [register] section with listen = \"text://0.0.0.0:1236\"",
        ));
    }
    if needs_gateway && cfg.gateways.is_empty() {
        return Err(top.err(
            "gateway",
            "missing: this machine type runs gateways".into(),
            "add a [[gateway]] section with listen, count and start_port",
        ));
    }
    if needs_worker && cfg.worker.is_none() {
        return Err(top.err(
            "worker",
            "missing: this machine type runs business workers".into(),
            "add a [worker] section with name, count and app",
        ));
    }
    let mut ports = BTreeSet::new();
    for (i, g) in cfg.gateways.iter().enumerate() {
        for id in 0..g.count {
            let port = g.start_port as u32 + id as u32;
            if port > 65535 || !ports.insert(port) {
                return Err(top.err(
                    &format!("gateway[{i}].start_port"),
                    format!(
                        "inner ports {}..{} overlap another gateway group or pass 65535",
                        g.start_port, port
                    ),
                    "give each gateway group its own range (GatewayWorker convention: step 1000)",
                ));
            }
        }
    }
    Ok(())
}

fn gateway(
    s: &mut Sec<'_>,
    i: usize,
    production: bool,
    tls: Option<&TlsFiles>,
) -> Result<GatewayConf, ConfigError> {
    let (scheme, listen) = s.listen("listen", None)?;
    let (proto, wants_tls) = match scheme.as_str() {
        "websocket" | "ws" => (Proto::WebSocket, production),
        "wss" => (Proto::WebSocket, true),
        "text" => (Proto::Text, false),
        "frame" => (Proto::Frame, false),
        other => {
            return Err(s.err(
                "listen",
                format!("unsupported client protocol {other:?}"),
                "use websocket://, wss://, text:// or frame://",
            ));
        }
    };
    let wants_tls = s.bool("tls", wants_tls)?;
    let tls = if wants_tls {
        Some(tls.cloned().ok_or_else(|| {
            s.err(
                "tls",
                "TLS is on for this listener but no certificate is configured".into(),
                "set [tls] cert and key (or GW_TLS_CERT / GW_TLS_KEY), or stage_mode = \"dev\"",
            )
        })?)
    } else {
        None
    };
    let ping_data = s.string("ping_data", Some(""))?.into_bytes();
    let limits = match section(s, "limits", limits)? {
        Some(v) => v,
        None => limits(&mut Sec::empty(s.file, &format!("{}.limits", s.path)))?,
    };
    Ok(GatewayConf {
        name: s.string("name", Some(&format!("Gateway{i}")))?,
        proto,
        listen,
        count: s.int("count", 1, 1, 256)? as u16,
        start_port: s.int("start_port", 2000 + 100 * i as i64, 1, 65535)? as u16,
        ping_interval: s.seconds("ping_interval", 0.0)?,
        ping_not_response_limit: s.int("ping_not_response_limit", 0, 0, 1_000_000)? as u32,
        ping_data,
        tls,
        limits,
    })
}

/// `send_full_policy` values; the first is the default.
const SEND_FULL_POLICIES: &[(&str, SendFullPolicy, &str)] = &[
    ("drop", SendFullPolicy::Drop, "drop the message, counted in send_fail"),
    ("close", SendFullPolicy::Close, "close the client"),
];

/// `rate_policy` values; the first is the default.
const RATE_POLICIES: &[(&str, RatePolicy, &str)] = &[
    ("throttle", RatePolicy::Throttle, "stop reading the client for a while"),
    ("close", RatePolicy::Close, "close the client with 1008"),
];

fn limits(l: &mut Sec<'_>) -> Result<GatewayLimits, ConfigError> {
    let send_full_policy = l.policy("send_full_policy", SEND_FULL_POLICIES)?;
    Ok(GatewayLimits {
        max_package_size: l.int("max_package_size", 10_485_760, 64, 1 << 30)? as usize,
        send_to_client_buffer_size: l.int("send_to_client_buffer_size", 1_024_000, 1024, 1 << 32)? as usize,
        send_to_worker_buffer_size: l.int("send_to_worker_buffer_size", 10_240_000, 1024, 1 << 32)? as usize,
        send_full_policy,
        max_connections: l.int("max_connections", 15_000, 1, 10_000_000)? as usize,
        handshake_timeout: l.seconds("handshake_timeout", 10.0)?,
        idle_timeout: l.seconds("idle_timeout", 0.0)?,
        max_groups_per_client: l.int("max_groups_per_client", 1024, 1, 1 << 20)? as usize,
        max_uid_len: l.int("max_uid_len", 256, 1, 1 << 20)? as usize,
        max_session_size: l.int("max_session_size", 1 << 20, 16, 1 << 30)? as usize,
        flow: flow_limits(l)?,
    })
}

/// The flow control keys of `[gateway.limits]`.
fn flow_limits(l: &mut Sec<'_>) -> Result<FlowLimits, ConfigError> {
    let d = FlowLimits::default();
    let rate_policy = l.policy("rate_policy", RATE_POLICIES)?;
    Ok(FlowLimits {
        worker_high_water: l.int("worker_high_water", d.worker_high_water as i64, 1024, 1 << 32)? as usize,
        max_messages_per_second: l.int(
            "max_messages_per_second",
            d.max_messages_per_second as i64,
            0,
            1 << 32,
        )? as u64,
        max_bytes_per_second: l.int("max_bytes_per_second", d.max_bytes_per_second as i64, 0, 1 << 40)?
            as u64,
        rate_policy,
    })
}

/// `[http]`: listener and limits; the API key comes from `.env` / the environment only.
fn http(s: &mut Sec<'_>, env: &[(String, String)]) -> Result<HttpConf, ConfigError> {
    let (scheme, listen) = s.listen("listen", Some("http://127.0.0.1:7280"))?;
    if scheme != "http" {
        return Err(s.err(
            "listen",
            format!("the HTTP listener speaks http, not {scheme}"),
            "use http://IP:PORT",
        ));
    }
    // An empty key off loopback is refused (or allowed and warned) with the other secrets.
    let api_key = env_get(env, "GW_HTTP_API_KEY").unwrap_or("").to_string();
    Ok(HttpConf {
        listen,
        api_key,
        max_connections: s.int("max_connections", 1024, 1, 1_000_000)? as usize,
        max_body_size: s.int("max_body_size", 1 << 20, 64, 1 << 30)? as usize,
        max_header_size: s.int("max_header_size", 16 * 1024, 256, 1 << 20)? as usize,
        header_timeout: s.seconds("header_timeout", 10.0)?,
        idle_timeout: s.seconds("idle_timeout", 60.0)?,
        query_timeout: s.seconds("query_timeout", 5.0)?,
    })
}

fn tls_files(top: &mut Sec<'_>, env: &[(String, String)]) -> Result<Option<TlsFiles>, ConfigError> {
    let mut cert = env_get(env, "GW_TLS_CERT").map(PathBuf::from);
    let mut key = env_get(env, "GW_TLS_KEY").map(PathBuf::from);
    if let Some(mut s) = top.sub("tls")? {
        if cert.is_none() {
            cert = s.opt_string("cert")?.map(PathBuf::from);
        } else {
            s.opt_string("cert")?;
        }
        if key.is_none() {
            key = s.opt_string("key")?.map(PathBuf::from);
        } else {
            s.opt_string("key")?;
        }
        s.finish()?;
    }
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(top.err(
            "tls.key",
            "a certificate is set but no private key".into(),
            "set [tls] key or GW_TLS_KEY",
        )),
        (None, Some(_)) => Err(top.err(
            "tls.cert",
            "a private key is set but no certificate".into(),
            "set [tls] cert or GW_TLS_CERT",
        )),
    }
}

fn parse_machine_type(v: &str) -> Option<MachineType> {
    match v {
        "all" => Some(MachineType::All),
        "master" => Some(MachineType::Master),
        "worker" => Some(MachineType::Worker),
        _ => None,
    }
}

fn parse_register_list(list: &[String]) -> Result<Vec<SocketAddrV4>, String> {
    if list.is_empty() {
        return Err(String::new());
    }
    list.iter().map(|s| s.parse::<SocketAddrV4>().map_err(|_| s.clone())).collect()
}

/// One TOML table being read; remembers which keys were used to report unknown ones.
struct Sec<'a> {
    file: &'a Path,
    path: String,
    table: Option<&'a Table>,
    used: Vec<String>,
}

impl<'a> Sec<'a> {
    fn new(file: &'a Path, path: &str, table: &'a Table) -> Sec<'a> {
        Sec { file, path: path.to_string(), table: Some(table), used: Vec::new() }
    }

    fn empty(file: &'a Path, path: &str) -> Sec<'a> {
        Sec { file, path: path.to_string(), table: None, used: Vec::new() }
    }

    fn key(&self, k: &str) -> String {
        if self.path.is_empty() { k.to_string() } else { format!("{}.{k}", self.path) }
    }

    fn err(&self, k: &str, problem: String, fix: &str) -> ConfigError {
        ConfigError { file: self.file.to_path_buf(), key: self.key(k), problem, fix: fix.to_string() }
    }

    fn env_err(&self, var: &str, value: &str, expected: &str) -> ConfigError {
        ConfigError {
            file: PathBuf::from(".env or environment"),
            key: var.to_string(),
            problem: format!("{value:?} is not valid"),
            fix: format!("expected {expected}"),
        }
    }

    fn get(&mut self, k: &str) -> Option<&'a Value> {
        self.used.push(k.to_string());
        self.table.and_then(|t| t.get(k))
    }

    fn type_err(&self, k: &str, want: &str, got: &Value) -> ConfigError {
        self.err(k, format!("expected {want}, found {} {}", got.type_str(), got), &format!("write {want}"))
    }

    fn string(&mut self, k: &str, default: Option<&str>) -> Result<String, ConfigError> {
        match (self.get(k), default) {
            (Some(Value::String(s)), _) => Ok(s.clone()),
            (Some(v), _) => Err(self.type_err(k, "a string", v)),
            (None, Some(d)) => Ok(d.to_string()),
            (None, None) => Err(self.err(k, "missing".into(), "this key is required")),
        }
    }

    /// A policy key: a string naming one of `options` with what it does (the first when
    /// absent).
    fn policy<T: Copy>(&mut self, k: &str, options: &[(&str, T, &str)]) -> Result<T, ConfigError> {
        let v = self.string(k, Some(options[0].0))?;
        match options.iter().find(|(name, ..)| *name == v) {
            Some(&(_, t, _)) => Ok(t),
            None => {
                let each: Vec<String> =
                    options.iter().map(|(name, _, does)| format!("\"{name}\" ({does})")).collect();
                Err(self.err(k, format!("unknown policy {v:?}"), &format!("use {}", each.join(" or "))))
            }
        }
    }

    fn opt_string(&mut self, k: &str) -> Result<Option<String>, ConfigError> {
        match self.get(k) {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.type_err(k, "a string", v)),
            None => Ok(None),
        }
    }

    fn string_or_list(&mut self, k: &str, default: &str) -> Result<Vec<String>, ConfigError> {
        match self.get(k) {
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.type_err(k, "a list of strings", other)),
                })
                .collect(),
            Some(v) => Err(self.type_err(k, "a string or a list of strings", v)),
            None => Ok(vec![default.to_string()]),
        }
    }

    fn path(&mut self, k: &str, default: &Path) -> Result<PathBuf, ConfigError> {
        Ok(self.opt_string(k)?.map(PathBuf::from).unwrap_or_else(|| default.to_path_buf()))
    }

    fn int(&mut self, k: &str, default: i64, min: i64, max: i64) -> Result<i64, ConfigError> {
        let v = match self.get(k) {
            Some(Value::Integer(i)) => *i,
            Some(v) => return Err(self.type_err(k, "an integer", v)),
            None => default,
        };
        if v < min || v > max {
            return Err(self.err(
                k,
                format!("{v} is out of range"),
                &format!("use a value between {min} and {max}"),
            ));
        }
        Ok(v)
    }

    fn bool(&mut self, k: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(k) {
            Some(Value::Boolean(b)) => Ok(*b),
            Some(v) => Err(self.type_err(k, "true or false", v)),
            None => Ok(default),
        }
    }

    /// Seconds as an integer or a float, non-negative.
    fn seconds(&mut self, k: &str, default: f64) -> Result<Duration, ConfigError> {
        let v = match self.get(k) {
            Some(Value::Integer(i)) => *i as f64,
            Some(Value::Float(f)) => *f,
            Some(v) => return Err(self.type_err(k, "a number of seconds", v)),
            None => default,
        };
        if !(0.0..=86_400.0 * 365.0).contains(&v) {
            return Err(self.err(k, format!("{v} is not a usable number of seconds"), "use a value >= 0"));
        }
        Ok(Duration::from_secs_f64(v))
    }

    /// `scheme://ip:port`, returning the scheme and the socket address.
    fn listen(&mut self, k: &str, default: Option<&str>) -> Result<(String, SocketAddr), ConfigError> {
        let v = self.string(k, default)?;
        let fix = "write scheme://IP:PORT, e.g. \"websocket://0.0.0.0:7272\"";
        let (scheme, addr) =
            v.split_once("://").ok_or_else(|| self.err(k, format!("{v:?} has no scheme"), fix))?;
        let sa = addr
            .to_socket_addrs()
            .ok()
            .and_then(|mut it| it.next())
            .ok_or_else(|| self.err(k, format!("{addr:?} is not an IP:PORT address"), fix))?;
        Ok((scheme.to_string(), sa))
    }

    fn sub(&mut self, k: &str) -> Result<Option<Sec<'a>>, ConfigError> {
        let path = self.key(k);
        match self.get(k) {
            Some(Value::Table(t)) => Ok(Some(Sec::new(self.file, &path, t))),
            Some(v) => Err(self.type_err(k, "a table ([section])", v)),
            None => Ok(None),
        }
    }

    fn tables(&mut self, k: &str) -> Result<Vec<Sec<'a>>, ConfigError> {
        let file = self.file;
        match self.get(k) {
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::Table(t) => Ok(Sec::new(file, &format!("{k}[{i}]"), t)),
                    other => Err(self.type_err(k, "an array of tables ([[gateway]])", other)),
                })
                .collect(),
            Some(Value::Table(t)) => Ok(vec![Sec::new(file, &format!("{k}[0]"), t)]),
            Some(v) => Err(self.type_err(k, "an array of tables ([[gateway]])", v)),
            None => Ok(Vec::new()),
        }
    }

    /// Error on the first key nobody asked for.
    fn finish(&self) -> Result<(), ConfigError> {
        let Some(t) = self.table else { return Ok(()) };
        for k in t.keys() {
            if !self.used.iter().any(|u| u == k) {
                let known = self.used.join(", ");
                return Err(self.err(
                    k,
                    "unknown key".into(),
                    &format!("remove it or check the spelling; known keys here: {known}"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
