//! Counters and gauges of one node, exported at `/metrics`.
//!
//! Handles are created once, so the hot path is an atomic add. Names:
//! `herald_connections{transport}`, `herald_channels`, `herald_joins_total`,
//! `herald_messages_in_total{transport}`, `herald_messages_out_total{transport}`,
//! `herald_bytes_in_total{transport}`, `herald_bytes_out_total{transport}`,
//! `herald_dropped_total{reason}`, `herald_errors_total{reason}`, `herald_presences`,
//! `herald_presence_diffs_total`, `herald_presence_frames_total`.

use metrics::{Counter, Gauge, counter, gauge};

/// Metric handles of one node.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Open WebSocket connections.
    pub ws_connections: Gauge,
    /// Channels with at least one local subscriber.
    pub channels: Gauge,
    /// Successful joins.
    pub joins: Counter,
    /// Frames received over WebSocket.
    pub ws_messages_in: Counter,
    /// Bytes received over WebSocket.
    pub ws_bytes_in: Counter,
    /// Frames written to WebSockets.
    pub ws_messages_out: Counter,
    /// Bytes written to WebSockets.
    pub ws_bytes_out: Counter,
    /// Messages accepted by the HTTP API.
    pub http_messages_in: Counter,
    /// Payload bytes accepted by the HTTP API.
    pub http_bytes_in: Counter,
    /// Binary broadcasts not delivered to `vsn=1.0.0` subscribers.
    pub dropped_binary_to_v1: Counter,
    /// Connections closed as slow consumers.
    pub slow_consumers: Counter,
    /// Presence diffs sent (one per channel per batching window with changes).
    pub presence_diffs: Counter,
    /// Presence diff frames queued to members.
    pub presence_frames: Counter,
    /// Presence metas tracked on this node.
    pub presences: Gauge,
    /// Open SSE streams.
    pub sse_connections: Gauge,
    /// Events written to SSE streams.
    pub sse_messages_out: Counter,
    /// Bytes written to SSE streams.
    pub sse_bytes_out: Counter,
}

impl Stats {
    /// Registers the handles with the installed metrics recorder (no-ops when none is installed).
    pub fn new() -> Stats {
        Stats {
            ws_connections: gauge!("herald_connections", "transport" => "websocket"),
            channels: gauge!("herald_channels"),
            joins: counter!("herald_joins_total"),
            ws_messages_in: counter!("herald_messages_in_total", "transport" => "websocket"),
            ws_bytes_in: counter!("herald_bytes_in_total", "transport" => "websocket"),
            ws_messages_out: counter!("herald_messages_out_total", "transport" => "websocket"),
            ws_bytes_out: counter!("herald_bytes_out_total", "transport" => "websocket"),
            http_messages_in: counter!("herald_messages_in_total", "transport" => "http"),
            http_bytes_in: counter!("herald_bytes_in_total", "transport" => "http"),
            dropped_binary_to_v1: counter!("herald_dropped_total", "reason" => "binary_to_v1"),
            slow_consumers: counter!("herald_errors_total", "reason" => "slow_consumer"),
            presence_diffs: counter!("herald_presence_diffs_total"),
            presence_frames: counter!("herald_presence_frames_total"),
            presences: gauge!("herald_presences"),
            sse_connections: gauge!("herald_connections", "transport" => "sse"),
            sse_messages_out: counter!("herald_messages_out_total", "transport" => "sse"),
            sse_bytes_out: counter!("herald_bytes_out_total", "transport" => "sse"),
        }
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

/// Counts one error by reason (cold path).
pub fn error(reason: &'static str) {
    counter!("herald_errors_total", "reason" => reason).increment(1);
}
