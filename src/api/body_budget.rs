//! JSON request bodies are read whole (up to `max_json_bytes` each), so the bytes they may
//! hold at once are bounded server-wide: past `max_json_bytes_in_flight` a request is
//! answered `429 busy` before its body is read. Uploads (PUT) stream and are not counted.

use super::{ApiError, AppState};
use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Bodies are counted in units of this many bytes.
const UNIT: usize = 64 * 1024;

pub struct BodyBudget {
    units: Arc<Semaphore>,
    max_body: usize,
}

impl BodyBudget {
    pub fn new(max_in_flight: usize, max_body: usize) -> Self {
        BodyBudget {
            units: Arc::new(Semaphore::new(max_in_flight.div_ceil(UNIT).max(1))),
            max_body,
        }
    }

    /// Units a body of `declared` bytes (or, undeclared, the largest allowed) may use.
    fn units_for(&self, declared: Option<usize>) -> u32 {
        let bytes = declared.unwrap_or(self.max_body).min(self.max_body).max(1);
        u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX)
    }
}

pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !matches!(*request.method(), Method::POST | Method::PATCH) {
        return next.run(request).await;
    }
    let headers = request.headers();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    // HTTP/1.1: without a length or a transfer coding there is no body at all.
    let has_body = declared.is_some_and(|n| n > 0)
        || (declared.is_none() && headers.contains_key(header::TRANSFER_ENCODING));
    if !has_body {
        return next.run(request).await;
    }
    let budget = &state.bodies;
    let units = budget.units_for(declared);
    match budget.units.clone().try_acquire_many_owned(units) {
        // Held until the handler has answered (the parsed body lives as long).
        Ok(_held) => next.run(request).await,
        Err(_) => {
            ApiError::busy("the server is reading too many request bodies at once; retry shortly")
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undeclared_bodies_count_as_the_largest_allowed() {
        let budget = BodyBudget::new(1 << 20, 256 * 1024);
        assert_eq!(budget.units_for(Some(10)), 1);
        assert_eq!(budget.units_for(Some(200 * 1024)), 4);
        assert_eq!(budget.units_for(None), 4);
        assert_eq!(
            budget.units_for(Some(1 << 30)),
            4,
            "past the limit the body is refused anyway"
        );
        let held = budget.units.clone().try_acquire_many_owned(16).unwrap();
        assert!(budget.units.clone().try_acquire_many_owned(1).is_err());
        drop(held);
        assert!(budget.units.clone().try_acquire_many_owned(16).is_ok());
    }
}
