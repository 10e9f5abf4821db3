//! JSON request bodies are read whole (up to `max_json_bytes` each), so the bytes being
//! read and parsed at once are bounded server-wide: past `max_json_bytes_in_flight` a
//! request is answered `429 busy` before its body is read. The room is given back once the
//! body is parsed. Uploads stream and are not counted.

use super::ApiError;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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

impl BodyBudget {
    /// Takes room for a body of `declared` bytes (or the largest allowed when undeclared),
    /// or says the server is busy; the room is given back when the permit is dropped.
    pub fn try_take(&self, declared: Option<usize>) -> Result<OwnedSemaphorePermit, ApiError> {
        self.units
            .clone()
            .try_acquire_many_owned(self.units_for(declared))
            .map_err(|_| {
                ApiError::busy(
                    "the server is reading too many request bodies at once; retry shortly",
                )
            })
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
