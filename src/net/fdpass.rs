//! Messages with sockets attached, over a Unix stream (SCM_RIGHTS): how a gateway hands its
//! connections to the process that replaces it. A message is a 4-byte little-endian length,
//! then that many bytes; the descriptors travel with its first bytes. Both ends use blocking
//! sockets with timeouts: a handover is a short exchange between two processes of one host,
//! and nothing else runs in either of them meanwhile.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Most descriptors one message carries.
pub const MAX_FDS: usize = 4;

/// Largest message accepted (a client's state: buffers up to the configured limits).
pub const MAX_LEN: usize = 256 << 20;

fn cmsg_space() -> usize {
    // SAFETY: CMSG_SPACE only computes a size.
    unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) as usize }
}

/// Send `data` as one message with `fds` attached.
pub fn send(sock: &UnixStream, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    assert!(fds.len() <= MAX_FDS, "at most {MAX_FDS} descriptors per message");
    if data.len() > MAX_LEN {
        return Err(io::Error::other(format!("message of {} bytes over {MAX_LEN}", data.len())));
    }
    let len = (data.len() as u32).to_le_bytes();
    let mut iov = [
        libc::iovec { iov_base: len.as_ptr() as *mut _, iov_len: len.len() },
        libc::iovec { iov_base: data.as_ptr() as *mut _, iov_len: data.len() },
    ];
    let mut control = vec![0u8; cmsg_space()];
    // SAFETY: an all-zero msghdr is valid; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len();
    if !fds.is_empty() {
        let bytes = std::mem::size_of_val(fds);
        msg.msg_control = control.as_mut_ptr() as *mut _;
        // SAFETY: CMSG_SPACE only computes a size.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(bytes as u32) } as usize;
        // SAFETY: the control buffer holds one header and `bytes` of data (CMSG_SPACE).
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(bytes as u32) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr() as *const u8, libc::CMSG_DATA(c), bytes);
        }
    }
    let sent = loop {
        // SAFETY: `msg` describes valid buffers; the socket is open.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // The descriptors went with the first byte; the rest is plain bytes.
    let mut rest = Vec::new();
    rest.extend_from_slice(&len);
    rest.extend_from_slice(data);
    (&*sock).write_all(&rest[sent..])
}

/// Receive one message: its bytes and the descriptors that came with it. `Ok(None)` when the
/// peer closed before a message began.
pub fn recv(sock: &UnixStream) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut len = [0u8; 4];
    let mut iov = [libc::iovec { iov_base: len.as_mut_ptr() as *mut _, iov_len: len.len() }];
    let mut control = vec![0u8; cmsg_space()];
    // SAFETY: an all-zero msghdr is valid; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut _;
    msg.msg_controllen = control.len();
    let got = loop {
        // SAFETY: `msg` describes valid buffers; the socket is open.
        let n =
            unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_WAITALL | libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let fds = take_fds(&msg);
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("more descriptors than a message may carry"));
    }
    if got == 0 {
        return Ok(None);
    }
    if got < len.len() {
        (&*sock).read_exact(&mut len[got..])?;
    }
    let n = u32::from_le_bytes(len) as usize;
    if n > MAX_LEN {
        return Err(io::Error::other(format!("message of {n} bytes over {MAX_LEN}")));
    }
    let mut data = vec![0; n];
    (&*sock).read_exact(&mut data)?;
    Ok(Some((data, fds)))
}

/// The descriptors of a received message, owned (so they close if dropped).
fn take_fds(msg: &libc::msghdr) -> Vec<OwnedFd> {
    let mut out = Vec::new();
    // SAFETY: walks the control buffer the kernel filled, within `msg_controllen`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c);
                let n = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                for i in 0..n {
                    let fd = std::ptr::read_unaligned((data as *const RawFd).add(i));
                    out.push(OwnedFd::from_raw_fd(fd));
                }
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_message_and_its_sockets_arrive_together() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut p, q) = UnixStream::pair().unwrap();
        send(&a, b"hello", &[q.as_raw_fd()]).unwrap();
        drop(q);
        send(&a, b"", &[]).unwrap();
        let big = vec![7u8; 1 << 20];
        let writer = std::thread::spawn(move || {
            send(&a, &big, &[]).unwrap();
            a
        });
        let (data, fds) = recv(&b).unwrap().unwrap();
        assert_eq!((&data[..], fds.len()), (&b"hello"[..], 1));
        // The received descriptor is the same socket: what goes in one end comes out here.
        let mut q2 = UnixStream::from(fds.into_iter().next().unwrap());
        q2.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        p.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        let (data, fds) = recv(&b).unwrap().unwrap();
        assert!(data.is_empty() && fds.is_empty());
        let (data, fds) = recv(&b).unwrap().unwrap();
        assert_eq!((data.len(), fds.len()), (1 << 20, 0));
        assert!(data.iter().all(|&x| x == 7));
        drop(writer.join().unwrap());
        assert!(recv(&b).unwrap().is_none(), "a closed peer is the end, not an error");
    }

    #[test]
    fn a_cut_message_is_an_error() {
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&10u32.to_le_bytes()).unwrap();
        (&a).write_all(b"abc").unwrap();
        drop(a);
        assert!(recv(&b).is_err());
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&[1, 0]).unwrap();
        drop(a);
        assert!(recv(&b).is_err(), "a length cut short");
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&u32::MAX.to_le_bytes()).unwrap();
        assert!(recv(&b).unwrap_err().to_string().contains("over"));
    }
}
