//! The service side of the saga protocol: the `SagaReply` a saga command is
//! answered with, and the outbox message that carries it to
//! `<ns>.reply.<saga_type>`. Every service answers through these, so the
//! orchestrator sees one shape whoever replies.

use std::collections::BTreeMap;

use crate::messaging::Subjects;
use crate::outbox::OutboxMessage;
use qapmap_proto::messaging::v1::saga_reply::Result as ReplyResult;
use qapmap_proto::messaging::v1::{ReplyOutcome, SagaCommand, SagaReply};
use uuid::Uuid;

/// Trace headers copied from the command, so the reply joins its trace even
/// though the relay publishes it later.
const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// The company a saga command acts for, for a command handler's
/// `MessageHandler::confinement`; None when the payload is not a command
/// with a company id (the handler then refuses it itself).
pub fn command_company(payload: &[u8]) -> Option<Uuid> {
    use prost::Message;
    let command = SagaCommand::decode(payload).ok()?;
    Uuid::try_parse(&command.company_id).ok()
}

/// The step succeeded; `result` is what the orchestrator absorbs (None when
/// the step tells it nothing new: releases, confirmations).
pub fn succeeded(command: &SagaCommand, result: Option<ReplyResult>) -> SagaReply {
    SagaReply {
        outcome: ReplyOutcome::Succeeded.into(),
        result,
        ..echo(command)
    }
}

/// The step was refused for good: `reason_code` is stable snake_case,
/// `reason` is for humans and carries no personal data (ids and quantities
/// only).
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
        let value = command_headers
            .iter()
            .find(|(header, value)| header.eq_ignore_ascii_case(name) && !value.is_empty());
        if let Some((_, value)) = value {
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
            saga_type: "option_exercise".to_owned(),
            step: 0,
            compensation: true,
            company_id: Uuid::now_v7().to_string(),
            ..SagaCommand::default()
        };
        let reply = rejected(&command, "not_found", "reservation not found".to_owned());
        assert_eq!(reply.saga_id, command.saga_id);
        assert!(reply.compensation);
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
        assert_eq!(message.subject, "ns.reply.option_exercise");
        assert_eq!(message.partition_key, command.saga_id);
        assert_eq!(
            message.headers.get("traceparent"),
            headers.get("traceparent")
        );
        assert!(!message.headers.contains_key("tracestate"));
    }
}
