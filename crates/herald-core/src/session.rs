//! The hub's handle on one client connection: its bounded outbound queue and its close signal.
//!
//! Overflow policy: when a connection's queue is full, the connection is a slow consumer. It is
//! closed (code [`close::SLOW_CONSUMER`]); the publisher's message is never dropped for the others.

use std::sync::Arc;

use axum::extract::ws::Message;
use herald_protocol::Vsn;
use parking_lot::Mutex;

use crate::queue::{FrameQueue, PushError};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// Close codes Herald sends, with their reasons.
pub mod close {
    /// Normal close (client asked, or nothing more to say).
    pub const NORMAL: u16 = 1000;
    /// The node is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// A frame larger than `max_frame_bytes`.
    pub const TOO_BIG: u16 = 1009;
    /// The client sent nothing (not even a heartbeat) for `idle_timeout_secs`.
    pub const IDLE_TIMEOUT: u16 = 4000;
    /// The outbound queue overflowed: the client reads too slowly.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// Joins per second over `max_joins_per_second`.
    pub const JOIN_FLOOD: u16 = 4029;
}

/// Why a session is being closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// The WebSocket close code.
    pub code: u16,
    /// The close reason text.
    pub reason: String,
}

/// What happened to a frame handed to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued for writing.
    Queued,
    /// The session is gone or closing.
    Closed,
    /// The queue was full; the session is now closing as a slow consumer.
    Overflow,
}

/// One connection, as the hub sees it.
#[derive(Debug)]
pub struct SessionHandle {
    /// Node-unique connection id.
    pub id: u64,
    /// The protocol the connection speaks.
    pub vsn: Vsn,
    queue: FrameQueue<Message>,
    closer: CancellationToken,
    reason: Mutex<Option<CloseReason>>,
}

impl SessionHandle {
    /// A handle whose outbound queue holds at most `queue_frames`.
    pub fn new(id: u64, vsn: Vsn, queue_frames: usize) -> Arc<SessionHandle> {
        Arc::new(SessionHandle {
            id,
            vsn,
            queue: FrameQueue::new(queue_frames),
            closer: CancellationToken::new(),
            reason: Mutex::new(None),
        })
    }

    /// The next queued frame (cancel-safe); `None` once the queue is closed.
    pub async fn next_frame(&self) -> Option<Message> {
        self.queue.pop().await
    }

    /// A queued frame, if one waits.
    pub fn try_next_frame(&self) -> Option<Message> {
        self.queue.try_pop()
    }

    /// Most frames its queue holds.
    pub fn queue_capacity(&self) -> usize {
        self.queue.capacity()
    }

    /// Stops accepting frames (the connection is gone).
    pub fn close_queue(&self) {
        self.queue.close();
    }

    /// Queues a frame without waiting.
    pub fn push(&self, frame: Message) -> Delivery {
        if self.closer.is_cancelled() {
            return Delivery::Closed;
        }
        match self.queue.push(frame) {
            Ok(()) => Delivery::Queued,
            Err(PushError::Closed) => Delivery::Closed,
            Err(PushError::Full) => {
                self.close_with(close::SLOW_CONSUMER, "slow consumer: outbound queue full");
                Delivery::Overflow
            }
        }
    }

    /// Asks the connection to close with this code and reason (the first reason given wins).
    pub fn close_with(&self, code: u16, reason: &str) {
        {
            let mut slot = self.reason.lock();
            if slot.is_none() {
                *slot = Some(CloseReason {
                    code,
                    reason: reason.to_owned(),
                });
            }
        }
        self.closer.cancel();
    }

    /// Resolves once the connection has been asked to close.
    pub fn closing(&self) -> WaitForCancellationFuture<'_> {
        self.closer.cancelled()
    }

    /// True once the connection has been asked to close.
    pub fn is_closing(&self) -> bool {
        self.closer.is_cancelled()
    }

    /// The reason given to [`SessionHandle::close_with`], if any.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.reason.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_closes_as_slow_consumer() {
        let s = SessionHandle::new(1, Vsn::V2, 2);
        assert_eq!(s.push(Message::Text("a".into())), Delivery::Queued);
        assert_eq!(s.push(Message::Text("b".into())), Delivery::Queued);
        assert_eq!(s.push(Message::Text("c".into())), Delivery::Overflow);
        assert!(s.is_closing());
        assert_eq!(s.close_reason().unwrap().code, close::SLOW_CONSUMER);
        assert_eq!(s.push(Message::Text("d".into())), Delivery::Closed);
    }
}

/// One frame for an SSE stream: the shared, pre-encoded event lines, and the position the stream adds
/// to its cursor (`id:`) before ending the event.
#[derive(Debug, Clone)]
pub struct SseItem {
    /// The channel it came from.
    pub channel: crate::channel::ChannelKey,
    /// Its position, when the channel keeps history.
    pub position: Option<crate::history::Position>,
    /// `event: ...\ndata: ...\n` (without the blank line that ends the event).
    pub data: bytes::Bytes,
}

/// One SSE stream, as the hub sees it.
#[derive(Debug)]
pub struct SseHandle {
    /// Node-unique id.
    pub id: u64,
    queue: FrameQueue<SseItem>,
    closer: CancellationToken,
}

impl SseHandle {
    /// A handle whose queue holds at most `queue` items.
    pub fn new(id: u64, queue: usize) -> Arc<SseHandle> {
        Arc::new(SseHandle {
            id,
            queue: FrameQueue::new(queue),
            closer: CancellationToken::new(),
        })
    }

    /// The next queued item (cancel-safe); `None` once closed.
    pub async fn next_item(&self) -> Option<SseItem> {
        self.queue.pop().await
    }

    /// A queued item, if one waits.
    pub fn try_next_item(&self) -> Option<SseItem> {
        self.queue.try_pop()
    }

    /// Most items its queue holds.
    pub fn queue_capacity(&self) -> usize {
        self.queue.capacity()
    }

    /// Stops accepting items (the stream is gone).
    pub fn close_queue(&self) {
        self.queue.close();
    }

    /// Queues an item without waiting; a full queue ends the stream (slow consumer).
    pub fn push(&self, item: SseItem) -> Delivery {
        if self.closer.is_cancelled() {
            return Delivery::Closed;
        }
        match self.queue.push(item) {
            Ok(()) => Delivery::Queued,
            Err(PushError::Closed) => Delivery::Closed,
            Err(PushError::Full) => {
                // The stream is over: what waits for it is dropped now, not when its writer (which
                // may be stuck behind a peer that reads nothing) next looks.
                self.closer.cancel();
                self.queue.close();
                Delivery::Overflow
            }
        }
    }

    /// Ends the stream (a slow consumer): drops what waits and refuses more.
    pub fn end(&self) {
        self.closer.cancel();
        self.queue.close();
    }

    /// Resolves once the stream must end.
    pub fn closing(&self) -> WaitForCancellationFuture<'_> {
        self.closer.cancelled()
    }

    /// True once the stream must end.
    pub fn is_closing(&self) -> bool {
        self.closer.is_cancelled()
    }
}
