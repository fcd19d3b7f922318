//! Lingering close of client connections. When Herald ends a connection while the client is still
//! sending (a frame over the size limit, a flood answered with a close code), closing the socket
//! at once with unread bytes in it makes the kernel answer with a reset, and the reset throws away
//! what Herald wrote last: the client sees 1006 instead of the close frame that says why. So a
//! connection's socket, once hyper and the WebSocket are done with it, is shut down for writing
//! (the last frames and a FIN go out), and what the client still sends is read and dropped until
//! it closes too or [`LINGER`] has passed.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Longest wait for the client to close after Herald has.
pub const LINGER: Duration = Duration::from_secs(2);

/// A TCP stream that lingers when dropped (see the module's documentation). Bytes read from it
/// before it was wrapped (`prefix`) are read again first.
#[derive(Debug)]
pub struct Lingering {
    inner: Option<TcpStream>,
    prefix: Vec<u8>,
    /// How much of `prefix` has been read.
    taken: usize,
}

impl Lingering {
    /// Wraps an accepted connection whose first bytes, `prefix`, were read already.
    pub fn new(stream: TcpStream, prefix: Vec<u8>) -> Lingering {
        Lingering {
            inner: Some(stream),
            prefix,
            taken: 0,
        }
    }

    fn stream(self: Pin<&mut Self>) -> io::Result<Pin<&mut TcpStream>> {
        match self.get_mut().inner.as_mut() {
            Some(s) => Ok(Pin::new(s)),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(stream) = self.inner.take() else {
            return;
        };
        // Without a runtime (the process is ending) the socket closes at once.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(stream));
        }
    }
}

/// Sends a FIN after what was written, then reads and drops until the peer closes or the time is up.
async fn drain(mut stream: TcpStream) {
    let _ = tokio::time::timeout(LINGER, async {
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 16 * 1024];
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

impl AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = &mut *self;
        if me.taken < me.prefix.len() {
            let rest = &me.prefix[me.taken..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            me.taken += n;
            if me.taken == me.prefix.len() {
                me.prefix = Vec::new();
                me.taken = 0;
            }
            return Poll::Ready(Ok(()));
        }
        match self.stream() {
            Ok(s) => s.poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(s) => s.poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(s) => s.poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => s.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => s.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}
