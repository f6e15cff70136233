//! The register's text protocol: one JSON object per line (`docs/protocol.md` §1), byte for
//! byte as GatewayWorker writes it.

use serde_json::Value as Json;

/// JSON string literal (quotes included).
fn quoted(s: &str) -> String {
    Json::String(s.to_string()).to_string()
}

/// First line a gateway sends to each register (note the `", "` separators PHP's string
/// concatenation produces).
pub fn gateway_connect(address: &str, secret: &str) -> Vec<u8> {
    format!(
        "{{\"event\":\"gateway_connect\", \"address\":{}, \"secret_key\":{}}}\n",
        quoted(address),
        quoted(secret)
    )
    .into_bytes()
}

/// First line a business worker or GatewayClient sends to a register.
pub fn worker_connect(secret: &str) -> Vec<u8> {
    format!("{{\"event\":\"worker_connect\",\"secret_key\":{}}}\n", quoted(secret)).into_bytes()
}

/// Keep-alive sent every 25 s to a register not on 127.0.0.1.
pub const PING: &[u8] = b"{\"event\":\"ping\"}\n";

/// The address list the register sends to workers.
pub fn broadcast_addresses(addresses: &[String]) -> Vec<u8> {
    let list: Vec<String> = addresses.iter().map(|a| quoted(a)).collect();
    format!("{{\"event\":\"broadcast_addresses\",\"addresses\":[{}]}}\n", list.join(",")).into_bytes()
}

/// A line received by the register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    GatewayConnect { address: Option<String>, secret: String },
    WorkerConnect { secret: String },
    Ping,
    Unknown(String),
}

/// Why a line is not a request: the text the register sends back before closing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadLine(pub String);

/// Parse one line (without its newline).
pub fn parse_request(line: &[u8]) -> Result<Request, BadLine> {
    let json: Json = serde_json::from_slice(line).map_err(|_| {
        BadLine(format!(
            "Bad request for Register service. Request info(IP:PORT): {}",
            String::from_utf8_lossy(line)
        ))
    })?;
    let event = json.get("event").and_then(Json::as_str).ok_or_else(|| {
        BadLine(format!("Bad request for Register service. Request info: {}", String::from_utf8_lossy(line)))
    })?;
    let secret = json.get("secret_key").and_then(Json::as_str).unwrap_or("").to_string();
    Ok(match event {
        "gateway_connect" => Request::GatewayConnect {
            address: json.get("address").and_then(Json::as_str).filter(|a| !a.is_empty()).map(str::to_string),
            secret,
        },
        "worker_connect" => Request::WorkerConnect { secret },
        "ping" => Request::Ping,
        other => Request::Unknown(other.to_string()),
    })
}

/// Addresses from a `broadcast_addresses` line (a JSON list, or an object when PHP's
/// `array_unique` left holes). `None` for any other line.
pub fn parse_broadcast(line: &[u8]) -> Option<Vec<String>> {
    let json: Json = serde_json::from_slice(line).ok()?;
    if json.get("event")?.as_str()? != "broadcast_addresses" {
        return None;
    }
    let values: Vec<&Json> = match json.get("addresses")? {
        Json::Array(a) => a.iter().collect(),
        Json::Object(o) => o.values().collect(),
        _ => return None,
    };
    Some(values.into_iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
}

/// Body of `CMD_WORKER_CONNECT` (PHP `json_encode`, no spaces).
pub fn worker_connect_body(worker_key: &str, secret: &str) -> Vec<u8> {
    format!("{{\"worker_key\":{},\"secret_key\":{}}}", quoted(worker_key), quoted(secret)).into_bytes()
}

/// Body of `CMD_GATEWAY_CLIENT_CONNECT`.
pub fn gateway_client_connect_body(secret: &str) -> Vec<u8> {
    format!("{{\"secret_key\":{}}}", quoted(secret)).into_bytes()
}

/// `worker_key` and `secret_key` of a `CMD_WORKER_CONNECT` / `CMD_GATEWAY_CLIENT_CONNECT` body.
pub fn parse_connect_body(body: &[u8]) -> Option<(Option<String>, String)> {
    let json: Json = serde_json::from_slice(body).ok()?;
    let secret = json.get("secret_key").and_then(Json::as_str).unwrap_or("").to_string();
    let key = json.get("worker_key").and_then(Json::as_str).map(str::to_string);
    Some((key, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_match_gatewayworker_bytes() {
        assert_eq!(
            gateway_connect("127.0.0.1:14410", ""),
            b"{\"event\":\"gateway_connect\", \"address\":\"127.0.0.1:14410\", \"secret_key\":\"\"}\n"
        );
        assert_eq!(worker_connect("s3cret"), b"{\"event\":\"worker_connect\",\"secret_key\":\"s3cret\"}\n");
        assert_eq!(
            broadcast_addresses(&["127.0.0.1:2300".into(), "127.0.0.1:2301".into()]),
            b"{\"event\":\"broadcast_addresses\",\"addresses\":[\"127.0.0.1:2300\",\"127.0.0.1:2301\"]}\n"
        );
        assert_eq!(
            worker_connect_body("ChatBusinessWorker:0", ""),
            b"{\"worker_key\":\"ChatBusinessWorker:0\",\"secret_key\":\"\"}"
        );
    }

    #[test]
    fn parses_requests_and_broadcasts() {
        assert_eq!(
            parse_request(br#"{"event":"gateway_connect", "address":"1.2.3.4:5", "secret_key":"k"}"#),
            Ok(Request::GatewayConnect { address: Some("1.2.3.4:5".into()), secret: "k".into() })
        );
        assert_eq!(
            parse_request(br#"{"event":"worker_connect"}"#),
            Ok(Request::WorkerConnect { secret: String::new() })
        );
        assert!(parse_request(b"not json").is_err());
        assert!(parse_request(br#"{"no":"event"}"#).is_err());
        assert_eq!(
            parse_broadcast(br#"{"event":"broadcast_addresses","addresses":{"0":"a","2":"b"}}"#),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(parse_broadcast(br#"{"event":"other"}"#), None);
    }
}
