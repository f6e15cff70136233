//! `Context`: what an `Events` callback gets inside a business worker. It is the Gateway API
//! (sends go into the worker's persistent gateway links, flushed at the end of the loop
//! turn; queries use blocking side connections) plus the current client: its id, address,
//! and its session, saved automatically after the callback when changed.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use super::client_id::ClientId;
use super::gateway::{Api, SendOpts, ToClientId};
use super::membership::Names;
use super::transport::{ApiError, Pkt, QueryPool, Transport};
use crate::wire::php::{self, Array};

/// The worker's table of gateway links, as the API sees it.
pub trait Links {
    /// Gateways this worker is linked to.
    fn addresses(&self) -> Vec<SocketAddrV4>;
    /// Of those, the gateways that may hold a client with one of `names`, by what each
    /// gateway told this worker on its link and what this worker bound and joined there.
    fn holders(&self, names: Names<'_>) -> Vec<SocketAddrV4>;
    /// Queue a packet on the link to `gw` (written at the end of the loop turn).
    fn queue(&mut self, gw: SocketAddrV4, p: Pkt<'_>) -> Result<(), ApiError>;
    /// Write what is queued for `gws` now, so a query sees the effect of earlier sends.
    fn flush_now(&mut self, gws: &[SocketAddrV4]);
}

/// Transport inside a business worker.
pub struct WorkerTransport<'a> {
    pub links: &'a mut dyn Links,
    pub pool: &'a mut QueryPool,
}

impl Transport for WorkerTransport<'_> {
    fn gateways(&mut self) -> Result<Vec<SocketAddrV4>, ApiError> {
        Ok(self.links.addresses())
    }

    fn gateways_for(&mut self, names: Names<'_>) -> Result<Vec<SocketAddrV4>, ApiError> {
        Ok(self.links.holders(names))
    }

    fn send(&mut self, gw: SocketAddrV4, p: Pkt<'_>) -> Result<(), ApiError> {
        self.links.queue(gw, p)
    }

    fn query(&mut self, gws: &[SocketAddrV4], p: Pkt<'_>) -> Vec<(SocketAddrV4, Vec<u8>)> {
        self.links.flush_now(gws);
        self.pool.request(gws, p)
    }
}

/// The client whose event is being handled.
pub struct Current {
    pub id: ClientId,
    pub remote: SocketAddrV4,
    pub gateway_port: u16,
    pub binary: bool,
    /// Session as received (PHP-serialized, '' for none).
    pub raw_session: Vec<u8>,
    /// (as received, as modified) once the callback touched the session.
    session: Option<(Array, Array)>,
}

impl Current {
    pub fn new(
        id: ClientId,
        remote: SocketAddrV4,
        gateway_port: u16,
        binary: bool,
        raw_session: Vec<u8>,
    ) -> Current {
        Current { id, remote, gateway_port, binary, raw_session, session: None }
    }

    /// The session bytes to save after the callback, if the callback changed it.
    pub fn changed_session(&self) -> Option<Vec<u8>> {
        let (before, now) = self.session.as_ref()?;
        if before == now {
            return None;
        }
        Some(if now.is_empty() { Vec::new() } else { php::serialize_array(now) })
    }
}

/// A timer requested by application code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerRequest {
    Add { id: u64, after: Duration, repeat: bool },
    Del { id: u64 },
}

/// What the worker process offers a callback besides the API.
pub struct WorkerInfo<'a> {
    pub name: &'a str,
    pub id: u16,
    pub timers: &'a mut Vec<TimerRequest>,
    pub next_timer: &'a mut u64,
}

/// The argument of every `Events` callback.
pub struct Context<'a> {
    api: Api<WorkerTransport<'a>>,
    current: Option<Current>,
    info: WorkerInfo<'a>,
}

impl<'a> Context<'a> {
    pub(crate) fn new(t: WorkerTransport<'a>, current: Option<Current>, info: WorkerInfo<'a>) -> Context<'a> {
        Context { api: Api::new(t), current, info }
    }

    /// Hand back the current client's state (for the automatic session save).
    pub(crate) fn into_current(self) -> Option<Current> {
        self.current
    }

    /// Name of this business worker group (`[worker] name`).
    pub fn worker_name(&self) -> &str {
        self.info.name
    }

    /// Index of this process within its group (0..count).
    pub fn worker_id(&self) -> u16 {
        self.info.id
    }

    /// Client of the event being handled (`None` in `on_worker_start`/timers).
    pub fn client_id(&self) -> Option<ClientId> {
        self.current.as_ref().map(|c| c.id)
    }

    /// Client address (`$_SERVER['REMOTE_ADDR']`, `REMOTE_PORT`).
    pub fn remote_addr(&self) -> Option<SocketAddrV4> {
        self.current.as_ref().map(|c| c.remote)
    }

    /// Gateway lan ip (`GATEWAY_ADDR`) and public port (`GATEWAY_PORT`).
    pub fn gateway_addr(&self) -> Option<SocketAddrV4> {
        self.current.as_ref().map(|c| SocketAddrV4::new(Ipv4Addr::from(c.id.gateway_ip), c.gateway_port))
    }

    /// True when the current websocket message arrived as a binary frame.
    pub fn message_is_binary(&self) -> bool {
        self.current.as_ref().is_some_and(|c| c.binary)
    }

    fn current_id(&self) -> Result<ClientId, ApiError> {
        self.client_id().ok_or(ApiError::NoCurrentClient)
    }

    /// Send `msg` to the client whose event this is (`Gateway::sendToCurrentClient`).
    pub fn send_to_current_client(&mut self, msg: impl AsRef<[u8]>) -> Result<(), ApiError> {
        self.send_to_current_client_opts(msg, SendOpts::TEXT)
    }

    /// [`Context::send_to_current_client`] with send options (raw, binary).
    pub fn send_to_current_client_opts(
        &mut self,
        msg: impl AsRef<[u8]>,
        opts: SendOpts,
    ) -> Result<(), ApiError> {
        let id = self.current_id()?;
        self.api.send_to_client_opts(id, msg, opts)
    }

    /// Close the current client, after sending `msg` if given.
    pub fn close_current_client(&mut self, msg: Option<&[u8]>) -> Result<(), ApiError> {
        let id = self.current_id()?;
        self.api.close_client(id, msg)
    }

    /// Drop the current client's connection at once, without a goodbye.
    pub fn destroy_current_client(&mut self) -> Result<(), ApiError> {
        let id = self.current_id()?;
        self.api.destroy_client(id)
    }

    /// The current client's session (`$_SESSION`), saved after the callback if changed.
    pub fn session(&mut self) -> Result<&mut Array, ApiError> {
        let c = self.current.as_mut().ok_or(ApiError::NoCurrentClient)?;
        if c.session.is_none() {
            let arr = match php::unserialize(&c.raw_session) {
                Ok(php::Value::Array(a)) => a,
                _ => Array::new(),
            };
            c.session = Some((arr.clone(), arr));
        }
        c.session.as_mut().map(|s| &mut s.1).ok_or(ApiError::NoCurrentClient)
    }

    fn is_current(&self, id: &ClientId) -> bool {
        self.current.as_ref().is_some_and(|c| c.id == *id)
    }

    /// Replace a session; for the current client the local copy is replaced too, so the
    /// automatic save does not send it again.
    pub fn set_session(&mut self, id: impl ToClientId, session: &Array) -> Result<(), ApiError> {
        let id = id.to_client_id()?;
        self.api.set_session(id, session)?;
        if self.is_current(&id)
            && let Some(c) = self.current.as_mut()
        {
            c.session = Some((session.clone(), session.clone()));
        }
        Ok(())
    }

    /// Merge into a session at the gateway; the current client's local copy is merged too.
    pub fn update_session(&mut self, id: impl ToClientId, partial: &Array) -> Result<(), ApiError> {
        let id = id.to_client_id()?;
        self.api.update_session(id, partial)?;
        if self.is_current(&id) {
            self.session()?;
            if let Some((before, now)) = self.current.as_mut().and_then(|c| c.session.as_mut()) {
                php::array_replace_recursive(before, partial);
                php::array_replace_recursive(now, partial);
            }
        }
        Ok(())
    }

    /// A client's session; the current client's is the live local copy.
    pub fn get_session(&mut self, id: impl ToClientId) -> Result<Option<Array>, ApiError> {
        let id = id.to_client_id()?;
        if self.is_current(&id) {
            return Ok(Some(self.session()?.clone()));
        }
        self.api.get_session(id)
    }

    /// Every client's session; the current client's is the live local copy.
    pub fn get_all_client_sessions(&mut self) -> Result<Vec<(ClientId, Array)>, ApiError> {
        let mut all = self.api.get_all_client_sessions()?;
        if let Some(id) = self.client_id() {
            let live = self.session()?.clone();
            for (cid, s) in all.iter_mut() {
                if *cid == id {
                    *s = live.clone();
                }
            }
        }
        Ok(all)
    }

    /// Run `Events::on_timer(ctx, id)` after `after` (and every `after` when `repeat`).
    pub fn add_timer(&mut self, after: Duration, repeat: bool) -> u64 {
        *self.info.next_timer += 1;
        let id = *self.info.next_timer;
        self.info.timers.push(TimerRequest::Add { id, after, repeat });
        id
    }

    /// Cancel a timer added with [`Context::add_timer`].
    pub fn del_timer(&mut self, id: u64) {
        self.info.timers.push(TimerRequest::Del { id });
    }
}

impl<'a> Deref for Context<'a> {
    type Target = Api<WorkerTransport<'a>>;
    fn deref(&self) -> &Self::Target {
        &self.api
    }
}

impl DerefMut for Context<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.api
    }
}
