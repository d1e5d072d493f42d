//! The orchestrator's consumer of service replies (`<ns>.reply.>`): each
//! reply moves its saga one transition, in the consumer's transaction, so the
//! inbox record, the new saga state and the next command commit together.

use prost::Message;
use qapmap_proto::messaging::v1::SagaReply;
use qapmap_runtime::consumer::{
    BatchMessage, Handled, HandlerError, MessageHandler, ReceivedMessage,
};
use sqlx::PgConnection;
use tracing::Instrument;

use crate::engine::{Engine, EngineError};

/// The durable consumer's name.
pub const CONSUMER_NAME: &str = "orchestrator-replies";

#[derive(Debug, Clone)]
pub struct ReplyHandler {
    pub engine: Engine,
}

impl MessageHandler for ReplyHandler {
    async fn handle(
        &self,
        message: &ReceivedMessage,
        transaction: &mut PgConnection,
    ) -> Result<Handled, HandlerError> {
        let reply = SagaReply::decode(message.payload.as_ref())
            .map_err(|error| HandlerError::Poison(anyhow::anyhow!("not a SagaReply: {error}")))?;
        let span = reply_span(&reply);
        // Instrumented, never `span.enter()` across the await: a guard held
        // while the task moves threads leaves the span on the old thread's
        // stack, and a later `Span::current()` there clones a closed span
        // (tracing-subscriber panics; this killed the orchestrator under load).
        match self
            .engine
            .handle_reply(transaction, &reply)
            .instrument(span)
            .await
        {
            Ok(()) => Ok(Handled::Done),
            Err(EngineError::Database(error)) => Err(HandlerError::Retry(error.into())),
            Err(error) => Err(HandlerError::Retry(error.into())),
        }
    }

    fn handles_batches(&self) -> bool {
        true
    }

    async fn handle_batch(
        &self,
        messages: &[BatchMessage<'_>],
        transaction: &mut PgConnection,
    ) -> Result<(), HandlerError> {
        let mut replies = Vec::with_capacity(messages.len());
        for BatchMessage { message, span } in messages {
            // One that does not decode fails the batch; one by one, it
            // becomes a dead letter.
            let reply = SagaReply::decode(message.payload.as_ref()).map_err(|error| {
                HandlerError::Poison(anyhow::anyhow!("not a SagaReply: {error}"))
            })?;
            let span = span.in_scope(|| reply_span(&reply));
            replies.push((reply, span));
        }
        self.engine
            .handle_replies(transaction, &replies)
            .await
            .map_err(|error| HandlerError::Retry(error.into()))
    }
}

fn reply_span(reply: &SagaReply) -> tracing::Span {
    tracing::info_span!(
        "saga.reply",
        saga.id = %reply.saga_id,
        saga.step = reply.step,
        saga.compensation = reply.compensation,
        company.id = %reply.company_id,
    )
}
