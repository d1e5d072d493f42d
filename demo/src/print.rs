//! Printing what the demo saw, in tables a person can read.

use qapmap_proto::common::v1::Decimal;
use qapmap_proto::ledger::v1::GetCapTableResponse;
use qapmap_proto::saga::v1 as saga;

pub(crate) fn value(decimal: &Option<Decimal>) -> String {
    decimal
        .as_ref()
        .map(|d| d.value.clone())
        .unwrap_or_else(|| "-".to_owned())
}

/// A gRPC status code as the gRPC spec spells it, e.g. `PERMISSION_DENIED`.
pub(crate) fn code(code: tonic::Code) -> String {
    let mut name = String::new();
    for (index, character) in format!("{code:?}").chars().enumerate() {
        if character.is_ascii_uppercase() && index > 0 {
            name.push('_');
        }
        name.push(character.to_ascii_uppercase());
    }
    name
}

/// The cap table, naming stakeholders by the labels the demo gave them.
pub(crate) fn cap_table(title: &str, table: &GetCapTableResponse, label: impl Fn(&str) -> String) {
    println!("\n{title} (ledger sequence {})", table.ledger_sequence);
    println!(
        "{:<22} {:>12} {:>12} {:>14} {:>9} {:>9}",
        "holder", "shares", "options", "fully diluted", "basic %", "FD %"
    );
    for row in &table.rows {
        let holder = if row.stakeholder_id.is_empty() {
            "(pool available)".to_owned()
        } else {
            label(&row.stakeholder_id)
        };
        println!(
            "{:<22} {:>12} {:>12} {:>14} {:>9} {:>9}",
            holder,
            value(&row.shares),
            value(&row.options_outstanding),
            value(&row.fully_diluted),
            value(&row.ownership_basic_percent_display),
            value(&row.ownership_fully_diluted_percent_display),
        );
    }
    if let Some(totals) = &table.totals {
        println!(
            "{:<22} {:>12} {:>12} {:>14}   pool available {}",
            "total",
            value(&totals.outstanding_shares),
            value(&totals.options_outstanding),
            value(&totals.fully_diluted),
            value(&totals.pool_available),
        );
    }
}

/// A saga's state and step history.
pub(crate) fn saga_history(title: &str, saga: &saga::Saga) {
    let state = saga::SagaState::try_from(saga.state).map_or("?".to_owned(), |s| format!("{s:?}"));
    println!(
        "\n{title}: saga {} {state} (trace {})",
        saga.id, saga.trace_id
    );
    for step in &saga.steps {
        let kind = saga::StepKind::try_from(step.kind).map_or("?".to_owned(), |k| format!("{k:?}"));
        let status =
            saga::StepStatus::try_from(step.status).map_or("?".to_owned(), |s| format!("{s:?}"));
        println!(
            "  {}. {:<22} {:<12} {:<14} {:<11} attempts={} {}",
            step.index, step.name, step.service, kind, status, step.attempts, step.last_error
        );
    }
}
