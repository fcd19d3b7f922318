//! What the benchmark sends: its channel names (`<prefix>-<c>`), its message payloads
//! (`{"t":<send time ns>,"pad":"xxx..."}` padded to an exact byte size, and reading `t` back) and
//! the HTTP batch bodies that carry them.

use herald_protocol::client;
use serde::Deserialize;

/// Channel-name prefix of the `idle`, `fanout` and `sse` channels (`bench-0`, `bench-1`, ...).
pub const BENCH: &str = "bench";

/// Name (without the `realtime:` prefix) of channel `channel` of the family `prefix`.
pub fn channel_name(prefix: &str, channel: u64) -> String {
    format!("{prefix}-{channel}")
}

/// A send time `t` in a benchmark payload.
#[derive(Deserialize)]
pub struct Stamped {
    /// Clock time of the send, ns.
    pub t: u64,
}

/// The send time `t` of a benchmark payload (JSON text), if it is one.
pub fn send_time(payload: &str) -> Option<u64> {
    serde_json::from_str::<Stamped>(payload).ok().map(|p| p.t)
}

/// The send time of a benchmark broadcast (event `b`) if the Phoenix frame `text` is one.
pub fn phoenix_send_time(text: &str) -> Option<u64> {
    let b = client::broadcast_of(&client::decode(text)?)?;
    send_time(b.payload.get()).filter(|_| b.event == "b")
}

/// Smallest payload, reached when the pad is empty and `t` has one digit: `{"t":0,"pad":""}`.
pub const MIN_PAYLOAD: usize = 16;
/// Largest HTTP batch body the benchmark sends (Herald accepts 16 MiB by default).
const MAX_BATCH_BODY: usize = 8 << 20;

/// Messages per HTTP request: `batch`, or fewer when that many `payload`-byte messages would make
/// the body larger than [`MAX_BATCH_BODY`] (at least one).
pub fn batch_for(batch: u64, payload: usize) -> u64 {
    // Each message adds its topic, event and JSON punctuation: about 64 bytes.
    let per_message = u64::try_from(payload.max(MIN_PAYLOAD) + 64).unwrap_or(u64::MAX);
    let fits = u64::try_from(MAX_BATCH_BODY).unwrap_or(u64::MAX) / per_message;
    batch.min(fits).max(1)
}

/// Builds payloads of one fixed size.
#[derive(Debug, Clone)]
pub struct PayloadBuilder {
    /// As many `x` as the payload has bytes.
    pad: String,
}

impl PayloadBuilder {
    /// Payloads will be `size` bytes long whenever `size` leaves room for `t` (otherwise as short as
    /// possible, with an empty pad).
    pub fn new(size: usize) -> Self {
        Self {
            pad: "x".repeat(size),
        }
    }

    /// The payload JSON for send time `t_ns`.
    pub fn build(&self, t_ns: u64) -> String {
        let t = t_ns.to_string();
        let pad = self.pad.len().saturating_sub(MIN_PAYLOAD - 1 + t.len());
        let pad = self.pad.get(..pad).unwrap_or(&self.pad);
        format!("{{\"t\":{t},\"pad\":\"{pad}\"}}")
    }
}

/// A JSON string holding `s`.
pub fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}
