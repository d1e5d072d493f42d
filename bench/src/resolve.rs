//! Resolving many sagas at once: one `ListSagas` call per company (newest
//! first, so the sagas just started are on its first page) instead of one
//! `GetSaga` per saga. Every call is a read-only transaction the
//! orchestrator commits, which `pg_stat_database.xact_commit` counts like
//! any other, so a `GetSaga` per saga put about one harness commit into
//! every open-loop saga's figure. Listing makes it about one per company.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use qapmap_proto::saga::v1 as saga;

use crate::sagas::{Outcome, outcome_of, terminal};
use crate::system::{Company, System};

/// How often a company whose sagas are not all over is listed again.
const RELIST_INTERVAL: Duration = Duration::from_millis(100);
/// Companies listed at once.
const COMPANIES_AT_ONCE: usize = 8;

/// A saga started by the phase: its company, its start, its id.
pub(crate) type Started = (Company, SystemTime, String);

/// What resolving found: outcomes (terminal, or as last seen at the
/// deadline), sagas never listed, the calls made, the first error.
#[derive(Debug, Default)]
pub(crate) struct Resolved {
    pub(crate) outcomes: Vec<Outcome>,
    pub(crate) missing: u64,
    pub(crate) calls: u64,
    pub(crate) first_error: Option<String>,
}

/// Lists each company's sagas until every saga in `started` is over, or
/// until `deadline`.
pub(crate) async fn by_listing(
    system: &System,
    started: Vec<Started>,
    deadline: Instant,
) -> Resolved {
    let mut by_company: BTreeMap<String, HashMap<String, SystemTime>> = BTreeMap::new();
    for (company, start_wall, saga_id) in started {
        by_company
            .entry(company.company_id)
            .or_default()
            .insert(saga_id, start_wall);
    }
    let parts: Vec<Resolved> = futures::stream::iter(by_company.into_iter().enumerate())
        .map(|(index, (company_id, pending))| {
            resolve_company(system, index, company_id, pending, deadline)
        })
        .buffer_unordered(COMPANIES_AT_ONCE)
        .collect()
        .await;
    let mut resolved = Resolved::default();
    for part in parts {
        resolved.outcomes.extend(part.outcomes);
        resolved.missing += part.missing;
        resolved.calls += part.calls;
        if resolved.first_error.is_none() {
            resolved.first_error = part.first_error;
        }
    }
    resolved
}

async fn resolve_company(
    system: &System,
    index: usize,
    company_id: String,
    mut pending: HashMap<String, SystemTime>,
    deadline: Instant,
) -> Resolved {
    let mut client = system.sagas(index);
    let mut resolved = Resolved::default();
    'listing: while !pending.is_empty() {
        let last_chance = Instant::now() >= deadline;
        let mut page_token = String::new();
        // Newest first: the pages needed are the first few.
        loop {
            resolved.calls += 1;
            let page_size = i32::try_from((pending.len() * 2).clamp(10, 500)).unwrap_or(500);
            let response = client
                .list_sagas(saga::ListSagasRequest {
                    company_id: company_id.clone(),
                    page_size,
                    page_token: page_token.clone(),
                    ..Default::default()
                })
                .await;
            let page = match response {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    resolved.first_error = Some(format!("ListSagas: {status}"));
                    break 'listing;
                }
            };
            for saga in &page.sagas {
                let over = terminal(saga.state).is_some();
                if (over || last_chance)
                    && let Some(start_wall) = pending.remove(&saga.id)
                {
                    resolved.outcomes.push(outcome_of(saga, start_wall, None));
                }
            }
            if pending.is_empty() || page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        if last_chance {
            break;
        }
        tokio::time::sleep(RELIST_INTERVAL).await;
    }
    resolved.missing = pending.len() as u64;
    resolved
}
