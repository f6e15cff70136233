//! Which business worker gets a client's events: sticky per client, least connections on
//! the first event (GatewayWorker's `routerBind` + `router_least_connections`). A worker that
//! drains (graceful reload) gets no new events; its clients move on their next event.

use super::client::Route;

struct Entry {
    route: Route,
    /// Clients currently bound.
    bound: i64,
    draining: bool,
}

#[derive(Default)]
pub struct Router {
    entries: Vec<Entry>,
}

impl Router {
    /// A worker link became usable (starts at 0 bound clients, so it gets new clients first).
    pub fn add(&mut self, route: Route) {
        self.remove(route.key);
        self.entries.push(Entry { route, bound: 0, draining: false });
    }

    pub fn remove(&mut self, key: usize) {
        self.entries.retain(|e| e.route.key != key);
    }

    pub fn set_draining(&mut self, key: usize) {
        for e in self.entries.iter_mut().filter(|e| e.route.key == key) {
            e.draining = true;
        }
    }

    pub fn is_live(&self, r: Route) -> bool {
        self.entries.iter().any(|e| e.route == r && !e.draining)
    }

    /// Keep `current` if it is still live, else pick the least loaded live worker (first in
    /// insertion order on ties) and move the client's binding there.
    pub fn route(&mut self, current: Option<Route>) -> Option<Route> {
        if let Some(r) = current.filter(|r| self.is_live(*r)) {
            return Some(r);
        }
        let best = self.entries.iter_mut().filter(|e| !e.draining).min_by_key(|e| e.bound)?;
        best.bound += 1;
        let picked = best.route;
        if let Some(old) = current {
            self.unbind(old);
        }
        Some(picked)
    }

    /// A client arrived bound to `r` (handed over from the process this one replaces).
    pub fn bind(&mut self, r: Route) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.route == r) {
            e.bound += 1;
        }
    }

    /// A client bound to `r` went away.
    pub fn unbind(&mut self, r: Route) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.route == r) {
            e.bound -= 1;
        }
    }

    /// Any live worker, least loaded (for events of clients already gone).
    pub fn any(&self) -> Option<Route> {
        self.entries.iter().filter(|e| !e.draining).min_by_key(|e| e.bound).map(|e| e.route)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(key: usize) -> Route {
        Route { key, serial: key as u64 * 10 }
    }

    #[test]
    fn sticky_least_connections_with_insertion_order_ties() {
        let mut rt = Router::default();
        rt.add(r(1));
        rt.add(r(2));
        let a = rt.route(None).unwrap();
        let b = rt.route(None).unwrap();
        assert_eq!((a, b), (r(1), r(2)));
        assert_eq!(rt.route(Some(a)), Some(a), "sticky");
        rt.add(r(3));
        assert_eq!(rt.route(None), Some(r(3)), "a new worker starts at 0 and wins");
        rt.unbind(a);
        assert_eq!(rt.route(None), Some(r(1)));
    }

    #[test]
    fn draining_worker_loses_its_clients_on_their_next_event() {
        let mut rt = Router::default();
        rt.add(r(1));
        let a = rt.route(None).unwrap();
        rt.add(r(2));
        rt.set_draining(1);
        assert_eq!(rt.route(Some(a)), Some(r(2)));
        rt.remove(2);
        assert_eq!(rt.route(None), None);
        assert_eq!(rt.any(), None);
    }
}
