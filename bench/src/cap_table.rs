//! Cap table reads of one company with many holders: cached (today's date;
//! the ledger keeps today's table in memory, and in Redis) and uncached (a
//! past `as_of`, computed on every call from today's table less the changes
//! dated after it; those are read from Postgres once and kept beside
//! today's table, so the cold reads ask for a new earlier date each time).

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Datelike;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use qapmap_proto::common::v1::Date;
use qapmap_proto::ledger::v1 as ledger;
use qapmap_proto::ledger::v1::ledger_service_client::LedgerServiceClient;
use qapmap_runtime::auth::client::AuthenticatedChannel;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

use crate::config::Config;
use crate::stats::{Latencies, Summary};
use crate::system::{System, date, dec, request_id, share_class, usd};

/// Rows per GetCapTable page (the first page of the whole table is returned).
pub(crate) const PAGE_SIZE: i32 = 100;
/// Shares issued to each holder.
const SHARES_EACH: u64 = 100;

#[derive(Debug)]
pub(crate) struct Holders {
    pub(crate) company_id: String,
    pub(crate) elapsed: Duration,
}

/// A company whose class has `holders` holders of 100 shares each, issued
/// with IssueShares 16 at a time on 2024-01-02; then, after the past date
/// the uncached reads ask for, 1% of them sell 10 shares each to the next
/// one (2025-09-01) and as many new holders get 100 shares (2026-01-02), so
/// a past table differs from today's.
pub(crate) async fn company_with_holders(
    system: &System,
    holders: usize,
) -> anyhow::Result<Holders> {
    let company_id = uuid::Uuid::new_v4().to_string();
    let class_id = share_class(system, 0, &company_id, "1000000000").await?;
    let stakeholders: Vec<String> = (0..holders)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let began = Instant::now();
    issue_each(
        system,
        &company_id,
        &class_id,
        &stakeholders,
        date(2024, 1, 2),
    )
    .await?;
    let elapsed = began.elapsed();
    let movers = (holders / 100).max(1);
    // A holder never sells to himself (with one holder, nobody sells).
    for (index, seller) in stakeholders
        .iter()
        .take(movers.min(holders - 1))
        .enumerate()
    {
        let buyer = &stakeholders[(index + 1) % holders];
        system
            .ledger(index)
            .transfer_shares(ledger::TransferSharesRequest {
                request_id: request_id(),
                company_id: company_id.clone(),
                share_class_id: class_id.clone(),
                from_stakeholder_id: seller.clone(),
                to_stakeholder_id: buyer.clone(),
                quantity: dec("10"),
                effective_date: date(2025, 9, 1),
            })
            .await
            .context("TransferShares")?;
    }
    let newcomers: Vec<String> = (0..movers)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    issue_each(system, &company_id, &class_id, &newcomers, date(2026, 1, 2)).await?;
    // Today's table has the newcomers; the past one is what was issued
    // before those changes.
    let today = system
        .ledger(0)
        .get_cap_table(read_request(&company_id, None))
        .await?
        .into_inner();
    let outstanding_today = outstanding(&today);
    let expected_today = rust_decimal::Decimal::from((holders + movers) as u64 * SHARES_EACH);
    anyhow::ensure!(
        outstanding_today == Some(expected_today),
        "today's cap table shows {outstanding_today:?} outstanding, expected {expected_today}"
    );
    let table = system
        .ledger(0)
        .get_cap_table(read_request(&company_id, date(2025, 6, 1)))
        .await?
        .into_inner();
    let outstanding_then = outstanding(&table);
    let expected = rust_decimal::Decimal::from(holders as u64 * SHARES_EACH);
    anyhow::ensure!(
        outstanding_then == Some(expected),
        "the 2025-06-01 cap table shows {outstanding_then:?} outstanding, expected {expected}"
    );
    Ok(Holders {
        company_id,
        elapsed,
    })
}

fn outstanding(table: &ledger::GetCapTableResponse) -> Option<rust_decimal::Decimal> {
    table
        .totals
        .as_ref()?
        .outstanding_shares
        .as_ref()?
        .value
        .parse()
        .ok()
}

/// 100 shares to each of `stakeholders`, 16 issuances at a time.
async fn issue_each(
    system: &System,
    company_id: &str,
    class_id: &str,
    stakeholders: &[String],
    effective_date: Option<Date>,
) -> anyhow::Result<()> {
    futures::stream::iter(stakeholders.iter().enumerate())
        .map(|(index, stakeholder_id)| {
            let mut client = system.ledger(index);
            let request = ledger::IssueSharesRequest {
                request_id: request_id(),
                company_id: company_id.to_owned(),
                share_class_id: class_id.to_owned(),
                stakeholder_id: stakeholder_id.clone(),
                quantity: dec(&SHARES_EACH.to_string()),
                price_per_share: usd("0.01"),
                effective_date,
            };
            async move {
                // A patient client: UNAVAILABLE (the ledger's pool queue is
                // full while issuances of one class take its lock in turn)
                // is retried with the same request id, so it applies once.
                let mut attempt = 0;
                loop {
                    match client.issue_shares(request.clone()).await {
                        Err(status)
                            if status.code() == tonic::Code::Unavailable && attempt < 10 =>
                        {
                            attempt += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(200 * attempt))
                                .await;
                        }
                        outcome => break outcome.context("IssueShares"),
                    }
                }
            }
        })
        .buffer_unordered(16)
        .try_for_each(|_| async { Ok(()) })
        .await
}

fn read_request(company_id: &str, as_of: Option<Date>) -> ledger::GetCapTableRequest {
    ledger::GetCapTableRequest {
        company_id: company_id.to_owned(),
        as_of,
        page_size: PAGE_SIZE,
        page_token: String::new(),
    }
}

#[derive(Debug)]
pub(crate) struct Reads {
    pub(crate) requests_per_second: f64,
    pub(crate) latency: Summary,
    pub(crate) errors: u64,
    pub(crate) rows: usize,
    pub(crate) first_error: Option<String>,
}

/// [`read_load`] on a runtime with one thread, on a thread of its own: the
/// load generator takes at most one of the two cores (like `h2load -t 1`).
/// With two generator threads beside the ledger's two, requests waited for
/// a core: at about the same throughput (40k vs 38k req/s) the p99 was
/// 5.7 ms instead of 3.9 ms (2026-11-22).
pub(crate) fn read_load_on_one_thread(
    config: &Config,
    company_id: &str,
    as_of: Option<Date>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Reads> {
    on_one_thread(config, |ledger| async move {
        read_load(&ledger, company_id, as_of, concurrency, duration).await
    })
}

/// `reads` on a runtime with one thread, over channels to the ledger made
/// on it.
fn on_one_thread<Load, Loading>(config: &Config, reads: Load) -> anyhow::Result<Reads>
where
    Load: FnOnce(Vec<AuthenticatedChannel>) -> Loading,
    Loading: std::future::Future<Output = anyhow::Result<Reads>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let ledger = crate::system::ledger_channels(config).await?;
        reads(ledger).await
    })
}

/// One caller reading past tables whose later changes the ledger has not
/// kept: each read asks for the day before the last one asked (from the
/// day before `before`), and changes kept for a date serve only that date
/// and later ones, so every read has the ledger fetch the later changes
/// from Postgres before computing. What the first past read after a change
/// to the company costs. On a thread of its own, like the other reads.
pub(crate) fn cold_reads_on_one_thread(
    config: &Config,
    company_id: &str,
    before: chrono::NaiveDate,
    reads: u64,
) -> anyhow::Result<Reads> {
    on_one_thread(config, |ledger| async move {
        let mut client = tonic::client::Grpc::new(ledger[0].clone());
        let mut latencies = Latencies::default();
        let (mut errors, mut first_error) = (0u64, None);
        let began = Instant::now();
        for days in 1..=reads {
            let as_of = before - chrono::Days::new(days);
            let request = read_request(
                company_id,
                date(as_of.year(), as_of.month() as i32, as_of.day() as i32),
            );
            let sent = Instant::now();
            match read_undecoded(&mut client, request).await {
                Ok(length) if length > 0 => latencies.record(sent.elapsed()),
                Ok(_) => {
                    errors += 1;
                    first_error.get_or_insert("an empty response".to_owned());
                }
                Err(status) => {
                    errors += 1;
                    first_error.get_or_insert(status.to_string());
                }
            }
        }
        let latency = latencies.summary();
        Ok(Reads {
            requests_per_second: latency.count as f64 / began.elapsed().as_secs_f64(),
            latency,
            errors,
            rows: PAGE_SIZE as usize,
            first_error,
        })
    })
}

/// `concurrency` callers over the ledger's channels, each reading the table
/// back to back for `duration`.
async fn read_load(
    ledger: &[AuthenticatedChannel],
    company_id: &str,
    as_of: Option<Date>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Reads> {
    // One read first: fills the cache for today's date.
    let first = LedgerServiceClient::new(ledger[0].clone())
        .get_cap_table(read_request(company_id, as_of))
        .await?
        .into_inner();
    let first_length = first.encoded_len();
    let began = Instant::now();
    let deadline = began + duration;
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let mut client = tonic::client::Grpc::new(ledger[worker % ledger.len()].clone());
        let request = read_request(company_id, as_of);
        workers.push(tokio::spawn(async move {
            let mut latencies = Latencies::default();
            let mut errors = 0u64;
            let mut first_error = None;
            for _ in 0..10_000_000u64 {
                if Instant::now() >= deadline {
                    break;
                }
                let sent = Instant::now();
                match read_undecoded(&mut client, request.clone()).await {
                    // Same page, same size: a short or other answer is an error.
                    Ok(length) if length == first_length => latencies.record(sent.elapsed()),
                    Ok(length) => {
                        errors += 1;
                        first_error.get_or_insert(format!(
                            "a response of {length} bytes, the first was {first_length}"
                        ));
                    }
                    Err(status) => {
                        errors += 1;
                        first_error.get_or_insert(status.to_string());
                    }
                }
            }
            (latencies, errors, first_error)
        }));
    }
    let mut latencies = Latencies::default();
    let mut errors = 0;
    let mut first_error = None;
    for worker in workers {
        let (part, part_errors, part_error) = worker.await?;
        latencies.extend(part);
        errors += part_errors;
        if first_error.is_none() {
            first_error = part_error;
        }
    }
    let elapsed = began.elapsed();
    let latency = latencies.summary();
    Ok(Reads {
        requests_per_second: latency.count as f64 / elapsed.as_secs_f64(),
        latency,
        errors,
        rows: first.rows.len(),
        first_error,
    })
}

/// Reads a GetCapTable response's size without decoding it, as h2load
/// would: the load generator shares the two cores with the ledger, and
/// decoding 100 rows (a thousand strings) per response took half the
/// machine in a profile. The first response of each run is decoded and its
/// length is what every later one must have.
async fn read_undecoded(
    client: &mut tonic::client::Grpc<AuthenticatedChannel>,
    request: ledger::GetCapTableRequest,
) -> Result<usize, tonic::Status> {
    client
        .ready()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let path = PathAndQuery::from_static("/qapmap.ledger.v1.LedgerService/GetCapTable");
    let response = client
        .unary(tonic::Request::new(request), path, UndecodedCodec)
        .await?;
    Ok(response.into_inner())
}

#[derive(Debug, Clone, Copy)]
struct UndecodedCodec;

impl Codec for UndecodedCodec {
    type Encode = ledger::GetCapTableRequest;
    type Decode = usize;
    type Encoder = RequestEncoder;
    type Decoder = LengthDecoder;

    fn encoder(&mut self) -> RequestEncoder {
        RequestEncoder
    }

    fn decoder(&mut self) -> LengthDecoder {
        LengthDecoder
    }
}

#[derive(Debug)]
struct RequestEncoder;

impl Encoder for RequestEncoder {
    type Item = ledger::GetCapTableRequest;
    type Error = tonic::Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        item.encode(dst)
            .map_err(|error| tonic::Status::internal(error.to_string()))
    }
}

#[derive(Debug)]
struct LengthDecoder;

impl Decoder for LengthDecoder {
    type Item = usize;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<usize>, Self::Error> {
        use prost::bytes::Buf;
        let length = src.remaining();
        src.advance(length);
        Ok(Some(length))
    }
}
