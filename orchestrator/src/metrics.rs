//! Saga metrics for the Prometheus endpoint: outcomes and step latency
//! counted by this process, sagas in flight and parked read from Postgres
//! (so every orchestrator replica reports the same gauges).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use qapmap_runtime::metrics_export::{Histogram, MetricSource};
use sqlx::PgPool;

use crate::machine::{Saga, SagaState, StepStatus};

/// (saga type, state, how many, the oldest's start) of unfinished sagas.
type UnfinishedRow = (String, String, i64, Option<DateTime<Utc>>);

#[derive(Debug)]
pub struct SagaMetrics {
    pool: PgPool,
    /// (saga type, outcome) -> sagas that finished so in this process.
    outcomes: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// saga type -> sagas started by this process.
    started: Mutex<BTreeMap<&'static str, u64>>,
    /// (saga type, step) -> time from a step's start to its success.
    step_latency: Mutex<BTreeMap<(&'static str, &'static str), Histogram>>,
}

impl SagaMetrics {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            outcomes: Mutex::default(),
            started: Mutex::default(),
            step_latency: Mutex::default(),
        }
    }

    pub fn record_started(&self, saga: &Saga) {
        if let Ok(mut started) = self.started.lock() {
            *started.entry(saga.definition.saga_type).or_default() += 1;
        }
    }

    /// Counts what changed between `before` and `after` one transition.
    pub fn record_transition(&self, before: &Saga, after: &Saga, now: DateTime<Utc>) {
        let saga_type = after.definition.saga_type;
        if before.state != after.state {
            match after.state {
                SagaState::Completed => self.count(saga_type, "completed"),
                SagaState::Compensated => self.count(saga_type, "compensated"),
                SagaState::Parked => self.count(saga_type, "parked"),
                SagaState::Running | SagaState::Compensating => {}
            }
        }
        for (index, (old, new)) in before.steps.iter().zip(&after.steps).enumerate() {
            let newly_succeeded =
                old.status != StepStatus::Succeeded && new.status == StepStatus::Succeeded;
            let (Some(started), Some(view)) = (new.started_at, after.definition.step(index)) else {
                continue;
            };
            if newly_succeeded && let Ok(mut latency) = self.step_latency.lock() {
                let elapsed = (now - started).to_std().unwrap_or(Duration::ZERO);
                latency
                    .entry((saga_type, view.info.name))
                    .or_default()
                    .observe(elapsed);
            }
        }
    }

    fn count(&self, saga_type: &'static str, outcome: &'static str) {
        if let Ok(mut outcomes) = self.outcomes.lock() {
            *outcomes.entry((saga_type, outcome)).or_default() += 1;
        }
    }

    async fn render_gauges(&self, out: &mut String) {
        let rows: Result<Vec<UnfinishedRow>, _> = sqlx::query_as(
            "SELECT saga_type, state, count(*), min(created_at) FROM sagas
             WHERE state IN ('running', 'compensating', 'parked') GROUP BY saga_type, state",
        )
        .fetch_all(&self.pool)
        .await;
        let Ok(rows) = rows else { return };
        let now = Utc::now();
        out.push_str("# TYPE qapmap_sagas_in_flight gauge\n# TYPE qapmap_sagas_in_flight_oldest_age_seconds gauge\n# TYPE qapmap_sagas_parked gauge\n");
        for (saga_type, state, count, oldest) in rows {
            if state == "parked" {
                let _ = writeln!(out, "qapmap_sagas_parked{{type=\"{saga_type}\"}} {count}");
                continue;
            }
            let age = oldest.map_or(0.0, |oldest| {
                (now - oldest).to_std().unwrap_or_default().as_secs_f64()
            });
            let _ = writeln!(
                out,
                "qapmap_sagas_in_flight{{type=\"{saga_type}\",state=\"{state}\"}} {count}"
            );
            let _ = writeln!(
                out,
                "qapmap_sagas_in_flight_oldest_age_seconds{{type=\"{saga_type}\",state=\"{state}\"}} {age}"
            );
        }
    }
}

impl MetricSource for SagaMetrics {
    fn render<'a>(&'a self, out: &'a mut String) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            out.push_str("# TYPE qapmap_sagas_started_total counter\n");
            if let Ok(started) = self.started.lock() {
                for (saga_type, count) in started.iter() {
                    let _ = writeln!(
                        out,
                        "qapmap_sagas_started_total{{type=\"{saga_type}\"}} {count}"
                    );
                }
            }
            out.push_str("# TYPE qapmap_sagas_total counter\n");
            if let Ok(outcomes) = self.outcomes.lock() {
                for ((saga_type, outcome), count) in outcomes.iter() {
                    let _ = writeln!(
                        out,
                        "qapmap_sagas_total{{type=\"{saga_type}\",outcome=\"{outcome}\"}} {count}"
                    );
                }
            }
            out.push_str("# TYPE qapmap_step_latency_seconds histogram\n");
            if let Ok(latency) = self.step_latency.lock() {
                for ((saga_type, step), histogram) in latency.iter() {
                    let labels = format!("type=\"{saga_type}\",step=\"{step}\"");
                    histogram.render(out, "qapmap_step_latency_seconds", &labels);
                }
            }
            self.render_gauges(out).await;
        })
    }
}
