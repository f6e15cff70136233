//! Sockets: listeners bound by the master, the plain/TLS byte stream, and the client
//! protocols (text, frame, websocket).

pub mod frame;
pub mod io;
pub mod listener;
pub mod text;
pub mod tls;
pub mod websocket;
