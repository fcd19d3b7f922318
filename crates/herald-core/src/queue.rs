//! A bounded queue of frames for one connection that holds memory only while frames wait: an idle
//! connection's queue is an empty `VecDeque` (no allocation), and a queue drained after a burst gives
//! its buffer back.

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Capacity kept after draining; more is released.
const KEEP: usize = 16;

/// Why a push failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue holds its maximum.
    Full,
    /// The consumer is gone.
    Closed,
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

/// A bounded multi-producer, single-consumer queue.
#[derive(Debug)]
pub struct FrameQueue<T> {
    state: Mutex<State<T>>,
    ready: Notify,
    max: usize,
}

impl<T> FrameQueue<T> {
    /// A queue holding at most `max` items.
    pub fn new(max: usize) -> FrameQueue<T> {
        FrameQueue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                closed: false,
            }),
            ready: Notify::new(),
            max: max.max(1),
        }
    }

    /// Adds an item without waiting.
    pub fn push(&self, item: T) -> Result<(), PushError> {
        {
            let mut s = self.state.lock();
            if s.closed {
                return Err(PushError::Closed);
            }
            if s.items.len() >= self.max {
                return Err(PushError::Full);
            }
            s.items.push_back(item);
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Takes the oldest item, if any.
    pub fn try_pop(&self) -> Option<T> {
        let mut s = self.state.lock();
        let item = s.items.pop_front();
        if s.items.is_empty() && s.items.capacity() > KEEP {
            s.items = VecDeque::new();
        }
        item
    }

    /// Waits for the oldest item; `None` once the queue is closed and empty. Cancel-safe.
    pub async fn pop(&self) -> Option<T> {
        loop {
            let notified = self.ready.notified();
            {
                let mut s = self.state.lock();
                if let Some(item) = s.items.pop_front() {
                    if s.items.is_empty() && s.items.capacity() > KEEP {
                        s.items = VecDeque::new();
                    }
                    return Some(item);
                }
                if s.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Refuses further pushes and drops what waits.
    pub fn close(&self) {
        let mut s = self.state.lock();
        s.closed = true;
        s.items = VecDeque::new();
        drop(s);
        self.ready.notify_one();
    }

    /// Most items it holds.
    pub fn capacity(&self) -> usize {
        self.max
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.state.lock().items.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_fifo_that_wakes_its_consumer() {
        let q = std::sync::Arc::new(FrameQueue::new(2));
        assert_eq!(q.push(1), Ok(()));
        assert_eq!(q.push(2), Ok(()));
        assert_eq!(q.push(3), Err(PushError::Full));
        assert_eq!(q.pop().await, Some(1));
        assert_eq!(q.try_pop(), Some(2));
        assert_eq!(q.try_pop(), None);
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.pop().await }
        });
        tokio::task::yield_now().await;
        q.push(4).unwrap();
        assert_eq!(waiter.await.unwrap(), Some(4));
        q.close();
        assert_eq!(q.push(5), Err(PushError::Closed));
        assert_eq!(q.pop().await, None);
    }
}
