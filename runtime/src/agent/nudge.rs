//! The agent's socket, proof against a lost readiness: gVisor's kernel (Debian's runsc
//! 20221219, `--host-uds`) can miss the host socket's edge, and then a connection sits
//! with bytes in its host buffer that epoll never reports (seen: a restore's upload
//! stalled for good with 3 KiB unread and the supervisor's writes blocked behind them).
//! So a connection that waits on readiness also tries the socket itself now and then,
//! backing off while nothing is there, and the listener likewise tries to accept. Only
//! under gVisor ([`ENV_SOCKET_NUDGE`](crate::wire::ENV_SOCKET_NUDGE)): under runc the
//! socket is plain tokio's.

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

/// Tries at growing intervals while a wait lasts (one timer, re-armed for each wait).
#[derive(Default)]
struct Tries {
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
    pause: Duration,
}

impl Tries {
    /// Ready when it is time to try the socket directly (the waker is registered otherwise).
    fn poll_due(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.armed {
            self.pause = if self.pause.is_zero() {
                FIRST_TRY
            } else {
                (self.pause * 2).min(LAST_TRY)
            };
            let due = tokio::time::Instant::now() + self.pause;
            match self.timer.as_mut() {
                Some(timer) => timer.as_mut().reset(due),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(due))),
            }
            self.armed = true;
        }
        let timer = self.timer.as_mut().expect("armed above");
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.armed = false;
        Poll::Ready(())
    }

    /// The wait is over (data moved): the next wait starts from the first pause.
    fn reset(&mut self) {
        self.armed = false;
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
    /// False: no tries, readiness alone (a kernel that loses none).
    nudge: bool,
}

impl NudgedStream {
    fn new(inner: UnixStream, nudge: bool) -> Self {
        NudgedStream {
            inner,
            nudge,
            reads: Tries::default(),
            writes: Tries::default(),
            read_direct: false,
            write_direct: false,
        }
    }
}

/// Retries a syscall cut short by a signal.
fn again(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let n = call();
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `recv(2)` into the unfilled part of `buf` without waiting; `WouldBlock` when there
/// is nothing. Nothing of `buf` is zeroed first.
fn recv_now(fd: RawFd, buf: &mut ReadBuf<'_>) -> io::Result<()> {
    // SAFETY: recv only writes into the unfilled part, and only the `n` bytes it reports
    // are marked initialised and filled.
    unsafe {
        let unfilled = buf.unfilled_mut();
        let n = again(|| {
            libc::recv(
                fd,
                unfilled.as_mut_ptr().cast(),
                unfilled.len(),
                libc::MSG_DONTWAIT,
            )
        })?;
        buf.assume_init(n);
        buf.advance(n);
    }
    Ok(())
}

/// `send(2)` without waiting (and without SIGPIPE); `WouldBlock` when there is no room.
fn send_now(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    // SAFETY: `data` is valid for `data.len()` bytes; `fd` is the stream's own socket.
    again(|| unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), flags) })
}

/// A direct try within the task's cooperative budget (a fast peer must not keep one
/// task from yielding).
fn budgeted<T>(
    cx: &mut Context<'_>,
    attempt: impl FnOnce() -> io::Result<T>,
) -> Poll<io::Result<T>> {
    let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
    let result = attempt();
    if result.is_ok() {
        coop.made_progress();
    }
    Poll::Ready(result)
}

fn would_block(result: &io::Result<impl Sized>) -> bool {
    matches!(result, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
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
            let before = buf.filled().len();
            let read = std::task::ready!(budgeted(cx, || recv_now(fd, buf)));
            if !would_block(&read) {
                // EOF (nothing read) ends direct reading as well.
                this.read_direct = read.is_ok() && buf.filled().len() > before;
                return Poll::Ready(read);
            }
            this.read_direct = false;
        }
        if let Poll::Ready(done) = Pin::new(&mut this.inner).poll_read(cx, buf) {
            this.reads.reset();
            return Poll::Ready(done);
        }
        if !this.nudge {
            return Poll::Pending;
        }
        loop {
            if this.reads.poll_due(cx).is_pending() {
                return Poll::Pending;
            }
            let before = buf.filled().len();
            let read = recv_now(fd, buf);
            if !would_block(&read) {
                this.reads.reset();
                this.read_direct = read.is_ok() && buf.filled().len() > before;
                return Poll::Ready(read);
            }
        }
    }
}

/// The first non-empty buffer of a vectored write (what a direct try sends).
fn first_slice<'a>(bufs: &'a [io::IoSlice<'a>]) -> &'a [u8] {
    bufs.iter()
        .find(|b| !b.is_empty())
        .map(|b| &b[..])
        .unwrap_or(&[])
}

impl NudgedStream {
    /// A write: directly while direct writing works, else on readiness, with direct
    /// tries while that waits. `ready` is the write through tokio.
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        data: &[u8],
        ready: impl FnOnce(Pin<&mut UnixStream>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let fd = self.inner.as_raw_fd();
        if self.write_direct {
            let sent = std::task::ready!(budgeted(cx, || send_now(fd, data)));
            if !would_block(&sent) {
                return Poll::Ready(sent);
            }
            self.write_direct = false;
        }
        if let Poll::Ready(done) = ready(Pin::new(&mut self.inner), cx) {
            self.writes.reset();
            return Poll::Ready(done);
        }
        if !self.nudge {
            return Poll::Pending;
        }
        loop {
            if self.writes.poll_due(cx).is_pending() {
                return Poll::Pending;
            }
            let sent = send_now(fd, data);
            if !would_block(&sent) {
                self.writes.reset();
                self.write_direct = sent.is_ok();
                return Poll::Ready(sent);
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
        self.get_mut()
            .poll_send(cx, data, |inner, cx| inner.poll_write(cx, data))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = first_slice(bufs);
        self.get_mut()
            .poll_send(cx, first, |inner, cx| inner.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The agent's listener: accepts on readiness, and (when it nudges) tries `accept`
/// itself now and then.
pub struct NudgedListener {
    inner: UnixListener,
    nudge: bool,
    tries: Tries,
}

impl NudgedListener {
    /// `nudge`: whether it and its connections try their sockets directly while they
    /// wait (else they are tokio's, as they are).
    pub fn new(inner: UnixListener, nudge: bool) -> Self {
        NudgedListener {
            inner,
            nudge,
            tries: Tries::default(),
        }
    }
}

/// `accept4(2)` without waiting; `WouldBlock` when no connection waits.
fn accept_now(listener: &UnixListener) -> io::Result<UnixStream> {
    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    let listener = listener.as_raw_fd();
    // SAFETY: a plain syscall on the listener's own socket; no address is asked for.
    let fd = again(|| unsafe {
        libc::accept4(listener, std::ptr::null_mut(), std::ptr::null_mut(), flags) as isize
    })?;
    // SAFETY: `fd` was just returned by accept4 and is owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    UnixStream::from_std(std::os::unix::net::UnixStream::from(owned))
}

/// Connections carry no address the agent uses (its one client is the supervisor).
impl axum::serve::Listener for NudgedListener {
    type Io = NudgedStream;
    type Addr = ();

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let accepted = if self.nudge {
                let tries = &mut self.tries;
                let tried = std::future::poll_fn(|cx| tries.poll_due(cx));
                tokio::select! {
                    accepted = self.inner.accept() => accepted.map(|(stream, _)| stream),
                    _ = tried => match accept_now(&self.inner) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        other => other,
                    },
                }
            } else {
                self.inner.accept().await.map(|(stream, _)| stream)
            };
            self.tries.reset();
            match accepted {
                Ok(stream) => return (NudgedStream::new(stream, self.nudge), ()),
                Err(e) => {
                    // As axum's own listener: out of descriptors and the like pass.
                    eprintln!("berth-agent: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
        let mut stream = NudgedStream::new(inner, true);
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
        let mut listener = NudgedListener::new(watched, true);
        let _client = std::os::unix::net::UnixStream::connect(dir.path().join("other")).unwrap();
        tokio::time::timeout(
            Duration::from_secs(10),
            axum::serve::Listener::accept(&mut listener),
        )
        .await
        .expect("accepted although epoll never says so");
    }

    #[tokio::test]
    async fn room_whose_readiness_is_never_reported_is_written_into_all_the_same() {
        let (first, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let (second, mut reader) = std::os::unix::net::UnixStream::pair().unwrap();
        first.set_nonblocking(true).unwrap();
        second.set_nonblocking(true).unwrap();
        // Full to begin with: the first write through tokio finds no room and waits for
        // an edge that never comes.
        let mut filled = 0usize;
        while let Ok(n) = (&second).write(&[1u8; 4096]) {
            filled += n;
        }
        let inner = UnixStream::from_std(first).unwrap();
        swap_in(inner.as_raw_fd(), &second);
        drop(second);
        let mut stream = NudgedStream::new(inner, true);
        let body = vec![7u8; 4 << 20];
        let reading = std::thread::spawn(move || {
            let mut all = Vec::new();
            reader.read_to_end(&mut all).unwrap();
            all
        });
        tokio::time::timeout(Duration::from_secs(30), async {
            stream.write_all(&body).await.unwrap();
            stream.shutdown().await.unwrap();
        })
        .await
        .expect("written although epoll never says there is room");
        drop(stream);
        let all = reading.join().unwrap();
        assert_eq!(all.len(), filled + body.len());
        assert!(all[filled..] == body[..]);
    }
}
