//! Security tests against each real process over loopback gRPC.

mod cross_tenant;
mod fuzz;
mod matrix;
mod rate_limits;
mod raw;
mod services;
