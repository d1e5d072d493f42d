//! Security tests; see `tests/security`.
