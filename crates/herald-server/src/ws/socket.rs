//! Writing and closing a WebSocket connection: batches of queued frames with one flush each, the
//! close (what is pending, then the close frame, bounded in time), and the close frame that
//! answers a read error.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use herald_core::SessionHandle;
use herald_core::session::close;
use tokio_tungstenite::tungstenite;

use super::session::Ending;
use crate::state::AppState;

/// Frames written in one batch before flushing, at most.
pub(super) const MAX_BATCH_FRAMES: usize = 256;
/// Bytes written in one batch before flushing, at most.
pub(super) const MAX_BATCH_BYTES: usize = 256 * 1024;
/// How long a close frame may take to go out before the socket is simply dropped.
pub(super) const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Writes the pending frames, plus whatever else is queued (up to a batch), then flushes once.
pub(super) async fn write_batch(
    socket: &mut WebSocket,
    pending: &mut Vec<Message>,
    queue: &SessionHandle,
    app: &AppState,
) -> Result<(), axum::Error> {
    use futures_util::SinkExt;
    let stats = app.hub.stats();
    let mut frames = 0usize;
    let mut bytes = 0usize;
    for frame in pending.drain(..) {
        bytes += frame_len(&frame);
        frames += 1;
        socket.feed(frame).await?;
    }
    while frames < MAX_BATCH_FRAMES && bytes < MAX_BATCH_BYTES {
        let Some(frame) = queue.try_next_frame() else {
            break;
        };
        bytes += frame_len(&frame);
        frames += 1;
        socket.feed(frame).await?;
    }
    socket.flush().await?;
    stats.ws_messages_out.increment(frames as u64);
    stats.ws_bytes_out.increment(bytes as u64);
    Ok(())
}

fn frame_len(m: &Message) -> usize {
    match m {
        Message::Text(t) => t.len(),
        Message::Binary(b) => b.len(),
        _ => 0,
    }
}

/// Writes what is pending (best effort, bounded in time), then the close frame.
pub(super) async fn close_socket(
    mut socket: WebSocket,
    pending: &mut Vec<Message>,
    code: u16,
    reason: &str,
) -> Ending {
    use futures_util::SinkExt;
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let mut frames: Vec<Message> = std::mem::take(pending);
    frames.push(Message::Close(Some(frame.clone())));
    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, async {
        for f in frames {
            socket.feed(f).await?;
        }
        socket.flush().await
    })
    .await;
    Ending::Closed(frame)
}

/// The close frame that answers a read error, if any.
pub fn close_for_error(err: &axum::Error) -> Option<CloseFrame> {
    let inner = std::error::Error::source(err)?;
    let ws = inner.downcast_ref::<tungstenite::Error>()?;
    let (code, reason) = match ws {
        // A client that went away without a close frame (a closed tab, a lost network) is an
        // ordinary disconnect, not a protocol error.
        tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ) => {
            return None;
        }
        tungstenite::Error::Capacity(_) => (close::TOO_BIG, "message too big"),
        tungstenite::Error::Utf8(_) => (1007, "invalid UTF-8 in text frame"),
        tungstenite::Error::Protocol(_) => (1002, "protocol error"),
        _ => return None,
    };
    Some(CloseFrame {
        code,
        reason: reason.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::error::{CapacityError, ProtocolError};

    fn frame_for(e: tungstenite::Error) -> Option<u16> {
        close_for_error(&axum::Error::new(e)).map(|f| f.code)
    }

    #[test]
    fn a_client_gone_without_a_close_frame_is_no_protocol_error() {
        assert_eq!(
            frame_for(tungstenite::Error::Protocol(
                ProtocolError::ResetWithoutClosingHandshake
            )),
            None
        );
        assert_eq!(
            frame_for(tungstenite::Error::Protocol(
                ProtocolError::NonZeroReservedBits
            )),
            Some(1002)
        );
        assert_eq!(
            frame_for(tungstenite::Error::Capacity(
                CapacityError::MessageTooLong {
                    size: 2,
                    max_size: 1
                }
            )),
            Some(close::TOO_BIG)
        );
    }
}
