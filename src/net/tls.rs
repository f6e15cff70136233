//! TLS for client listeners (wss): a rustls `ServerConnection` over a non-blocking TCP
//! stream, driven like this: reader first, `read_tls` until `WouldBlock`,
//! queued records pushed whenever possible, and `write` never returning `Ok(0)`.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

/// Plaintext and ciphertext buffered per connection at most (rustls default is 64 KiB).
const TLS_BUFFER_LIMIT: usize = 64 * 1024;

/// Build the server config from PEM files; the error says which file and what is wrong.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad PEM in certificate {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {}", cert.display()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read a private key from {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            format!("certificate {} and key {} do not go together: {e}", cert.display(), key.display())
        })?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// One TLS server connection.
pub struct TlsIo {
    tcp: TcpStream,
    tls: ServerConnection,
}

impl TlsIo {
    pub fn new(tcp: TcpStream, cfg: &Arc<ServerConfig>) -> io::Result<TlsIo> {
        let mut tls = ServerConnection::new(Arc::clone(cfg)).map_err(io::Error::other)?;
        tls.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        Ok(TlsIo { tcp, tls })
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    pub fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    pub fn is_handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    pub fn wants_write(&self) -> bool {
        self.tls.wants_write()
    }

    /// Write queued TLS records until done or the socket blocks (then quietly stop).
    fn push(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.tcp) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Send close_notify and half-close.
    pub fn shutdown(&mut self) -> io::Result<()> {
        self.tls.send_close_notify();
        self.push()?;
        self.tcp.shutdown(std::net::Shutdown::Write)
    }
}

impl Read for TlsIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            match self.tls.read_tls(&mut self.tcp) {
                Ok(0) => {
                    // EOF recorded by rustls; the reader now reports the end (or an error
                    // when the peer did not send close_notify).
                    if let Err(e) = self.tls.process_new_packets() {
                        let _ = self.push();
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                    return match self.tls.reader().read(buf) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                        other => other,
                    };
                }
                Ok(_) => {
                    if let Err(e) = self.tls.process_new_packets() {
                        let _ = self.push();
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                    // Handshake messages (ServerHello, tickets) go out as soon as they exist.
                    self.push()?;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for TlsIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.push()?;
        let n = self.tls.writer().write(buf)?;
        self.push()?;
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.tcp) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
