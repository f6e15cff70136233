//! `deploy-plan [--file conf/deploy.toml] <stage>`: the hosts of a deploy stage, checked and
//! in deploy order (master machines first, then worker machines), printed as tab-separated
//! lines that `scripts/deploy.sh` reads without parsing TOML itself:
//!
//! ```text
//! stage   <name>
//! remote  <git remote the hosts fetch from>
//! build   <build command run in the repo on each host>
//! host    <name> <ssh address> <port or -> <machine type> <conf> <repo path> <active.toml link target>
//! ```
//!
//! Every value is checked to be a plain shell word (no spaces, quotes or expansions other
//! than a leading `~`), so it goes into a remote command unquoted; the build command is a
//! shell command by design and only has to be one line.

use std::fmt::Write as _;
use std::path::Path;

use toml::{Table, Value};

pub const DEFAULT_FILE: &str = "conf/deploy.toml";
pub const DEFAULT_BUILD: &str = "cargo build --release --bin gatewayworker";

/// One host of a stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub name: String,
    pub ssh: String,
    pub port: Option<u16>,
    pub machine_type: String,
    pub conf: String,
    pub path: String,
}

impl Host {
    /// Master machines (and all-in-one machines, which also run a register and gateways)
    /// are deployed before worker machines.
    fn rank(&self) -> u8 {
        u8::from(self.machine_type == "worker")
    }

    /// Target of the `conf/active.toml` link: relative inside `conf/`, else absolute or
    /// relative to the repo root.
    pub fn link_target(&self) -> String {
        match self.conf.strip_prefix("conf/") {
            Some(base) if !base.contains('/') => base.to_string(),
            _ if self.conf.starts_with('/') => self.conf.clone(),
            _ => format!("../{}", self.conf),
        }
    }
}

/// A stage, hosts in deploy order.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub stage: String,
    pub remote: String,
    pub build: String,
    pub hosts: Vec<Host>,
}

impl Plan {
    pub fn render(&self) -> String {
        let mut o = format!("stage\t{}\nremote\t{}\nbuild\t{}\n", self.stage, self.remote, self.build);
        for h in &self.hosts {
            let port = h.port.map_or("-".to_string(), |p| p.to_string());
            let _ = writeln!(
                o,
                "host\t{}\t{}\t{port}\t{}\t{}\t{}\t{}",
                h.name,
                h.ssh,
                h.machine_type,
                h.conf,
                h.path,
                h.link_target()
            );
        }
        o
    }
}

/// Characters allowed in names, addresses and paths: a plain shell word.
fn safe(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "._/@:+,=~-".contains(c))
}

struct Ctx<'a> {
    file: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, key: &str, problem: impl std::fmt::Display) -> String {
        format!("deploy config error in {}: key `{key}`: {problem}", self.file.display())
    }

    fn unknown(&self, table: &Table, prefix: &str, known: &[&str]) -> Result<(), String> {
        match table.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => {
                Err(self.err(&format!("{prefix}{k}"), format!("unknown key (known: {})", known.join(", "))))
            }
            None => Ok(()),
        }
    }

    fn string(&self, t: &Table, prefix: &str, key: &str, default: Option<&str>) -> Result<String, String> {
        let full = format!("{prefix}{key}");
        match t.get(key) {
            None => default.map(str::to_string).ok_or_else(|| self.err(&full, "missing")),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(self.err(&full, format!("expected a string, found {}", v.type_str()))),
        }
    }

    fn safe_string(
        &self,
        t: &Table,
        prefix: &str,
        key: &str,
        default: Option<&str>,
    ) -> Result<String, String> {
        let s = self.string(t, prefix, key, default)?;
        if safe(&s) {
            Ok(s)
        } else {
            Err(self.err(
                &format!("{prefix}{key}"),
                format!("{s:?}: empty or has characters other than letters, digits and ._/@:+,=~-"),
            ))
        }
    }
}

/// Read the plan of `stage` from `file`.
pub fn load(file: &Path, stage: &str) -> Result<Plan, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("deploy config error: cannot read {}: {e}", file.display()))?;
    parse(file, &text, stage)
}

pub fn parse(file: &Path, text: &str, stage: &str) -> Result<Plan, String> {
    let cx = Ctx { file };
    let root: Table =
        toml::from_str(text).map_err(|e| format!("deploy config error in {}: {e}", file.display()))?;
    cx.unknown(&root, "", &["stages"])?;
    let stages = match root.get("stages") {
        Some(Value::Table(t)) => t,
        Some(v) => return Err(cx.err("stages", format!("expected a table, found {}", v.type_str()))),
        None => return Err(cx.err("stages", "missing (add a [stages.<name>] table)")),
    };
    let names = || stages.keys().cloned().collect::<Vec<_>>().join(", ");
    let st = match stages.get(stage) {
        Some(Value::Table(t)) => t,
        Some(v) => {
            return Err(
                cx.err(&format!("stages.{stage}"), format!("expected a table, found {}", v.type_str()))
            );
        }
        None => {
            return Err(cx.err(&format!("stages.{stage}"), format!("no such stage (stages: {})", names())));
        }
    };
    let p = format!("stages.{stage}.");
    cx.unknown(st, &p, &["remote", "build", "hosts"])?;
    let remote = cx.safe_string(st, &p, "remote", Some("origin"))?;
    let build = cx.string(st, &p, "build", Some(DEFAULT_BUILD))?;
    if build.trim().is_empty() || build.contains(['\n', '\r', '\t']) {
        return Err(cx.err(&format!("{p}build"), "must be one non-empty line"));
    }
    let hosts = match st.get("hosts") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => return Err(cx.err(&format!("{p}hosts"), "no hosts")),
        Some(v) => {
            return Err(cx.err(
                &format!("{p}hosts"),
                format!("expected an array of tables ([[{p}hosts]]), found {}", v.type_str()),
            ));
        }
        None => return Err(cx.err(&format!("{p}hosts"), format!("missing (add [[{p}hosts]] tables)"))),
    };
    let mut out: Vec<Host> = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let hp = format!("{p}hosts[{i}].");
        let Value::Table(t) = h else {
            return Err(
                cx.err(&format!("{p}hosts[{i}]"), format!("expected a table, found {}", h.type_str()))
            );
        };
        cx.unknown(t, &hp, &["name", "ssh", "port", "machine_type", "conf", "path"])?;
        let name = cx.safe_string(t, &hp, "name", None)?;
        if out.iter().any(|o| o.name == name) {
            return Err(cx.err(&format!("{hp}name"), format!("{name:?} is used by another host")));
        }
        let ssh = cx.safe_string(t, &hp, "ssh", None)?;
        let port = match t.get("port") {
            None => None,
            Some(Value::Integer(n)) if (1..=65535).contains(n) => Some(*n as u16),
            Some(v) => {
                return Err(cx.err(&format!("{hp}port"), format!("{v}: expected a port number 1-65535")));
            }
        };
        let machine_type = cx.string(t, &hp, "machine_type", None)?;
        if !["all", "master", "worker"].contains(&machine_type.as_str()) {
            return Err(cx.err(
                &format!("{hp}machine_type"),
                format!("{machine_type:?}: expected all, master or worker"),
            ));
        }
        let conf = cx.safe_string(t, &hp, "conf", None)?;
        let path = cx.safe_string(t, &hp, "path", None)?;
        out.push(Host { name, ssh, port, machine_type, conf, path });
    }
    out.sort_by_key(Host::rank);
    Ok(Plan { stage: stage.to_string(), remote, build, hosts: out })
}

/// `deploy-plan [--file F] <stage>`.
pub fn main(rest: &[String]) -> i32 {
    let mut file = DEFAULT_FILE.to_string();
    let mut stage = None;
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--file" => match it.next() {
                Some(f) => file = f.clone(),
                None => {
                    eprintln!("deploy-plan: --file needs a file");
                    return 64;
                }
            },
            s if s.starts_with("--file=") => file = s["--file=".len()..].to_string(),
            s if stage.is_none() && !s.starts_with('-') => stage = Some(s.to_string()),
            s => {
                eprintln!("deploy-plan: unexpected argument {s:?}");
                return 64;
            }
        }
    }
    let Some(stage) = stage else {
        eprintln!("usage: gatewayworker deploy-plan [--file {DEFAULT_FILE}] <stage>");
        return 64;
    };
    match load(Path::new(&file), &stage) {
        Ok(plan) => {
            print!("{}", plan.render());
            0
        }
        Err(e) => {
            eprintln!("{e}");
            78
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
[stages.prod]
[[stages.prod.hosts]]
name = "w1"
ssh = "deploy@10.0.0.21"
machine_type = "worker"
conf = "conf/worker1.toml"
path = "/srv/gw"
[[stages.prod.hosts]]
name = "m1"
ssh = "deploy@10.0.0.10"
port = 2222
machine_type = "master"
conf = "conf/master.toml"
path = "gw"
"#;

    fn plan(text: &str) -> Result<Plan, String> {
        parse(Path::new("d.toml"), text, "prod")
    }

    #[test]
    fn masters_first_and_defaults() {
        let p = plan(OK).unwrap();
        assert_eq!(p.hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), ["m1", "w1"]);
        assert_eq!((p.remote.as_str(), p.build.as_str()), ("origin", DEFAULT_BUILD));
        assert_eq!(p.hosts[0].port, Some(2222));
        assert_eq!(p.hosts[0].link_target(), "master.toml");
        let r = p.render();
        assert!(
            r.contains("host\tm1\tdeploy@10.0.0.10\t2222\tmaster\tconf/master.toml\tgw\tmaster.toml\n"),
            "{r}"
        );
        assert!(r.contains("host\tw1\tdeploy@10.0.0.21\t-\tworker\t"), "{r}");
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        let e = plan(&OK.replace("machine_type = \"worker\"", "machine_type = \"wrker\"")).unwrap_err();
        assert!(e.contains("d.toml") && e.contains("`stages.prod.hosts[0].machine_type`"), "{e}");
        let e = plan(&OK.replace("path = \"/srv/gw\"", "")).unwrap_err();
        assert!(e.contains("`stages.prod.hosts[0].path`: missing"), "{e}");
        let e = plan(&OK.replace("path = \"gw\"", "path = \"g w'\"")).unwrap_err();
        assert!(e.contains("`stages.prod.hosts[1].path`"), "{e}");
        let e = plan(&OK.replace("port = 2222", "prot = 2222")).unwrap_err();
        assert!(e.contains("`stages.prod.hosts[1].prot`: unknown key"), "{e}");
        let e = parse(Path::new("d.toml"), OK, "staging").unwrap_err();
        assert!(e.contains("`stages.staging`: no such stage (stages: prod)"), "{e}");
        let e = plan(&OK.replace("name = \"m1\"", "name = \"w1\"")).unwrap_err();
        assert!(e.contains("`stages.prod.hosts[1].name`"), "{e}");
    }

    #[test]
    fn link_targets() {
        let mut h = plan(OK).unwrap().hosts.remove(0);
        h.conf = "/etc/gw/m.toml".into();
        assert_eq!(h.link_target(), "/etc/gw/m.toml");
        h.conf = "deploy/m.toml".into();
        assert_eq!(h.link_target(), "../deploy/m.toml");
    }
}
