//! The per-process event loop: one mio `Poll`, edge-triggered, readiness kept as data by the
//! services, timers, signals through a self-pipe, and an end-of-turn hook where services flush
//! what they buffered during the turn (redis `beforeSleep`).
//!
//! Contract for services: every socket is registered once for READABLE | WRITABLE; on an
//! event the service does I/O until `WouldBlock` or keeps the ready bit and returns `true` from
//! `end_of_turn` so the next turn does not sleep.

pub mod buffer;
pub mod ready;
pub mod signals;
pub mod timer;

use std::io;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Registry, Token};

pub use buffer::{InBuf, OutBuf};
pub use ready::Ready;
pub use signals::SignalPipe;
pub use timer::{TimerId, Timers};

/// Token of the signal self-pipe; services use tokens below it.
pub const SIGNAL_TOKEN: Token = Token(usize::MAX - 1);

/// What a service method gets to act on the reactor.
pub struct Ctx<'a, T> {
    pub registry: &'a Registry,
    pub timers: &'a mut Timers<T>,
    /// Time at the start of this turn's dispatch.
    pub now: Instant,
}

impl<T> Ctx<'_, T> {
    /// Arm a timer relative to the turn's time.
    pub fn after(&mut self, d: Duration, payload: T) -> TimerId {
        self.timers.add(self.now, d, payload)
    }
}

/// One process role driven by the reactor.
pub trait Service {
    /// The service's own timer payload.
    type Timer;

    /// Readiness reported for one of the service's tokens.
    fn on_ready(&mut self, cx: &mut Ctx<'_, Self::Timer>, token: Token, ready: Ready);

    /// A timer armed by the service fired.
    fn on_timer(&mut self, cx: &mut Ctx<'_, Self::Timer>, timer: Self::Timer);

    /// A watched signal arrived.
    fn on_signal(&mut self, cx: &mut Ctx<'_, Self::Timer>, signal: i32);

    /// Called once per turn after dispatch: flush buffered writes, destroy connections marked
    /// for closing. Returns true when work is left over (kept ready bits) so the next poll
    /// must not block.
    fn end_of_turn(&mut self, cx: &mut Ctx<'_, Self::Timer>) -> bool;

    /// True when the loop should return (the service finished stopping).
    fn should_stop(&self) -> bool;
}

/// The poll, its event buffer, the timers and the signal pipe of one process.
pub struct Reactor<T> {
    poll: Poll,
    events: Events,
    timers: Timers<T>,
    signals: Option<SignalPipe>,
}

impl<T> Reactor<T> {
    pub fn new() -> io::Result<Reactor<T>> {
        Ok(Reactor {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            timers: Timers::default(),
            signals: None,
        })
    }

    /// Watch `signals` (handlers set flags, the loop calls `Service::on_signal`).
    pub fn watch_signals(&mut self, signals: &[i32]) -> io::Result<()> {
        let mut pipe = SignalPipe::install(signals)?;
        self.poll.registry().register(pipe.source(), SIGNAL_TOKEN, Interest::READABLE)?;
        self.signals = Some(pipe);
        Ok(())
    }

    /// A context for setting a service up before `run`.
    pub fn ctx(&mut self) -> Ctx<'_, T> {
        Ctx { registry: self.poll.registry(), timers: &mut self.timers, now: Instant::now() }
    }

    /// Run `svc` until it says it should stop.
    pub fn run<S: Service<Timer = T>>(&mut self, svc: &mut S) -> io::Result<()> {
        let mut busy = false;
        let mut fired = Vec::new();
        while !svc.should_stop() {
            let now = Instant::now();
            let timeout = if busy { Some(Duration::ZERO) } else { self.timers.until_next(now) };
            match self.poll.poll(&mut self.events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            let mut cx =
                Ctx { registry: self.poll.registry(), timers: &mut self.timers, now: Instant::now() };
            for ev in self.events.iter() {
                if ev.token() == SIGNAL_TOKEN {
                    if let Some(pipe) = self.signals.as_mut() {
                        pipe.take(&mut fired);
                    }
                    continue;
                }
                svc.on_ready(&mut cx, ev.token(), Ready::from_event(ev));
            }
            for sig in fired.drain(..) {
                svc.on_signal(&mut cx, sig);
            }
            while let Some(t) = cx.timers.pop_due(cx.now) {
                svc.on_timer(&mut cx, t);
            }
            busy = svc.end_of_turn(&mut cx);
        }
        Ok(())
    }
}

/// `WouldBlock`: the operation must wait for the next edge.
pub fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// `EINTR`: retry at once.
pub fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}
