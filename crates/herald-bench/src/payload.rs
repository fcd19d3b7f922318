//! What the benchmark sends: its channel names (`<prefix>-<c>`), its message payloads
//! (`{"t":<send time ns>,"pad":"xxx..."}` padded to an exact byte size, and reading `t` back) and
//! the HTTP batch body that carries them to Herald.

use herald_protocol::client;
use serde::Deserialize;

/// Channel-name prefix of the `idle`, `fanout` and `sse` channels (`bench-0`, `bench-1`, ...).
pub const BENCH: &str = "bench";

/// Name (without the `realtime:` prefix) of channel `channel` of the family `prefix`.
pub fn channel_name(prefix: &str, channel: u64) -> String {
    format!("{prefix}-{channel}")
}

/// Topic of channel `channel` of the family `prefix`: `realtime:<prefix>-<channel>`.
pub fn topic(prefix: &str, channel: u64) -> String {
    format!("realtime:{prefix}-{channel}")
}

/// The send time `t` of a benchmark payload (JSON text), if it is one.
pub fn send_time(payload: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct Stamped {
        t: u64,
    }
    serde_json::from_str::<Stamped>(payload).ok().map(|p| p.t)
}

/// The send time of a benchmark broadcast (event `b`) if the Phoenix frame `text` is one.
pub fn phoenix_send_time(text: &str) -> Option<u64> {
    let b = client::broadcast_of(&client::decode(text)?)?;
    if b.event == "b" {
        send_time(b.payload.get())
    } else {
        None
    }
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
    size: usize,
    pad: String,
}

impl PayloadBuilder {
    /// Payloads will be `size` bytes long whenever `size` leaves room for `t` (otherwise as short as
    /// possible, with an empty pad).
    pub fn new(size: usize) -> Self {
        Self {
            size,
            pad: "x".repeat(size),
        }
    }

    /// The payload JSON for send time `t_ns`.
    pub fn build(&self, t_ns: u64) -> String {
        let digits = decimal_digits(t_ns);
        let fixed = MIN_PAYLOAD - 1 + digits;
        let pad_len = self.size.saturating_sub(fixed).min(self.pad.len());
        let mut out = String::with_capacity(fixed + pad_len);
        out.push_str("{\"t\":");
        out.push_str(&t_ns.to_string());
        out.push_str(",\"pad\":\"");
        out.push_str(self.pad.get(..pad_len).unwrap_or_default());
        out.push_str("\"}");
        out
    }
}

fn decimal_digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// The body of `POST /api/broadcast` for `(channel, payload)` pairs, channel `c` being
/// `<prefix>-<c>`.
pub fn http_batch<'a>(prefix: &str, messages: impl IntoIterator<Item = (u64, &'a str)>) -> String {
    batch(
        prefix,
        messages,
        ("{\"messages\":[", "]}"),
        |name, payload| {
            format!(
                "{{\"topic\":{},\"event\":\"b\",\"payload\":{payload}}}",
                json_str(name)
            )
        },
    )
}

/// A JSON string holding `s`.
pub fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The body of an HTTP publish request: `open`, then `item(channel name, payload)` for each
/// `(channel, payload)` pair (channel `c` being `<prefix>-<c>`), comma-separated, then `close`.
pub fn batch<'a>(
    prefix: &str,
    messages: impl IntoIterator<Item = (u64, &'a str)>,
    (open, close): (&str, &str),
    item: impl Fn(&str, &str) -> String,
) -> String {
    let items: Vec<String> = messages
        .into_iter()
        .map(|(c, payload)| item(&channel_name(prefix, c), payload))
        .collect();
    format!("{open}{}{close}", items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_requested_size() {
        for size in [16usize, 20, 64, 100, 1024, 4096] {
            let b = PayloadBuilder::new(size);
            for t in [0u64, 9, 10, 123_456_789, 9_999_999_999, u64::MAX] {
                let p = b.build(t);
                let v: serde_json::Value = serde_json::from_str(&p).unwrap();
                assert_eq!(v["t"].as_u64(), Some(t));
                let min = MIN_PAYLOAD - 1 + decimal_digits(t);
                assert_eq!(p.len(), size.max(min), "size {size} t {t}: {p}");
            }
        }
    }

    #[test]
    fn batches_keep_bodies_bounded() {
        assert_eq!(batch_for(500, 100), 500);
        assert_eq!(batch_for(1_000, 256 * 1024), 31);
        assert_eq!(batch_for(500, 1 << 20), 7);
        assert_eq!(batch_for(500, 100 << 20), 1);
        assert_eq!(batch_for(0, 10), 1);
    }

    #[test]
    fn bodies_carry_the_payloads_and_send_times_read_back() {
        let p = PayloadBuilder::new(40).build(5);
        let push = client::broadcast("3", "p9", &topic(BENCH, 2), "b", &p);
        assert_eq!(phoenix_send_time(&push), Some(5));
        let other = client::broadcast("3", "p9", &topic(BENCH, 2), "c", &p);
        assert_eq!(phoenix_send_time(&other), None);
        assert_eq!(send_time(r#"{"other":1}"#), None);
        let body: serde_json::Value =
            serde_json::from_str(&http_batch("bench", [(1, p.as_str()), (4, p.as_str())])).unwrap();
        assert_eq!(body["messages"][1]["topic"], "bench-4");
        assert_eq!(body["messages"][0]["payload"]["t"], 5);
        assert_eq!(http_batch("bench", std::iter::empty()), "{\"messages\":[]}");
    }
}
