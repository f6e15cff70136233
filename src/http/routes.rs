//! Which handler a request goes to, and the API key check.

use super::conn::Response;
use crate::wire::secret_eq;

/// A routed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `POST /api/<call>`.
    Api(String),
    Metrics,
    Healthz,
    Readyz,
    Dashboard,
    DashboardJson,
}

/// Route `method path`: 404 for an unknown path, 405 (with `Allow`) for a wrong method.
pub fn route(method: &str, path: &str) -> Result<Route, Response> {
    let (route, allow) = match path {
        "/" | "/index.html" => (Route::Dashboard, "GET"),
        "/dashboard.json" => (Route::DashboardJson, "GET"),
        "/metrics" => (Route::Metrics, "GET"),
        "/healthz" => (Route::Healthz, "GET"),
        "/readyz" => (Route::Readyz, "GET"),
        p if p.starts_with("/api/") => (Route::Api(p["/api/".len()..].to_string()), "POST"),
        _ => return Err(Response::error(404, "not_found", &format!("no such path {path:?}"))),
    };
    if method != allow {
        return Err(Response::error(
            405,
            "method_not_allowed",
            &format!("{path} takes {allow}, not {method}"),
        )
        .with_header("Allow", allow));
    }
    Ok(route)
}

/// `Authorization: Bearer <key>` compared in constant time; anything goes with no key set
/// (allowed on loopback only, checked when the configuration is loaded).
pub fn authorized(key: &str, header: Option<&[u8]>) -> bool {
    if key.is_empty() {
        return true;
    }
    let Some(token) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else { return false };
    secret_eq(token.trim_ascii(), key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_methods_and_keys() {
        assert_eq!(route("POST", "/api/send_to_all").ok(), Some(Route::Api("send_to_all".into())));
        assert_eq!(route("GET", "/metrics").ok(), Some(Route::Metrics));
        let e = route("GET", "/api/send_to_all").unwrap_err();
        assert_eq!(e.status, 405);
        assert!(e.headers.contains("Allow: POST"));
        assert_eq!(route("POST", "/metrics").unwrap_err().status, 405);
        assert_eq!(route("GET", "/nope").unwrap_err().status, 404);
        assert!(authorized("", None));
        assert!(authorized("k3y", Some(b"Bearer k3y")));
        assert!(!authorized("k3y", Some(b"Bearer k3x")));
        assert!(!authorized("k3y", Some(b"Basic k3y")));
        assert!(!authorized("k3y", None));
    }
}
