use std::net::Ipv4Addr;

use super::*;

fn load_str(text: &str) -> Result<Config, ConfigError> {
    let dir = std::env::temp_dir().join(format!("gw-conf-{}-{}", std::process::id(), text.len()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("t.toml");
    std::fs::write(&f, text).unwrap();
    let mut top_table: Table = text.parse().map_err(|_| ConfigError {
        file: f.clone(),
        key: String::new(),
        problem: "toml".into(),
        fix: String::new(),
    })?;
    let _ = &mut top_table;
    let mut top = Sec::new(&f, "", &top_table);
    let cfg = build(&mut top, &[])?;
    top.finish()?;
    Ok(cfg)
}

const MINIMAL: &str = r#"
[register]
listen = "text://127.0.0.1:1236"
[[gateway]]
listen = "websocket://0.0.0.0:7272"
count = 2
start_port = 2300
[worker]
count = 2
"#;

#[test]
fn minimal_config_gets_gatewayworker_defaults() {
    let c = load_str(MINIMAL).unwrap();
    assert_eq!(c.machine_type, MachineType::All);
    assert_eq!(c.lan_ip, Ipv4Addr::LOCALHOST);
    assert_eq!(c.register_address, vec!["127.0.0.1:1236".parse().unwrap()]);
    let g = &c.gateways[0];
    assert_eq!((g.proto, g.count, g.start_port), (Proto::WebSocket, 2, 2300));
    assert_eq!(g.limits.send_to_client_buffer_size, 1_024_000);
    assert_eq!(g.limits.max_package_size, 10_485_760);
    assert!(g.tls.is_none());
    assert_eq!(c.worker.as_ref().unwrap().count, 2);
}

#[test]
fn errors_name_the_key() {
    let cases = [
        ("lan_ip = \"box.local\"\n", "lan_ip"),
        ("machine_type = \"both\"\n", "machine_type"),
        ("register_address = [\"1.2.3.4\"]\n", "register_address"),
        ("stage_mode = \"staging\"\n", "stage_mode"),
        ("colour = 1\n", "colour"),
        ("stop_timeout = \"2s\"\n", "stop_timeout"),
    ];
    for (line, key) in cases {
        let e = load_str(&format!("{line}{MINIMAL}")).unwrap_err();
        assert_eq!(e.key, key, "{e}");
        assert!(e.to_string().contains(key), "{e}");
    }
}

#[test]
fn nested_errors_name_the_full_path() {
    let bad = MINIMAL.replace("count = 2\nstart_port", "count = \"two\"\nstart_port");
    assert_eq!(load_str(&bad).unwrap_err().key, "gateway[0].count");
    let bad = MINIMAL.replace("start_port = 2300", "start_port = 2300\n[gateway.limits]\nmax_conections = 5");
    assert_eq!(load_str(&bad).unwrap_err().key, "gateway[0].limits.max_conections");
    let bad = MINIMAL.replace("websocket://0.0.0.0:7272", "http://0.0.0.0:7272");
    assert_eq!(load_str(&bad).unwrap_err().key, "gateway[0].listen");
}

#[test]
fn production_needs_a_certificate() {
    let e = load_str(&format!("stage_mode = \"production\"\n{MINIMAL}")).unwrap_err();
    assert_eq!(e.key, "gateway[0].tls");
    let ok = load_str(&format!(
        "stage_mode = \"production\"\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n{MINIMAL}"
    ))
    .unwrap();
    assert!(ok.gateways[0].tls.is_some());
}

#[test]
fn overlapping_inner_ports_are_refused() {
    let two = format!("{MINIMAL}[[gateway]]\nlisten = \"text://0.0.0.0:7273\"\nstart_port = 2301\n");
    assert_eq!(load_str(&two).unwrap_err().key, "gateway[1].start_port");
}

#[test]
fn worker_machine_needs_no_gateway() {
    let c = load_str("machine_type = \"worker\"\nregister_address = \"10.0.0.1:1236\"\n[worker]\n").unwrap();
    assert_eq!(c.machine_type, MachineType::Worker);
    assert!(c.gateways.is_empty());
    let e = load_str("machine_type = \"master\"\n[worker]\n").unwrap_err();
    assert_eq!(e.key, "register");
}

#[test]
fn http_listener_is_off_by_default_loopback_by_default_and_keyed_elsewhere() {
    assert!(load_str(MINIMAL).unwrap().http.is_none());
    let c = load_str(&format!("{MINIMAL}[http]\n")).unwrap();
    let h = c.http.unwrap();
    assert_eq!(h.listen, "127.0.0.1:7280".parse().unwrap());
    assert_eq!((h.max_connections, h.max_body_size, h.api_key.as_str()), (1024, 1 << 20, ""));
    assert_eq!(h.query_timeout, Duration::from_secs(5));
    let e = load_str(&format!("{MINIMAL}[http]\nlisten = \"https://127.0.0.1:7280\"\n")).unwrap_err();
    assert_eq!(e.key, "http.listen");
    let e = load_str(&format!("{MINIMAL}[http]\nmax_body = 5\n")).unwrap_err();
    assert_eq!(e.key, "http.max_body");
    let public = format!("{MINIMAL}[http]\nlisten = \"http://0.0.0.0:7280\"\n");
    let e = load_str(&public).unwrap_err();
    assert_eq!(e.key, "GW_HTTP_API_KEY");
    assert!(e.to_string().contains("t.toml") && e.fix.contains("GW_HTTP_API_KEY"), "{e}");
    let dir = std::env::temp_dir().join(format!("gw-conf-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("t.toml");
    let table: Table = public.parse().unwrap();
    let mut top = Sec::new(&f, "", &table);
    let env = [("GW_HTTP_API_KEY".to_string(), "k".to_string())];
    assert_eq!(build(&mut top, &env).unwrap().http.unwrap().api_key, "k");
}

fn load_with_env(text: &str, env: &[(String, String)]) -> Result<Config, ConfigError> {
    let table: Table = text.parse().unwrap();
    let f = Path::new("conf/test.toml");
    let mut top = Sec::new(f, "", &table);
    let cfg = build(&mut top, env)?;
    top.finish()?;
    Ok(cfg)
}

fn shipped(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf").join(name)).unwrap()
}

#[test]
fn exposed_register_or_inner_ports_need_a_secret() {
    let open_register = MINIMAL.replace("text://127.0.0.1:1236", "text://0.0.0.0:1236");
    let e = load_str(&open_register).unwrap_err();
    assert_eq!(e.key, "secret_key");
    assert!(e.to_string().contains("register.listen"), "{e}");
    let e = load_str(&format!("lan_ip = \"10.0.0.10\"\n{MINIMAL}")).unwrap_err();
    assert_eq!(e.key, "secret_key");
    assert!(e.to_string().contains("10.0.0.10:2300 (`lan_ip`)"), "{e}");
    let secret = vec![("GW_SECRET_KEY".to_string(), "0123456789abcdef".to_string())];
    let c = load_with_env(&open_register, &secret).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn allow_empty_secret_loads_with_warnings() {
    let text = format!("allow_empty_secret = true\nlan_ip = \"10.0.0.10\"\n{MINIMAL}")
        .replace("text://127.0.0.1:1236", "text://0.0.0.0:1236");
    let c = load_str(&text).unwrap();
    assert!(c.allow_empty_secret && c.exposed_without_secret());
    assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    let c = load_str(&format!("secret_key = \"short\"\n{MINIMAL}")).unwrap();
    assert!(!c.exposed_without_secret());
    assert!(c.warnings[0].text.contains("only 5 bytes"), "{:?}", c.warnings);
}

#[test]
fn a_worker_machine_listens_on_nothing_guarded() {
    let c = load_str("machine_type = \"worker\"\nlan_ip = \"10.0.0.21\"\n[register]\n[worker]\n").unwrap();
    assert!(c.warnings.is_empty());
}

#[test]
fn single_machine_confs_keep_internal_ports_on_loopback() {
    for name in ["dev.toml", "local.toml", "testing.toml"] {
        let c = load_with_env(&shipped(name), &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(c.lan_ip.is_loopback(), "{name}: inner ports on {}", c.lan_ip);
        let r = c.register.as_ref().unwrap();
        assert!(r.listen.ip().is_loopback(), "{name}: register on {}", r.listen);
        assert!(c.warnings.is_empty(), "{name}: {:?}", c.warnings);
    }
}

#[test]
fn the_master_conf_refuses_to_start_without_a_secret() {
    let text = shipped("master.toml");
    let e = load_with_env(&text, &[]).unwrap_err();
    assert_eq!(e.key, "secret_key", "{e}");
    let secret = vec![("GW_SECRET_KEY".to_string(), "a-long-cluster-secret".to_string())];
    assert!(load_with_env(&text, &secret).unwrap().warnings.is_empty());
}

#[test]
fn advertise_ip_defaults_to_lan_ip_and_may_differ_from_it() {
    // Inner ports off loopback need the cluster's secret.
    let load_str = |text: &str| load_with_env(text, &[("GW_SECRET_KEY".into(), "0123456789abcdef".into())]);
    let c = load_str(&format!("lan_ip = \"10.0.0.5\"\n{MINIMAL}")).unwrap();
    assert_eq!((c.lan_ip, c.advertise_ip), (Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 5)));
    let c = load_str(&format!("lan_ip = \"0.0.0.0\"\nadvertise_ip = \"203.0.113.7\"\n{MINIMAL}")).unwrap();
    assert_eq!((c.lan_ip, c.advertise_ip), (Ipv4Addr::UNSPECIFIED, Ipv4Addr::new(203, 0, 113, 7)));
}

#[test]
fn an_unspecified_or_bad_advertise_ip_names_the_key() {
    for line in ["lan_ip = \"0.0.0.0\"\n", "advertise_ip = \"0.0.0.0\"\n", "advertise_ip = \"gw.example\"\n"]
    {
        let e = load_str(&format!("{line}{MINIMAL}")).unwrap_err();
        assert_eq!(e.key, "advertise_ip", "{e}");
    }
}

#[test]
fn an_empty_environment_override_keeps_the_conf_value() {
    let text = format!("secret_key = \"from-the-conf-file-0123\"\n{MINIMAL}");
    let c = load_with_env(&text, &[("GW_SECRET_KEY".into(), String::new())]).unwrap();
    assert_eq!(c.secret_key, "from-the-conf-file-0123");
    let c = load_with_env(&text, &[("GW_SECRET_KEY".into(), "from-the-env-0123456".into())]).unwrap();
    assert_eq!(c.secret_key, "from-the-env-0123456");
}

#[test]
fn flow_limit_keys_have_defaults_and_checked_values() {
    use crate::config::{FlowLimits, RatePolicy};
    assert_eq!(load_str(MINIMAL).unwrap().gateways[0].limits.flow, FlowLimits::default());
    let set = "start_port = 2300\n[gateway.limits]\nmax_messages_per_second = 50\nmax_bytes_per_second = 0\nrate_policy = \"close\"\nworker_high_water = 65536";
    let f = load_str(&MINIMAL.replace("start_port = 2300", set)).unwrap().gateways[0].limits.flow.clone();
    assert_eq!(
        f,
        FlowLimits {
            worker_high_water: 65536,
            max_messages_per_second: 50,
            max_bytes_per_second: 0,
            rate_policy: RatePolicy::Close
        }
    );
    let bad =
        MINIMAL.replace("start_port = 2300", "start_port = 2300\n[gateway.limits]\nrate_policy = \"slow\"");
    let e = load_str(&bad).unwrap_err();
    assert_eq!(e.key, "gateway[0].limits.rate_policy", "{e}");
    assert!(e.to_string().contains("throttle"), "{e}");
    let bad = MINIMAL
        .replace("start_port = 2300", "start_port = 2300\n[gateway.limits]\nmax_messages_per_second = -1");
    assert_eq!(load_str(&bad).unwrap_err().key, "gateway[0].limits.max_messages_per_second");
}
