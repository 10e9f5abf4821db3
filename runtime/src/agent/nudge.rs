//! The agent's socket, proof against a lost readiness: gVisor's kernel (Debian's runsc
//! 20221219, `--host-uds`) can miss the host socket's edge, and then a connection sits
//! with bytes in its host buffer that epoll never reports (seen: a restore's upload
//! stalled for good with 3 KiB unread and the supervisor's writes blocked behind them).
//! So a connection that waits on readiness also tries the socket itself now and then,
//! backing off while nothing is there, and the listener likewise tries to accept; under a
//! kernel that loses nothing, the tries find nothing and cost a syscall each.

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::time::Sleep;

/// The first try after a wait begins; doubled while nothing is found.
const FIRST_TRY: Duration = Duration::from_millis(20);
/// The longest pause between tries.
const LAST_TRY: Duration = Duration::from_secs(1);

/// Tries at growing intervals while a wait lasts.
#[derive(Default)]
struct Tries {
    timer: Option<Pin<Box<Sleep>>>,
    pause: Duration,
}

impl Tries {
    /// Ready when it is time to try the socket directly (the waker is registered otherwise).
    fn poll_due(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.timer.is_none() {
            self.pause = if self.pause.is_zero() {
                FIRST_TRY
            } else {
                (self.pause * 2).min(LAST_TRY)
            };
            self.timer = Some(Box::pin(tokio::time::sleep(self.pause)));
        }
        let timer = self.timer.as_mut().expect("set above");
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.timer = None;
        Poll::Ready(())
    }

    /// The wait is over (data moved): the next wait starts from the first pause.
    fn reset(&mut self) {
        self.timer = None;
        self.pause = Duration::ZERO;
    }
}

/// An accepted connection whose reads and writes fall back to direct tries.
pub struct NudgedStream {
    inner: UnixStream,
    reads: Tries,
    writes: Tries,
    /// A direct try found what readiness had not reported: keep reading directly until
    /// the socket is empty (a lost edge does not come back by itself).
    read_direct: bool,
    write_direct: bool,
}

impl NudgedStream {
    fn new(inner: UnixStream) -> Self {
        NudgedStream {
            inner,
            reads: Tries::default(),
            writes: Tries::default(),
            read_direct: false,
            write_direct: false,
        }
    }
}

/// `recv(2)` without waiting; `WouldBlock` when there is nothing.
fn recv_now(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes; `fd` is the stream's own socket.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `send(2)` without waiting (and without SIGPIPE); `WouldBlock` when there is no room.
fn send_now(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    // SAFETY: `buf` is valid for `buf.len()` bytes; `fd` is the stream's own socket.
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), flags) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl AsyncRead for NudgedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let fd = this.inner.as_raw_fd();
        if this.read_direct {
            match recv_now(fd, buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => this.read_direct = false,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        if let Poll::Ready(done) = Pin::new(&mut this.inner).poll_read(cx, buf) {
            this.reads.reset();
            return Poll::Ready(done);
        }
        loop {
            if this.reads.poll_due(cx).is_pending() {
                return Poll::Pending;
            }
            match recv_now(fd, buf.initialize_unfilled()) {
                Ok(n) => {
                    this.reads.reset();
                    this.read_direct = n > 0;
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for NudgedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let fd = this.inner.as_raw_fd();
        if this.write_direct {
            match send_now(fd, data) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => this.write_direct = false,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        if let Poll::Ready(done) = Pin::new(&mut this.inner).poll_write(cx, data) {
            this.writes.reset();
            return Poll::Ready(done);
        }
        loop {
            if this.writes.poll_due(cx).is_pending() {
                return Poll::Pending;
            }
            match send_now(fd, data) {
                Ok(n) => {
                    this.writes.reset();
                    this.write_direct = true;
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The agent's listener: accepts on readiness, and tries `accept` itself now and then.
pub struct NudgedListener {
    inner: UnixListener,
}

impl NudgedListener {
    pub fn new(inner: UnixListener) -> Self {
        NudgedListener { inner }
    }

    /// `accept4(2)` without waiting; `WouldBlock` when no connection waits.
    fn accept_now(&self) -> io::Result<UnixStream> {
        let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        // SAFETY: a plain syscall on the listener's own socket; no address is asked for.
        let fd = unsafe {
            libc::accept4(
                self.inner.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                flags,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by accept4 and is owned by nobody else.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        UnixStream::from_std(std::os::unix::net::UnixStream::from(owned))
    }
}

impl axum::serve::Listener for NudgedListener {
    type Io = NudgedStream;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let mut tries = Tries::default();
        loop {
            let tried = std::future::poll_fn(|cx| tries.poll_due(cx));
            let accepted = tokio::select! {
                accepted = self.inner.accept() => accepted.map(|(s, _)| s),
                _ = tried => match self.accept_now() {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    other => other,
                },
            };
            match accepted.and_then(|s| s.local_addr().map(|a| (s, a))) {
                Ok((stream, addr)) => return (NudgedStream::new(stream), addr),
                Err(e) => {
                    // As axum's own listener: out of descriptors and the like pass.
                    eprintln!("berth-agent: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio::io::AsyncReadExt;

    /// Points `registered`'s descriptor at `other`'s socket: the reactor keeps watching
    /// the first socket, so readiness of the one now read is never reported, as when
    /// gVisor loses an edge.
    fn swap_in(registered: RawFd, other: &impl AsRawFd) {
        // SAFETY: both descriptors are open; `registered` then refers to `other`'s socket.
        assert!(unsafe { libc::dup2(other.as_raw_fd(), registered) } >= 0);
    }

    #[tokio::test]
    async fn bytes_whose_readiness_is_never_reported_are_read_all_the_same() {
        let (first, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let (second, mut writer) = std::os::unix::net::UnixStream::pair().unwrap();
        first.set_nonblocking(true).unwrap();
        let inner = UnixStream::from_std(first).unwrap();
        swap_in(inner.as_raw_fd(), &second);
        drop(second);
        let mut stream = NudgedStream::new(inner);
        let body = vec![7u8; 300 * 1024];
        let sent = body.clone();
        let writing = std::thread::spawn(move || writer.write_all(&sent).unwrap());
        let mut got = vec![0u8; body.len()];
        tokio::time::timeout(Duration::from_secs(20), stream.read_exact(&mut got))
            .await
            .expect("read although epoll never says so")
            .unwrap();
        writing.join().unwrap();
        assert!(got == body);
    }

    #[tokio::test]
    async fn a_connection_whose_readiness_is_never_reported_is_accepted_all_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let watched = UnixListener::bind(dir.path().join("watched")).unwrap();
        let other = std::os::unix::net::UnixListener::bind(dir.path().join("other")).unwrap();
        other.set_nonblocking(true).unwrap();
        swap_in(watched.as_raw_fd(), &other);
        drop(other);
        let mut listener = NudgedListener::new(watched);
        let _client = std::os::unix::net::UnixStream::connect(dir.path().join("other")).unwrap();
        tokio::time::timeout(
            Duration::from_secs(10),
            axum::serve::Listener::accept(&mut listener),
        )
        .await
        .expect("accepted although epoll never says so");
    }
}
