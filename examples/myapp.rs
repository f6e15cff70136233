//! Your own application in your own binary: `cargo run --example myapp -- start` with
//! `app = "myapp"` in the `[worker]` section of the config.

use gatewayworker::api::{ClientId, Context, Events};

struct MyApp;

impl Events for MyApp {
    fn on_connect(&mut self, ctx: &mut Context<'_>, id: ClientId) {
        let _ = ctx.send_to_client(id, "welcome");
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, _id: ClientId, msg: &[u8]) {
        let _ = ctx.send_to_all(msg);
    }
}

fn main() {
    std::process::exit(gatewayworker::cli::main(|name| match name {
        "myapp" => Some(Box::new(MyApp)),
        other => gatewayworker::app::bundled(other),
    }));
}
