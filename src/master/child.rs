//! The contract between the master and a child it spawns. The master writes it once when it
//! spawns (the command line `child <role> --conf F --group G --id N`, which `ps` shows, plus
//! the environment: inherited listener fds, statistics slot, reload generation, log file);
//! the child parses it once at start. A missing or malformed value is an error that names it,
//! never a default.

use std::fmt;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::process::Command;

/// Named listener fds the child inherits: `GW_FDS=name:fd;name:fd` (nginx style).
const FDS: &str = "GW_FDS";
/// The child's row in the statistics region.
const SLOT: &str = "GW_SLOT";
/// Reload generation (0 for a first start), part of a business worker's key at the gateways.
const GENERATION: &str = "GW_GENERATION";
/// The log file; absent in the foreground, where the child logs to the terminal.
const LOG_FILE: &str = "GW_LOG_FILE";
/// A gateway started by `upgrade`: the Unix socket path it listens on for the handover from
/// the gateway it replaces (absent for a normal start).
const HANDOVER: &str = "GW_HANDOVER";

/// What a child process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildRole {
    Register,
    Gateway,
    Worker,
    /// The `[http]` process.
    Http,
}

impl ChildRole {
    /// The word on the command line.
    pub fn arg(self) -> &'static str {
        match self {
            ChildRole::Register => "register",
            ChildRole::Gateway => "gateway",
            ChildRole::Worker => "worker",
            ChildRole::Http => "http",
        }
    }

    fn parse(s: &str) -> Option<ChildRole> {
        [ChildRole::Register, ChildRole::Gateway, ChildRole::Worker, ChildRole::Http]
            .into_iter()
            .find(|r| r.arg() == s)
    }
}

/// Everything a child is told by the master.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildContract {
    pub role: ChildRole,
    pub conf: PathBuf,
    /// Gateway group (index into `cfg.gateways`); 0 for the other roles.
    pub group: usize,
    /// Process number within its group or the business workers.
    pub id: u16,
    /// Inherited listeners by name (`register`, `public`, `inner_tcp`, `inner_unix`).
    pub fds: Vec<(String, RawFd)>,
    pub slot: usize,
    pub generation: u64,
    pub log_file: Option<PathBuf>,
    /// A gateway replacing a running one (`upgrade`): where it receives the handover.
    pub handover: Option<PathBuf>,
}

/// Why a child's command line or environment is not a valid contract.
#[derive(Debug, PartialEq, Eq)]
pub enum ContractError {
    /// A flag or variable the master always writes is absent.
    Missing(&'static str),
    /// A value that does not parse: (flag or variable, value, what it should be).
    Bad(&'static str, String, &'static str),
    /// An argument nobody writes.
    Unexpected(String),
}

impl fmt::Display for ContractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContractError::Missing(what) => {
                write!(f, "child: {what} missing (children are started by the master)")
            }
            ContractError::Bad(what, v, want) => write!(f, "child: bad {what} {v:?}: expected {want}"),
            ContractError::Unexpected(a) => write!(f, "child: unexpected argument {a:?}"),
        }
    }
}

impl std::error::Error for ContractError {}

impl ChildContract {
    /// Write the contract into the command that starts the child.
    pub fn write(&self, cmd: &mut Command) {
        cmd.arg("child")
            .arg(self.role.arg())
            .arg("--conf")
            .arg(&self.conf)
            .arg("--group")
            .arg(self.group.to_string())
            .arg("--id")
            .arg(self.id.to_string())
            .env(FDS, self.fds.iter().map(|(n, fd)| format!("{n}:{fd}")).collect::<Vec<_>>().join(";"))
            .env(SLOT, self.slot.to_string())
            .env(GENERATION, self.generation.to_string())
            .env_remove(LOG_FILE)
            .env_remove(HANDOVER);
        if let Some(file) = &self.log_file {
            cmd.env(LOG_FILE, file);
        }
        if let Some(path) = &self.handover {
            cmd.env(HANDOVER, path);
        }
    }

    /// Parse what follows `child` on the command line, and the variables `env` returns.
    pub fn parse(args: &[String], env: impl Fn(&str) -> Option<String>) -> Result<Self, ContractError> {
        let mut it = args.iter();
        let role = it.next().ok_or(ContractError::Missing("role"))?;
        let role = ChildRole::parse(role)
            .ok_or_else(|| ContractError::Bad("role", role.clone(), "register, gateway or worker"))?;
        let (mut conf, mut group, mut id) = (None, None, None);
        while let Some(flag) = it.next() {
            let slot = match flag.as_str() {
                "--conf" => &mut conf,
                "--group" => &mut group,
                "--id" => &mut id,
                _ => return Err(ContractError::Unexpected(flag.clone())),
            };
            *slot =
                Some(it.next().ok_or(ContractError::Bad("flag", flag.clone(), "a value after it"))?.clone());
        }
        let conf = PathBuf::from(conf.ok_or(ContractError::Missing("--conf"))?);
        let group = number("--group", group)?;
        let id = number("--id", id)?;
        let slot = number(SLOT, env(SLOT))?;
        let generation = number(GENERATION, env(GENERATION))?;
        let fds = parse_fds(&env(FDS).ok_or(ContractError::Missing(FDS))?)?;
        let log_file = env(LOG_FILE).filter(|f| !f.is_empty()).map(PathBuf::from);
        let handover = env(HANDOVER).filter(|f| !f.is_empty()).map(PathBuf::from);
        Ok(ChildContract { role, conf, group, id, fds, slot, generation, log_file, handover })
    }

    /// Parse the contract of this process.
    pub fn from_process(args: &[String]) -> Result<Self, ContractError> {
        Self::parse(args, |k| std::env::var(k).ok())
    }

    /// The tag of this child in log lines and its process name: `register`, `gateway[2]`.
    pub fn tag(&self) -> String {
        match self.role {
            ChildRole::Register | ChildRole::Http => self.role.arg().to_string(),
            _ => format!("{}[{}]", self.role.arg(), self.id),
        }
    }
}

fn number<T: std::str::FromStr>(what: &'static str, v: Option<String>) -> Result<T, ContractError> {
    let v = v.ok_or(ContractError::Missing(what))?;
    v.parse().map_err(|_| ContractError::Bad(what, v, "a non-negative integer"))
}

/// `name:fd;name:fd` (empty: none).
fn parse_fds(v: &str) -> Result<Vec<(String, RawFd)>, ContractError> {
    let entry = |item: &str| {
        let (name, fd) = item.split_once(':')?;
        let fd: RawFd = fd.parse().ok().filter(|fd| *fd >= 0)?;
        (!name.is_empty()).then(|| (name.to_string(), fd))
    };
    v.split(';')
        .filter(|s| !s.is_empty())
        .map(|item| entry(item).ok_or_else(|| ContractError::Bad(FDS, item.to_string(), "name:fd")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ChildContract {
        ChildContract {
            role: ChildRole::Gateway,
            conf: PathBuf::from("conf/dev.toml"),
            group: 1,
            id: 2,
            fds: vec![("public".into(), 5), ("inner_tcp".into(), 6), ("inner_unix".into(), 7)],
            slot: 4,
            generation: 3,
            log_file: Some(PathBuf::from("run/gatewayworker.log")),
            handover: Some(PathBuf::from("run/handover-7000.sock")),
        }
    }

    /// The arguments after `child` and the environment the command carries.
    fn written(c: &ChildContract) -> (Vec<String>, Vec<(String, Option<String>)>) {
        let mut cmd = Command::new("gatewayworker");
        c.write(&mut cmd);
        let args = cmd.get_args().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
        let env = cmd
            .get_envs()
            .map(|(k, v)| (k.to_string_lossy().into_owned(), v.map(|v| v.to_string_lossy().into_owned())))
            .collect();
        (args, env)
    }

    fn parse_written(c: &ChildContract) -> Result<ChildContract, ContractError> {
        let (args, env) = written(c);
        ChildContract::parse(&args, |k| env.iter().find(|(n, _)| n == k).and_then(|(_, v)| v.clone()))
    }

    #[test]
    fn what_the_master_writes_the_child_reads_back() {
        let c = sample();
        assert_eq!(parse_written(&c), Ok(c.clone()));
        let foreground =
            ChildContract { role: ChildRole::Register, fds: vec![], log_file: None, handover: None, ..c };
        assert_eq!(parse_written(&foreground), Ok(foreground.clone()));
        assert_eq!(foreground.tag(), "register");
        assert_eq!(sample().tag(), "gateway[2]");
    }

    /// Parse `args` with the environment `env` less `skip`, with `replace` = (variable, value).
    fn parse_with(
        args: &[String],
        env: &[(String, Option<String>)],
        skip: &str,
        replace: Option<(&str, &str)>,
    ) -> Result<ChildContract, ContractError> {
        ChildContract::parse(args, |k| match replace {
            _ if k == skip => None,
            Some((name, v)) if name == k => Some(v.to_string()),
            _ => env.iter().find(|(n, _)| n == k).and_then(|(_, v)| v.clone()),
        })
    }

    #[test]
    fn a_missing_or_bad_value_is_an_error_never_zero() {
        let (args, env) = written(&sample());
        let parse = |args: &[String], skip, replace| parse_with(args, &env, skip, replace);
        assert_eq!(parse(&args, SLOT, None), Err(ContractError::Missing(SLOT)));
        assert_eq!(parse(&args, FDS, None), Err(ContractError::Missing(FDS)));
        assert_eq!(parse(&args, GENERATION, None), Err(ContractError::Missing(GENERATION)));
        let bad = parse(&args, "", Some((SLOT, "x1")));
        assert_eq!(bad, Err(ContractError::Bad(SLOT, "x1".into(), "a non-negative integer")));
        let bad = parse(&args, "", Some((FDS, "public:5;inner_tcp")));
        assert_eq!(bad, Err(ContractError::Bad(FDS, "inner_tcp".into(), "name:fd")));
        let bad = parse(&args, "", Some((FDS, "public:-1")));
        assert!(matches!(bad, Err(ContractError::Bad(FDS, ..))));

        let with = |i: usize, v: &str| {
            let mut a = args.clone();
            a[i] = v.to_string();
            a
        };
        // args: role --conf F --group G --id N
        assert_eq!(
            parse(&with(4, "one"), "", None),
            Err(ContractError::Bad("--group", "one".into(), "a non-negative integer"))
        );
        assert!(matches!(parse(&with(6, "70000"), "", None), Err(ContractError::Bad("--id", ..))));
        assert!(matches!(parse(&with(0, "gatway"), "", None), Err(ContractError::Bad("role", ..))));
        assert_eq!(parse(&with(5, "--idx"), "", None), Err(ContractError::Unexpected("--idx".into())));
        assert_eq!(parse(&args[..5], "", None), Err(ContractError::Missing("--id")));
        assert!(matches!(parse(&args[..6], "", None), Err(ContractError::Bad("flag", ..))));
        assert_eq!(parse(&[], "", None), Err(ContractError::Missing("role")));
        let msg = parse(&with(4, "one"), "", None).unwrap_err().to_string();
        assert!(msg.contains("--group") && msg.contains("\"one\""), "{msg}");
    }
}
