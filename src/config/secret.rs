//! The shared secret guarding the cluster's own ports: a register, a gateway inner port or
//! the HTTP API that faces the network with an empty secret refuses to start (unless
//! `allow_empty_secret = true`), and a short secret gets a warning. Anyone who can reach an
//! unguarded register can announce a gateway of their own, and every business worker links
//! to it: forged client events in, application replies out.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use super::{Config, ConfigError, MachineType};

/// Below this many bytes a secret is worth a warning.
pub const MIN_SECRET_LEN: usize = 16;

/// Where the fix goes: the variable of `.env` that holds the cluster's secret.
pub const SECRET_ENV: &str = "GW_SECRET_KEY";

/// A warning found while loading the configuration; the master logs it at every start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub text: String,
    /// An empty secret is allowed on a non-loopback address (`status` shows it too).
    pub exposed: bool,
}

/// A listener that only trusts peers knowing a secret.
#[derive(Clone, Copy, Debug)]
pub struct Guarded<'a> {
    /// What listens, for the message: "the register", "the HTTP API".
    pub what: &'a str,
    pub listen: SocketAddr,
    /// The config key the listen address comes from (`register.listen`, `lan_ip`).
    pub listen_key: &'a str,
    pub secret: &'a str,
    /// The config key of the secret (`secret_key`) and the variable that sets it in `.env`.
    pub key: &'a str,
    pub env_var: &'a str,
}

/// True for 127.0.0.0/8, ::1 and their IPv4-mapped forms.
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// `Ok(None)`: the listener is on loopback or has a secret. `Err`: an empty secret off
/// loopback, naming the secret's key, the file and the fix. `Ok(Some(warning))`: the same,
/// allowed by `allow_empty_secret = true`.
pub fn check_exposed_secret(
    g: &Guarded<'_>,
    file: &Path,
    allow_empty_secret: bool,
) -> Result<Option<Warning>, ConfigError> {
    if !g.secret.is_empty() || is_loopback(g.listen.ip()) {
        return Ok(None);
    }
    let exposure =
        format!("{} listens on {} (`{}`), which is not a loopback address", g.what, g.listen, g.listen_key);
    if allow_empty_secret {
        let text = format!(
            "`{}` is empty and {exposure}: anyone who can reach it is trusted (allowed by allow_empty_secret = true in {}; set {} in .env to close this)",
            g.key,
            file.display(),
            g.env_var
        );
        return Ok(Some(Warning { text, exposed: true }));
    }
    Err(ConfigError {
        file: file.to_path_buf(),
        key: g.key.to_string(),
        problem: format!("empty, but {exposure}: anyone who can reach it would be trusted"),
        fix: format!(
            "set {} in .env to a long random string (see conf/example.env), or listen on 127.0.0.1, or set allow_empty_secret = true in {} to start anyway",
            g.env_var,
            file.display()
        ),
    })
}

/// A warning for a non-empty secret shorter than `MIN_SECRET_LEN` bytes.
pub fn short_secret_warning(secret: &str, key: &str, env_var: &str) -> Option<Warning> {
    if secret.is_empty() || secret.len() >= MIN_SECRET_LEN {
        return None;
    }
    let text = format!(
        "`{key}` is only {} bytes long: use at least {MIN_SECRET_LEN} random bytes (set {env_var} in .env, e.g. to the output of `openssl rand -hex 32`)",
        secret.len()
    );
    Some(Warning { text, exposed: false })
}

/// The HTTP API's key (`GW_HTTP_API_KEY`, from `.env` or the environment only).
pub const HTTP_KEY_ENV: &str = "GW_HTTP_API_KEY";

/// The listeners of this machine guarded by a secret: the HTTP API (by its key), the register
/// and the gateways' inner ports (by `secret_key`; they listen on `lan_ip`). A worker machine
/// has neither a register nor inner ports.
fn guarded(cfg: &Config) -> Vec<Guarded<'_>> {
    let mut out = Vec::new();
    if let Some(h) = &cfg.http {
        out.push(Guarded {
            what: "the HTTP API",
            listen: h.listen,
            listen_key: "http.listen",
            secret: &h.api_key,
            key: HTTP_KEY_ENV,
            env_var: HTTP_KEY_ENV,
        });
    }
    if cfg.machine_type == MachineType::Worker {
        return out;
    }
    let secret = |what, listen, listen_key| Guarded {
        what,
        listen,
        listen_key,
        secret: &cfg.secret_key,
        key: "secret_key",
        env_var: SECRET_ENV,
    };
    if let Some(r) = &cfg.register {
        out.push(secret("the register", r.listen, "register.listen"));
    }
    if let Some(g) = cfg.gateways.first() {
        let inner = SocketAddr::new(IpAddr::V4(cfg.lan_ip), g.start_port);
        out.push(secret("a gateway inner port", inner, "lan_ip"));
    }
    out
}

/// Refuse an exposed empty `secret_key`; collect the warnings into `cfg.warnings`.
pub(super) fn check(cfg: &mut Config) -> Result<(), ConfigError> {
    let mut warnings = Vec::new();
    for g in guarded(cfg) {
        warnings.extend(check_exposed_secret(&g, &cfg.file, cfg.allow_empty_secret)?);
    }
    warnings.extend(short_secret_warning(&cfg.secret_key, "secret_key", SECRET_ENV));
    if let Some(h) = &cfg.http {
        warnings.extend(short_secret_warning(&h.api_key, HTTP_KEY_ENV, HTTP_KEY_ENV));
    }
    cfg.warnings.extend(warnings);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(listen: &str, secret: &'static str) -> Guarded<'static> {
        Guarded {
            what: "the register",
            listen: listen.parse().unwrap(),
            listen_key: "register.listen",
            secret,
            key: "secret_key",
            env_var: SECRET_ENV,
        }
    }

    #[test]
    fn empty_secret_off_loopback_is_refused_naming_key_file_and_fix() {
        let file = Path::new("conf/master.toml");
        for listen in ["0.0.0.0:1236", "10.0.0.10:1236", "[::]:1236"] {
            let e = check_exposed_secret(&register(listen, ""), file, false).unwrap_err();
            assert_eq!(e.key, "secret_key");
            assert_eq!(e.file, file);
            let text = e.to_string();
            for part in
                ["conf/master.toml", "`secret_key`", listen, "register.listen", "GW_SECRET_KEY in .env"]
            {
                assert!(text.contains(part), "{part:?} missing from {text}");
            }
            assert!(text.contains("allow_empty_secret = true"), "{text}");
        }
    }

    #[test]
    fn loopback_or_a_secret_passes() {
        let file = Path::new("c.toml");
        for listen in ["127.0.0.1:1236", "127.0.0.2:1236", "[::1]:1236", "[::ffff:127.0.0.1]:1236"] {
            assert_eq!(check_exposed_secret(&register(listen, ""), file, false).unwrap(), None, "{listen}");
        }
        let g = register("0.0.0.0:1236", "0123456789abcdef");
        assert_eq!(check_exposed_secret(&g, file, false).unwrap(), None);
    }

    #[test]
    fn allow_empty_secret_starts_with_a_warning() {
        let w = check_exposed_secret(&register("0.0.0.0:1236", ""), Path::new("c.toml"), true)
            .unwrap()
            .expect("a warning");
        assert!(w.exposed);
        assert!(w.text.contains("`secret_key` is empty") && w.text.contains("0.0.0.0:1236"), "{}", w.text);
        assert!(w.text.contains("allow_empty_secret = true in c.toml"), "{}", w.text);
    }

    #[test]
    fn other_listeners_name_their_own_key_and_variable() {
        let api = Guarded {
            what: "the HTTP API",
            listen: "0.0.0.0:8080".parse().unwrap(),
            listen_key: "http.listen",
            secret: "",
            key: "http.api_key",
            env_var: "GW_HTTP_API_KEY",
        };
        let e = check_exposed_secret(&api, Path::new("conf/dev.toml"), false).unwrap_err();
        assert_eq!(e.key, "http.api_key");
        let text = e.to_string();
        assert!(text.contains("the HTTP API listens on 0.0.0.0:8080 (`http.listen`)"), "{text}");
        assert!(text.contains("set GW_HTTP_API_KEY in .env"), "{text}");
    }

    #[test]
    fn short_secrets_are_warned_about() {
        let w = short_secret_warning("s3cret", "secret_key", SECRET_ENV).expect("a warning");
        assert!(!w.exposed);
        assert!(w.text.contains("only 6 bytes") && w.text.contains("GW_SECRET_KEY"), "{}", w.text);
        assert_eq!(short_secret_warning("", "secret_key", SECRET_ENV), None);
        assert_eq!(short_secret_warning(&"k".repeat(MIN_SECRET_LEN), "secret_key", SECRET_ENV), None);
    }
}
