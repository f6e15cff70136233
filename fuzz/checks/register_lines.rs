//! The register's JSON lines (`wire::register`): what a register reads from gateways and
//! workers, what workers read from the register, and the connect bodies gateways read from
//! workers and GatewayClients.

use gatewayworker::internals::wire::register::{self, BadLine, Request};

pub fn check(data: &[u8]) {
    parse(data);
    if let Some(line) = data.strip_suffix(b"\n") {
        // JSON allows trailing whitespace: the newline changes nothing but the error text.
        match (register::parse_request(line), register::parse_request(data)) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(_), Err(_)) => {}
            (a, b) => panic!("{a:?} without the newline, {b:?} with it"),
        }
    }
    round_trips(&String::from_utf8_lossy(data));
}

fn parse(line: &[u8]) {
    match register::parse_request(line) {
        Ok(Request::GatewayConnect { address, .. }) => {
            assert_ne!(address.as_deref(), Some(""), "an empty address is no address");
        }
        Ok(Request::Unknown(event)) => {
            assert!(!["gateway_connect", "worker_connect", "ping"].contains(&event.as_str()));
        }
        Ok(Request::WorkerConnect { .. } | Request::Ping) => {}
        Err(BadLine(text)) => {
            assert!(text.starts_with("Bad request for Register service. Request info"), "{text}");
            assert!(text.ends_with(&*String::from_utf8_lossy(line)), "{text}");
        }
    }
    if let Some(addresses) = register::parse_broadcast(line) {
        assert!(addresses.iter().map(|a| a.len() + 2).sum::<usize>() <= line.len());
    }
    register::parse_connect_body(line);
}

/// What we write, we read back: fields are taken from the input's lines.
fn round_trips(text: &str) {
    let mut fields = text.split('\n');
    let address = fields.next().unwrap_or("");
    let secret = fields.next().unwrap_or("");
    let list: Vec<String> = fields.map(str::to_string).collect();

    let line = register::gateway_connect(address, secret);
    let address_field = (!address.is_empty()).then(|| address.to_string());
    let want = Request::GatewayConnect { address: address_field, secret: secret.to_string() };
    assert_eq!(register::parse_request(one_line(&line)), Ok(want));

    let line = register::worker_connect(secret);
    assert_eq!(
        register::parse_request(one_line(&line)),
        Ok(Request::WorkerConnect { secret: secret.into() })
    );
    assert_eq!(register::parse_request(one_line(register::PING)), Ok(Request::Ping));

    let line = register::broadcast_addresses(&list);
    assert_eq!(register::parse_broadcast(one_line(&line)), Some(list));

    let body = register::worker_connect_body(address, secret);
    assert_eq!(register::parse_connect_body(&body), Some((Some(address.into()), secret.into())));
    let body = register::gateway_client_connect_body(secret);
    assert_eq!(register::parse_connect_body(&body), Some((None, secret.into())));
}

/// A line as written: one `\n`, at the end. Returns it without the newline.
fn one_line(line: &[u8]) -> &[u8] {
    let Some(body) = line.strip_suffix(b"\n") else { panic!("no newline: {line:?}") };
    assert!(!body.contains(&b'\n'), "newline inside {:?}", String::from_utf8_lossy(line));
    body
}
