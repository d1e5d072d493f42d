//! The ledger's JetStream side, as the orchestrator and the equity service
//! see it: the testkit's shared saga bus.

pub(crate) use qapmap_testkit::saga_bus::SagaBus as Bus;
