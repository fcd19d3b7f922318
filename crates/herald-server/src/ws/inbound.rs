//! What a client's pushes carry: the parts of a broadcast (event, body, idempotency key) in either
//! protocol encoding, and the Postgres Changes recovery positions of a join.

use std::collections::HashMap;

use bytes::Bytes;
use herald_core::{Body, Origin};
use herald_protocol::{BinaryPush, InboundPayload, PayloadEncoding};
use serde_json::Value;
use serde_json::value::RawValue;

/// `config.postgres_changes_options.recover` of a join: `{"schema.table": {"epoch", "offset"}}`.
pub(super) fn pg_recover(payload: &Value) -> Option<HashMap<String, (String, u64)>> {
    let wanted = payload
        .get("config")?
        .get("postgres_changes_options")?
        .get("recover")?
        .as_object()?;
    Some(
        wanted
            .iter()
            .filter_map(|(log, pos)| {
                let epoch = pos.get("epoch")?.as_str()?.to_owned();
                let offset = pos.get("offset")?.as_u64()?;
                Some((log.clone(), (epoch, offset)))
            })
            .collect(),
    )
}

/// Splits a broadcast push into (event, body, origin, idempotency key), or gives the reason it is malformed.
pub(super) fn broadcast_parts(
    payload: InboundPayload,
) -> Result<(String, Body, Origin, Option<String>), &'static str> {
    #[derive(serde::Deserialize)]
    struct PushMeta {
        idempotency_key: Option<String>,
    }
    match payload {
        InboundPayload::Binary(BinaryPush {
            event,
            encoding,
            payload,
            metadata,
            ..
        }) => {
            let body = match encoding {
                PayloadEncoding::Raw => Body::Raw(payload),
                PayloadEncoding::Json => Body::Json(json_body(payload)?),
            };
            let key = if metadata.is_empty() {
                None
            } else {
                serde_json::from_slice::<PushMeta>(&metadata)
                    .map_err(|_| "metadata must be a JSON object")?
                    .idempotency_key
            };
            Ok((event, body, Origin::Binary, key))
        }
        InboundPayload::Json(raw) => {
            #[derive(serde::Deserialize)]
            struct Push<'a> {
                event: Option<String>,
                #[serde(borrow)]
                payload: Option<&'a RawValue>,
                meta: Option<PushMeta>,
            }
            let push: Push<'_> = serde_json::from_str(raw.get())
                .map_err(|_| "broadcast payload must be an object")?;
            let event = push.event.ok_or("broadcast needs an `event` string")?;
            let body = match push.payload {
                Some(p) => p.to_owned(),
                None => herald_protocol::decode::empty_object(),
            };
            Ok((
                event,
                Body::Json(body),
                Origin::Text,
                push.meta.and_then(|m| m.idempotency_key),
            ))
        }
    }
}

fn json_body(bytes: Bytes) -> Result<Box<RawValue>, &'static str> {
    let text = String::from_utf8(bytes.to_vec()).map_err(|_| "payload is not valid UTF-8")?;
    RawValue::from_string(text).map_err(|_| "payload is not valid JSON")
}
