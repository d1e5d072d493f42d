//! Security tests against each real process over loopback gRPC.

mod fuzz;
mod matrix;
mod rate_limits;
mod raw;
mod services;
