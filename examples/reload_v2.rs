//! A second build of the server whose `echo` application answers with a `v2:` prefix and
//! whose version label is the package version with `+v2`. The reload test puts it in place
//! of the running binary and checks that `reload` makes the new code live without dropping a
//! client or a message; the upgrade tests check that `upgrade` moves every process to it
//! (`status` then reports the `+v2` label).

use gatewayworker::api::{ClientId, Context, Events, SendOpts};

struct EchoV2;

impl Events for EchoV2 {
    fn on_message(&mut self, ctx: &mut Context<'_>, _id: ClientId, msg: &[u8]) {
        let mut reply = b"v2:".to_vec();
        reply.extend_from_slice(msg);
        let opts = if ctx.message_is_binary() { SendOpts::BINARY } else { SendOpts::TEXT };
        let _ = ctx.send_to_current_client_opts(reply, opts);
    }
}

fn main() {
    std::process::exit(gatewayworker::cli::main_with(concat!(env!("CARGO_PKG_VERSION"), "+v2"), |name| {
        match name {
            "echo" => Some(Box::new(EchoV2)),
            other => gatewayworker::app::bundled(other),
        }
    }));
}
