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
fn advertise_ip_defaults_to_lan_ip_and_may_differ_from_it() {
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
