//! A Unix-domain socket to PostgreSQL that wakes pgtenant only to read.
//!
//! Linux tells an edge-triggered epoll that a Unix socket is writable each
//! time its peer reads from it, so a socket registered for writing (as tokio
//! registers every stream) costs one extra wake-up per statement: the
//! backend reads the query, and pgtenant wakes for nothing before the answer
//! comes. Here the socket is registered for reading only; writes go straight
//! to it, and only a write the socket cannot take now registers a duplicate of
//! it for writability, which is dropped as soon as the bytes went out.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

#[derive(Debug)]
pub(crate) struct QuietUnixStream {
    readable: AsyncFd<StdUnixStream>,
    /// While a write waits for room: the same socket, registered for writing.
    writable: Option<AsyncFd<StdUnixStream>>,
}

impl QuietUnixStream {
    pub(crate) fn new(stream: tokio::net::UnixStream) -> io::Result<QuietUnixStream> {
        // into_std leaves the socket non-blocking and no longer registered.
        let stream = stream.into_std()?;
        Ok(QuietUnixStream { readable: register(stream, Interest::READABLE)?, writable: None })
    }

    /// True when the server closed the connection or sent something unasked.
    pub(crate) fn is_closed(&self) -> bool {
        let mut probe = [0u8; 1];
        !matches!(self.readable.get_ref().read(&mut probe), Err(ref e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.readable.get_ref().write(buf)
    }
}

fn register(socket: StdUnixStream, interest: Interest) -> io::Result<AsyncFd<StdUnixStream>> {
    // SAFETY: the AsyncFd owns the socket, which owns its descriptor: it
    // stays open, and as_raw_fd() returns it, until the AsyncFd is dropped.
    Ok(unsafe { AsyncFd::register_with_interest(socket, interest) }?)
}

/// Reads into the buffer's uninitialized room (zeroing 16 KiB per read first
/// would cost more than the read).
fn receive(socket: &StdUnixStream, buf: &mut ReadBuf<'_>) -> io::Result<usize> {
    // SAFETY: recv writes at most `room.len()` bytes into `room`, and only
    // the `n` bytes it reports written are marked initialized and filled.
    unsafe {
        let room = buf.unfilled_mut();
        let n = libc::recv(socket.as_raw_fd(), room.as_mut_ptr().cast(), room.len(), 0);
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        buf.assume_init(n);
        buf.advance(n);
        Ok(n)
    }
}

impl AsyncRead for QuietUnixStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let mut guard = ready!(this.readable.poll_read_ready(cx))?;
            let wanted = buf.remaining();
            match guard.try_io(|socket| receive(socket.get_ref(), buf)) {
                Ok(Ok(n)) => {
                    // A short read drained the socket: the next read waits
                    // for the next edge instead of costing a failed syscall.
                    if n > 0 && n < wanted {
                        guard.clear_ready();
                    }
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for QuietUnixStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.writable.is_none() {
            match this.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let duplicate = this.readable.get_ref().try_clone()?;
                    this.writable = Some(register(duplicate, Interest::WRITABLE)?);
                }
                written => return Poll::Ready(written),
            }
        }
        loop {
            let Some(writable) = this.writable.as_ref() else {
                return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
            };
            let mut guard = ready!(writable.poll_write_ready(cx))?;
            match guard.try_io(|socket| socket.get_ref().write(buf)) {
                Ok(written) => {
                    drop(guard);
                    // Room again: back to waking for reads only.
                    this.writable = None;
                    return Poll::Ready(written);
                }
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.readable.get_ref().shutdown(std::net::Shutdown::Write))
    }
}
