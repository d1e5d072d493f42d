//! Identifiers at the gRPC edge. Every id in QapMap is a UUID: companies are
//! named by their callers, everything else gets a time-ordered v7 from the
//! service that creates it.

use uuid::Uuid;

use crate::error::ApiError;

/// A required UUID field.
pub fn parse(field: &str, text: &str) -> Result<Uuid, ApiError> {
    if text.is_empty() {
        return Err(ApiError::invalid(field, "is required"));
    }
    Uuid::try_parse(text).map_err(|_| ApiError::invalid(field, "must be a UUID"))
}

/// An optional UUID field: empty is `None`.
pub fn optional(field: &str, text: &str) -> Result<Option<Uuid>, ApiError> {
    if text.is_empty() {
        Ok(None)
    } else {
        parse(field, text).map(Some)
    }
}

/// A new time-ordered id.
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}
