//! The embedded broker: a single node's broker, with history in the embedded store.
//!
//! Messages of channels that keep history go to one writer thread. It takes whatever publishes
//! are waiting (up to [`GROUP_MESSAGES`]), assigns their offsets, writes them in one commit (one
//! sync with `fsync`), then hands each to the event handler in offset order and answers its
//! publisher. So no disk I/O runs on the async workers, concurrent publishers share commits, and
//! every node-local delivery of a channel follows its offsets. Messages of channels without
//! history are handed to the event handler at once, on the publisher's thread. History reads run
//! on the blocking pool.

use std::sync::Arc;

use herald_store::Record;
use tokio::sync::{mpsc, oneshot};
use tracing::error;

use crate::broker::{BoxFuture, Broker, Event, Marker, PublishError, Published};
use crate::channel::ChannelKey;
use crate::delivery::EventHandler;
use crate::history::{
    Appended, History, HistoryError, NewMessage, Position, RecoverRequest, Recovery,
};
use crate::message::{Body, Broadcast, ChannelEvent, Origin};

/// Most messages one commit takes.
pub const GROUP_MESSAGES: usize = 512;
/// Publishes waiting for the writer at most; further publishers wait for room.
const QUEUE: usize = 4096;

enum Reply {
    One(oneshot::Sender<Result<Published, PublishError>>),
    Many(oneshot::Sender<Result<Vec<Published>, PublishError>>),
}

struct Op {
    msgs: Vec<Broadcast>,
    marker: Option<Marker>,
    reply: Reply,
}

impl Op {
    fn answer(self, result: Result<Vec<Published>, PublishError>) {
        match self.reply {
            Reply::One(tx) => {
                let one = result.and_then(|mut v| {
                    v.pop()
                        .ok_or_else(|| PublishError::Unavailable("no answer".to_owned()))
                });
                let _ = tx.send(one);
            }
            Reply::Many(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// The single-node broker.
pub struct Embedded {
    handler: Arc<EventHandler>,
    history: Option<Arc<History>>,
    writer: Option<mpsc::Sender<Op>>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded").finish_non_exhaustive()
    }
}

impl Embedded {
    /// A broker delivering through `handler`, with `history` (and its writer thread) when given.
    pub fn new(handler: Arc<EventHandler>, history: Option<Arc<History>>) -> Embedded {
        let writer = history.as_ref().and_then(|h| {
            let (tx, rx) = mpsc::channel(QUEUE);
            let (h, handler) = (h.clone(), handler.clone());
            match std::thread::Builder::new()
                .name("herald-history".to_owned())
                .spawn(move || write_loop(rx, &h, &handler))
            {
                Ok(_) => Some(tx),
                Err(e) => {
                    error!(error = %e, "could not start the history writer");
                    None
                }
            }
        });
        Embedded {
            handler,
            history,
            writer,
        }
    }

    async fn send(&self, op: Op) -> Result<(), PublishError> {
        let writer = self
            .writer
            .as_ref()
            .ok_or_else(|| PublishError::Unavailable("history writer not running".to_owned()))?;
        writer
            .send(op)
            .await
            .map_err(|_| PublishError::Unavailable("history writer stopped".to_owned()))
    }

    fn history(&self) -> Result<Arc<History>, HistoryError> {
        self.history
            .clone()
            .ok_or_else(|| HistoryError::Rule("history is off on this node".to_owned()))
    }
}

fn stopped<T>(_: T) -> PublishError {
    PublishError::Unavailable("history writer stopped".to_owned())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, HistoryError> + Send + 'static,
) -> Result<T, HistoryError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HistoryError::Rule(format!("history read failed: {e}")))?
}

impl Broker for Embedded {
    fn publish(&self, msg: Broadcast) -> BoxFuture<'_, Result<Published, PublishError>> {
        Box::pin(async move {
            if !self.keeps_history(&msg.channel) {
                let fanout = self.handler.handle(&Event::Broadcast(Arc::new(msg)));
                return Ok(Published::Delivered {
                    position: None,
                    fanout,
                });
            }
            let (tx, rx) = oneshot::channel();
            self.send(Op {
                msgs: vec![msg],
                marker: None,
                reply: Reply::One(tx),
            })
            .await?;
            rx.await.map_err(stopped)?
        })
    }

    fn publish_group(
        &self,
        msgs: Vec<Broadcast>,
        marker: Option<Marker>,
    ) -> BoxFuture<'_, Result<Vec<Published>, PublishError>> {
        Box::pin(async move {
            if self.history.is_none() {
                return Ok(msgs
                    .into_iter()
                    .map(|m| Published::Delivered {
                        position: None,
                        fanout: self.handler.handle(&Event::Broadcast(Arc::new(m))),
                    })
                    .collect());
            }
            let (tx, rx) = oneshot::channel();
            self.send(Op {
                msgs,
                marker,
                reply: Reply::Many(tx),
            })
            .await?;
            rx.await.map_err(stopped)?
        })
    }

    fn emit(&self, event: ChannelEvent) {
        self.handler.handle(&Event::Channel(Arc::new(event)));
    }

    fn subscribe(&self, _key: &ChannelKey) {}

    fn unsubscribe(&self, _key: &ChannelKey) {}

    fn keeps_history(&self, key: &ChannelKey) -> bool {
        self.history.as_ref().is_some_and(|h| h.enabled(key))
    }

    fn recover(
        &self,
        key: ChannelKey,
        request: RecoverRequest,
    ) -> BoxFuture<'_, Result<Recovery, HistoryError>> {
        Box::pin(async move {
            let h = self.history()?;
            blocking(move || {
                fail::fail_point!("history-replay", |_| Err(HistoryError::Rule(
                    "failpoint history-replay".to_owned()
                )));
                h.read_missed(&key, &request)
            })
            .await
        })
    }

    fn position(&self, key: ChannelKey) -> BoxFuture<'_, Result<Position, HistoryError>> {
        Box::pin(async move {
            let h = self.history()?;
            blocking(move || h.position(&key)).await
        })
    }

    fn read_after(
        &self,
        key: ChannelKey,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Record>, HistoryError>> {
        Box::pin(async move {
            let h = self.history()?;
            blocking(move || h.read_after(&key, after, limit)).await
        })
    }

    fn marker(&self, name: String) -> BoxFuture<'_, Result<Option<Vec<u8>>, HistoryError>> {
        Box::pin(async move {
            let h = self.history()?;
            blocking(move || h.marker(&name)).await
        })
    }
}

/// The writer thread: groups what waits, commits it once, delivers in order, answers.
fn write_loop(mut rx: mpsc::Receiver<Op>, history: &History, handler: &EventHandler) {
    while let Some(first) = rx.blocking_recv() {
        let mut count = first.msgs.len();
        let mut run = vec![first];
        while count < GROUP_MESSAGES {
            let Ok(op) = rx.try_recv() else { break };
            // One marker per commit: a second one starts the next run.
            if op.marker.is_some() && run.iter().any(|o| o.marker.is_some()) {
                commit(std::mem::take(&mut run), history, handler);
                count = 0;
            }
            count += op.msgs.len();
            run.push(op);
        }
        commit(run, history, handler);
    }
}

fn payload(body: &Body) -> (bool, &[u8]) {
    match body {
        Body::Raw(b) => (true, b),
        Body::Json(j) => (false, j.get().as_bytes()),
    }
}

fn commit(mut run: Vec<Op>, history: &History, handler: &EventHandler) {
    let marker = run.iter_mut().find_map(|o| o.marker.take());
    for msg in run.iter_mut().flat_map(|o| o.msgs.iter_mut()) {
        if msg.id.is_none() && history.enabled(&msg.channel) {
            msg.id = Some(uuid::Uuid::new_v4().to_string());
        }
    }
    let answers = {
        let items: Vec<(ChannelKey, NewMessage<'_>)> = run
            .iter()
            .flat_map(|o| o.msgs.iter())
            .filter(|m| history.enabled(&m.channel))
            .map(|m| {
                let (raw, payload) = payload(&m.body);
                (
                    m.channel.clone(),
                    NewMessage {
                        id: m.id.as_deref().unwrap_or_default(),
                        event: &m.event,
                        origin: u8::from(m.origin == Origin::Binary),
                        raw,
                        payload,
                        idempotency_key: m.idempotency_key.as_deref(),
                    },
                )
            })
            .collect();
        history.append_group(&items, marker.as_ref().map(|(n, v)| (n.as_str(), &v[..])))
    };
    let mut answers = match answers {
        Ok(a) => a.into_iter(),
        Err(e) => {
            error!(error = %e, "history append failed; the publishes are refused");
            crate::stats::error("history_append");
            let text = e.to_string();
            for op in run {
                op.answer(Err(PublishError::Unavailable(text.clone())));
            }
            return;
        }
    };
    fail::fail_point!("history-after-append");
    for op in run {
        let mut out = Vec::with_capacity(op.msgs.len());
        let Op {
            msgs,
            marker,
            reply,
        } = op;
        for mut msg in msgs {
            let stored = history.enabled(&msg.channel);
            match stored.then(|| answers.next()).flatten() {
                Some(Appended::Duplicate(position)) => out.push(Published::Duplicate { position }),
                Some(Appended::New(position)) => {
                    msg.position = Some(position.clone());
                    let fanout = handler.handle(&Event::Broadcast(Arc::new(msg)));
                    out.push(Published::Delivered {
                        position: Some(position),
                        fanout,
                    });
                }
                None => {
                    let fanout = handler.handle(&Event::Broadcast(Arc::new(msg)));
                    out.push(Published::Delivered {
                        position: None,
                        fanout,
                    });
                }
            }
        }
        Op {
            msgs: Vec::new(),
            marker,
            reply,
        }
        .answer(Ok(out));
    }
}
