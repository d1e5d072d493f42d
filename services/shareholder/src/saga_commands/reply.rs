//! The `SagaReply` a payment command is answered with, and the outbox
//! message that carries it to `<ns>.reply.<saga_type>`.

use std::collections::BTreeMap;

use qapmap_proto::messaging::v1::saga_reply::Result as ReplyResult;
use qapmap_proto::messaging::v1::{ReplyOutcome, SagaCommand, SagaReply};
use qapmap_proto::shareholder::v1::PaymentResult;
use qapmap_runtime::messaging::Subjects;
use qapmap_runtime::outbox::OutboxMessage;
use uuid::Uuid;

use crate::saga_operations::PaymentReceipt;

/// Trace headers copied from the command, so the reply joins its trace even
/// though it is published later by the relay.
const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// The step succeeded: money moved.
pub fn succeeded(command: &SagaCommand, receipt: &PaymentReceipt) -> SagaReply {
    SagaReply {
        outcome: ReplyOutcome::Succeeded.into(),
        result: Some(ReplyResult::Payment(PaymentResult {
            payment_id: receipt.payment_id.to_string(),
            gateway_reference: receipt.gateway_reference.clone(),
        })),
        ..echo(command)
    }
}

/// The step was refused for good; `reason` is for humans and carries no
/// personal data.
pub fn rejected(command: &SagaCommand, reason_code: &str, reason: String) -> SagaReply {
    SagaReply {
        outcome: ReplyOutcome::Rejected.into(),
        reason_code: reason_code.to_owned(),
        reason,
        ..echo(command)
    }
}

/// What the orchestrator matches a reply on, copied as it arrived.
fn echo(command: &SagaCommand) -> SagaReply {
    SagaReply {
        saga_id: command.saga_id.clone(),
        step: command.step,
        compensation: command.compensation,
        company_id: command.company_id.clone(),
        ..SagaReply::default()
    }
}

/// The reply as an outbox message, keyed by saga (the relay keeps one saga's
/// messages in order), with the command's trace headers.
pub fn message(
    subjects: &Subjects,
    command: &SagaCommand,
    company_id: Uuid,
    reply: &SagaReply,
    command_headers: &BTreeMap<String, String>,
) -> OutboxMessage {
    let mut message = OutboxMessage::protobuf(
        subjects.reply(&command.saga_type),
        command.saga_id.clone(),
        Some(company_id),
        reply,
    );
    for name in TRACE_HEADERS {
        if let Some(value) = command_headers.get(name).filter(|value| !value.is_empty()) {
            message = message.with_header(name, value.as_str());
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_echoes_the_step_and_copies_the_trace_header() {
        let command = SagaCommand {
            saga_id: Uuid::now_v7().to_string(),
            saga_type: "share_buyback".to_owned(),
            step: 2,
            company_id: Uuid::now_v7().to_string(),
            ..SagaCommand::default()
        };
        let reply = rejected(&command, "payment_declined", "declined".to_owned());
        assert_eq!(reply.saga_id, command.saga_id);
        assert_eq!(reply.step, 2);
        assert_eq!(reply.outcome, i32::from(ReplyOutcome::Rejected));
        let headers = BTreeMap::from([(
            "traceparent".to_owned(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
        )]);
        let message = message(
            &Subjects::new("ns"),
            &command,
            Uuid::now_v7(),
            &reply,
            &headers,
        );
        assert_eq!(message.subject, "ns.reply.share_buyback");
        assert_eq!(message.partition_key, command.saga_id);
        assert_eq!(
            message.headers.get("traceparent"),
            headers.get("traceparent")
        );
        assert!(!message.headers.contains_key("tracestate"));
    }
}
