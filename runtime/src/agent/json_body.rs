//! JSON answers serialized as they are sent: a large value (an exec result near its cap,
//! escaped up to six bytes a byte) never exists twice in memory.

use super::chunks::ChunkWriter;
use axum::body::Body;
use serde::Serialize;
use std::io::{self, Write};
use tokio::sync::mpsc;

/// Answers up to this size (before escaping) are serialized at once, in one write.
const SMALL: usize = 256 * 1024;

/// A body with `value` as JSON: at once when `size_hint` is small, otherwise serialized
/// on a blocking thread, chunk by chunk.
pub fn json<T: Serialize + Send + 'static>(value: T, size_hint: usize) -> Body {
    if size_hint <= SMALL {
        if let Ok(bytes) = serde_json::to_vec(&value) {
            return Body::from(bytes);
        }
    }
    streamed(value)
}

/// A body that serializes `value` on a blocking thread, chunk by chunk.
fn streamed<T: Serialize + Send + 'static>(value: T) -> Body {
    let (tx, mut rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut writer = ChunkWriter::new(tx.clone());
        let result = serde_json::to_writer(&mut writer, &value)
            .map_err(io::Error::other)
            .and_then(|_| writer.flush());
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    });
    Body::from_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}
