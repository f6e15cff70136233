//! Links to the registers: announce this gateway, redial after a close.

use std::io;
use std::time::Duration;

use log::warn;

use super::{Gateway, Timer};
use crate::reactor::{Ctx, Ready};

impl Gateway {
    pub(super) fn dial_register(&mut self, cx: &mut Ctx<'_, Timer>, i: usize) {
        let link = &mut self.registers[i];
        link.out.clear();
        link.out.extend(&self.register_lines);
        if let Err(e) = link.dial(cx.registry) {
            warn!("gateway: cannot reach register {}: {e}; retrying in 1 s", link.target);
            link.close(cx.registry);
            cx.after(Duration::from_secs(1), Timer::RegisterRetry(i));
        }
    }

    pub(super) fn on_register_ready(&mut self, cx: &mut Ctx<'_, Timer>, i: usize, ready: Ready) {
        let link = &mut self.registers[i];
        let res = link.on_ready(ready).and_then(|_| {
            // The register never writes to gateways; read only to notice a close.
            match link.read(64 * 1024)? {
                crate::wire::link::ReadEnd::Eof => Err(io::ErrorKind::UnexpectedEof.into()),
                _ => {
                    let n = link.inbuf.len();
                    link.inbuf.consume(n);
                    link.flush()
                }
            }
        });
        if let Err(e) = res {
            warn!("gateway: register link {} closed ({e}); reconnecting in 1 s", link.target);
            link.close(cx.registry);
            cx.after(Duration::from_secs(1), Timer::RegisterRetry(i));
        }
    }
}
