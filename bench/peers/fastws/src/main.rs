//! Reference peer for the benchmarks: a WebSocket server on fastwebsockets and a tokio
//! current-thread runtime, the "direct echo ceiling" the benchmarks compare against.
//!
//! Usage: `fastws-peer echo|broadcast HOST:PORT [--tls CERT.pem KEY.pem]`
//!
//! - `echo`: every text/binary message is sent back to its sender with the same opcode.
//! - `broadcast`: a message from any connection is sent to every *other* connection.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use fastwebsockets::{
    upgrade, FragmentCollector, FragmentCollectorRead, Frame, OpCode, Payload, WebSocketError,
};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use tokio::net::TcpSocket;
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Echo,
    Broadcast,
}

/// Outgoing queues of every open connection (broadcast mode), by connection id.
#[derive(Default)]
struct Peers {
    next_id: Cell<u64>,
    queues: RefCell<HashMap<u64, mpsc::UnboundedSender<(OpCode, Bytes)>>>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn usage() -> ! {
    eprintln!("usage: fastws-peer echo|broadcast HOST:PORT [--tls CERT.pem KEY.pem]");
    std::process::exit(2);
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 2 && args.len() != 5 {
        usage();
    }
    let mode = match args[0].as_str() {
        "echo" => Mode::Echo,
        "broadcast" => Mode::Broadcast,
        _ => usage(),
    };
    let addr: SocketAddr = args[1].parse()?;
    let tls = if args.len() == 5 {
        if args[2] != "--tls" {
            usage();
        }
        Some(tls_acceptor(&args[3], &args[4])?)
    } else {
        None
    };

    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, serve(addr, mode, tls))
}

fn tls_acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, BoxError> {
    let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn serve(addr: SocketAddr, mode: Mode, tls: Option<TlsAcceptor>) -> Result<(), BoxError> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(4096)?;
    eprintln!("fastws-peer: {} on {addr}", if mode == Mode::Echo { "echo" } else { "broadcast" });
    let peers = Rc::new(Peers::default());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let peers = peers.clone();
        let tls = tls.clone();
        tokio::task::spawn_local(async move {
            // Connection errors (a client gone without a close frame or close_notify) are
            // routine at the end of every benchmark run: not reported.
            let _ = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => serve_http(hyper_util::rt::TokioIo::new(stream), mode, peers).await,
                    Err(_) => return,
                },
                None => serve_http(hyper_util::rt::TokioIo::new(stream), mode, peers).await,
            };
        });
    }
}

async fn serve_http<I>(io: I, mode: Mode, peers: Rc<Peers>) -> Result<(), hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |mut req: Request<Incoming>| {
        let peers = peers.clone();
        async move {
            let (response, fut) = upgrade::upgrade(&mut req)?;
            tokio::task::spawn_local(async move {
                let _ = match mode {
                    Mode::Echo => echo(fut).await,
                    Mode::Broadcast => broadcast(fut, peers).await,
                };
            });
            Ok::<Response<Empty<Bytes>>, WebSocketError>(response)
        }
    });
    http1::Builder::new().serve_connection(io, service).with_upgrades().await
}

async fn echo(fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = FragmentCollector::new(fut.await?);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
}

async fn broadcast(fut: upgrade::UpgradeFut, peers: Rc<Peers>) -> Result<(), WebSocketError> {
    let ws = fut.await?;
    let (rx, mut tx) = ws.split(tokio::io::split);
    let mut rx = FragmentCollectorRead::new(rx);
    let (queue, mut outgoing) = mpsc::unbounded_channel::<(OpCode, Bytes)>();
    let id = peers.next_id.get();
    peers.next_id.set(id + 1);
    peers.queues.borrow_mut().insert(id, queue);

    let writer = tokio::task::spawn_local(async move {
        while let Some((opcode, data)) = outgoing.recv().await {
            let frame = Frame::new(true, opcode, None, Payload::Borrowed(&data));
            if tx.write_frame(frame).await.is_err() {
                break;
            }
        }
    });

    let result = loop {
        // Obligated writes (pong, close reply) are not sent: the load generator sends neither
        // pings nor expects a close reply from this peer.
        let frame = match rx.read_frame::<_, WebSocketError>(&mut |_| async { Ok(()) }).await {
            Ok(frame) => frame,
            Err(e) => break Err(e),
        };
        match frame.opcode {
            OpCode::Close => break Ok(()),
            OpCode::Text | OpCode::Binary => {
                let data = Bytes::copy_from_slice(&frame.payload);
                for (other, queue) in peers.queues.borrow().iter() {
                    if *other != id {
                        let _ = queue.send((frame.opcode, data.clone()));
                    }
                }
            }
            _ => {}
        }
    };
    peers.queues.borrow_mut().remove(&id);
    writer.abort();
    result
}
