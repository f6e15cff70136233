//! A small blocking HTTP/1.1 client for the HTTP listener tests (keep-alive, raw requests),
//! and the cluster spec with an `[http]` section.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;

use serde_json::Value as Json;

use super::cluster::{Cluster, DEADLINE, Spec, free_port, wait_for};

/// A parsed response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Json {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Read one response from `s` (`None` when the server closed before a complete one).
pub fn read_response(s: &mut TcpStream) -> Option<Resp> {
    read_next(s, &mut Vec::new())
}

/// Read the next response from `s`, `buf` holding what was received and not parsed yet
/// (pipelined responses).
pub fn read_next(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Resp> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(n)) = r.parse(buf) {
            let status = r.code.unwrap();
            let headers: Vec<(String, String)> = r
                .headers
                .iter()
                .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                .collect();
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse().unwrap());
            if status == 100 {
                buf.drain(..n);
                continue;
            }
            while buf.len() < n + len {
                let got = s.read(&mut chunk).ok()?;
                if got == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..got]);
            }
            let body = buf[n..n + len].to_vec();
            buf.drain(..n + len);
            return Some(Resp { status, headers, body });
        }
        match s.read(&mut chunk) {
            Ok(0) => return None,
            Ok(got) => buf.extend_from_slice(&chunk[..got]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("no response within the deadline (got {:?})", String::from_utf8_lossy(buf))
            }
            Err(_) => return None,
        }
    }
}

/// A keep-alive connection to the HTTP listener.
pub struct Http {
    pub port: u16,
    pub key: String,
    conn: Option<TcpStream>,
}

impl Http {
    pub fn new(port: u16, key: &str) -> Http {
        Http { port, key: key.to_string(), conn: None }
    }

    pub fn connect(port: u16) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s
    }

    /// Send a request on the kept-alive connection (reconnecting once if the server closed it).
    pub fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in headers {
            req += &format!("{k}: {v}\r\n");
        }
        req += "\r\n";
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        for _ in 0..2 {
            let port = self.port;
            let s = self.conn.get_or_insert_with(|| Http::connect(port));
            if s.write_all(&bytes).is_ok()
                && let Some(r) = read_response(s)
            {
                if r.header("Connection") == Some("close") {
                    self.conn = None;
                }
                return r;
            }
            self.conn = None;
        }
        panic!("no response to {method} {path}");
    }

    pub fn get(&mut self, path: &str) -> Resp {
        self.request("GET", path, &[], b"")
    }

    /// `POST /api/<call>` with the key.
    pub fn api_raw(&mut self, call: &str, body: &str) -> Resp {
        let auth = format!("Bearer {}", self.key);
        self.request("POST", &format!("/api/{call}"), &[("Authorization", &auth)], body.as_bytes())
    }

    /// An API call that must succeed; returns its result.
    pub fn api(&mut self, call: &str, body: Json) -> Json {
        let r = self.api_raw(call, &body.to_string());
        let j = r.json();
        assert_eq!((r.status, &j["ok"]), (200, &Json::Bool(true)), "{call} {body}: {j}");
        j["result"].clone()
    }
}

/// The `[http]` section for a cluster (listen on a free loopback port, short limits).
pub fn http_section(port: u16, extra: &str) -> String {
    format!("[http]\nlisten = \"http://127.0.0.1:{port}\"\nquery_timeout = 2\n{extra}\n")
}

/// A free port for the HTTP listener.
pub fn http_port() -> u16 {
    free_port()
}

/// Start `spec` with an `[http]` section (`extra` keys) and wait until its API answers.
pub fn start_with_http(mut spec: Spec, extra: &str, key: &str) -> (Cluster, Http) {
    let port = http_port();
    spec.top = http_section(port, extra);
    let c = Cluster::start(spec);
    let mut h = Http::new(port, key);
    wait_api(&mut h);
    (c, h)
}

/// Wait until the HTTP process answers API calls (it has the gateway list).
pub fn wait_api(h: &mut Http) {
    wait_for("the HTTP API to see the gateways", || {
        let r = h.api_raw("get_all_client_count", "{}");
        (r.status == 200).then_some(())
    });
}

/// Wait until `/readyz` says `want`.
pub fn wait_ready_status(h: &mut Http, want: u16) -> Resp {
    wait_for(&format!("/readyz {want}"), || {
        let r = h.get("/readyz");
        (r.status == want).then_some(r)
    })
}

/// The path of tool `name` on `PATH`. Missing: the test says so loudly and is skipped, except
/// with `GW_REQUIRE_TOOLS=1` (as CI runs), where it fails.
pub fn tool(name: &str, package: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|f| f.is_file()));
    if found.is_none() {
        let msg = format!("`{name}` is not installed (apt-get install -y {package})");
        if std::env::var("GW_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("GW_REQUIRE_TOOLS=1 but {msg}");
        }
        eprintln!("\n*** SKIPPED: {msg} ***\n");
    }
    found
}
