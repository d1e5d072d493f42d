//! Fuzzed requests against the real processes: arbitrary bytes, and
//! well-formed messages with arbitrary field values, sent to every method
//! with a valid token. Each answer must be a clean gRPC status (never a
//! dropped connection), never INTERNAL except gRPC's own "failed to decode"
//! for bytes that are not protobuf, and the process must keep serving.
//! Bounded: `PROPTEST_CASES` (default 64 per property) keeps CI short.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use qapmap_runtime::ServiceName;
use qapmap_testkit::auth;
use tonic::Code;

use crate::raw;
use crate::services;

fn acceptable(path: &str, outcome: &Result<Vec<u8>, tonic::Status>) -> Result<(), String> {
    let Err(status) = outcome else { return Ok(()) };
    match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::FailedPrecondition
        | Code::AlreadyExists
        | Code::Aborted
        | Code::OutOfRange
        | Code::ResourceExhausted => Ok(()),
        Code::Internal
            if status
                .message()
                .starts_with("failed to decode Protobuf message") =>
        {
            Ok(())
        }
        code => Err(format!("{path}: {code:?} {}", status.message())),
    }
}

/// Arbitrary protobuf fields: numbers 1-12 with any wire type's payload.
fn fields() -> impl Strategy<Value = Vec<u8>> {
    let field = (
        1u32..13,
        prop_oneof![
            any::<u64>().prop_map(|value| (0u8, value.to_le_bytes().to_vec())),
            "\\PC{0,80}".prop_map(|text| (2u8, text.into_bytes())),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|bytes| (2u8, bytes)),
        ],
    );
    proptest::collection::vec(field, 0..8).prop_map(|fields| {
        let mut body = Vec::new();
        for (number, (wire_type, payload)) in fields {
            prost::encoding::encode_key(
                number,
                if wire_type == 0 {
                    prost::encoding::WireType::Varint
                } else {
                    prost::encoding::WireType::LengthDelimited
                },
                &mut body,
            );
            if wire_type == 0 {
                let value = u64::from_le_bytes(payload.try_into().expect("8 bytes"));
                prost::encoding::encode_varint(value, &mut body);
            } else {
                prost::encoding::encode_varint(payload.len() as u64, &mut body);
                body.extend_from_slice(&payload);
            }
        }
        body
    })
}

async fn fuzz(name: ServiceName) {
    let process = services::start(name).await;
    let methods = raw::methods_of(process.serves);
    let token = auth::platform_token();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(64);
    let strategy = (
        0..methods.len(),
        prop_oneof![proptest::collection::vec(any::<u8>(), 0..200), fields(),],
    );
    // Generate the inputs first (the runner is synchronous), then send them.
    let mut runner = TestRunner::new(Config::with_cases(cases));
    let mut inputs = Vec::new();
    for _ in 0..cases {
        let tree = strategy.new_tree(&mut runner).expect("strategy");
        inputs.push(tree.current());
    }
    for (index, body) in inputs {
        let method = &methods[index];
        let outcome = raw::call(
            process.service.raw_channel(),
            Some(&token),
            &method.path,
            body.clone(),
        )
        .await;
        if let Err(problem) = acceptable(&method.path, &outcome) {
            panic!("{problem}\nrequest bytes: {body:?}");
        }
    }
    // Still serving after all of it.
    let last = &methods[0];
    let outcome = raw::call(
        process.service.raw_channel(),
        Some(&token),
        &last.path,
        Vec::new(),
    )
    .await;
    acceptable(&last.path, &outcome).expect("still answering");
}

#[tokio::test]
async fn fuzzed_equity_requests_get_clean_answers() {
    fuzz(ServiceName::Equity).await;
}

#[tokio::test]
async fn fuzzed_shareholder_requests_get_clean_answers() {
    fuzz(ServiceName::Shareholder).await;
}

#[tokio::test]
async fn fuzzed_ledger_requests_get_clean_answers() {
    fuzz(ServiceName::Ledger).await;
}

#[tokio::test]
async fn fuzzed_orchestrator_requests_get_clean_answers() {
    fuzz(ServiceName::Orchestrator).await;
}
