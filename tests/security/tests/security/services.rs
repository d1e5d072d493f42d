//! The four processes, each started in this test process on its own
//! database and NATS namespace.

use qapmap_runtime::ServiceName;
use qapmap_testkit::in_process::RunningService;

/// A running process and the gRPC services it serves.
pub(crate) struct Process {
    pub(crate) service: RunningService,
    pub(crate) serves: &'static [&'static str],
}

const OPS: [&str; 2] = [
    "qapmap.ops.v1.DeadLetterService",
    "qapmap.ops.v1.AuditService",
];

pub(crate) async fn start(name: ServiceName) -> Process {
    match name {
        ServiceName::Equity => Process {
            service: RunningService::start(name, qapmap_equity::build).await,
            serves: &["qapmap.equity.v1.EquityService", OPS[0], OPS[1]],
        },
        ServiceName::Shareholder => Process {
            service: RunningService::start(name, qapmap_shareholder::build).await,
            serves: &["qapmap.shareholder.v1.ShareholderService", OPS[0], OPS[1]],
        },
        ServiceName::Ledger => Process {
            service: RunningService::start(name, qapmap_ledger::build).await,
            serves: &["qapmap.ledger.v1.LedgerService", OPS[0], OPS[1]],
        },
        ServiceName::Orchestrator => Process {
            service: RunningService::start(name, qapmap_orchestrator::build).await,
            serves: &["qapmap.saga.v1.SagaService", OPS[0], OPS[1]],
        },
    }
}

/// Rows in every table of the process's database, to show nothing was written.
pub(crate) async fn row_counts(service: &RunningService) -> Vec<(String, i64)> {
    let pool = service.database_pool().await;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
    )
    .fetch_all(&pool)
    .await
    .expect("list tables");
    let mut counts = Vec::new();
    for table in tables {
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{table}\""
        )))
        .fetch_one(&pool)
        .await
        .expect("count rows");
        counts.push((table, count));
    }
    pool.close().await;
    counts
}
