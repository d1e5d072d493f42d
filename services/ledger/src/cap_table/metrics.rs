//! How the tables of dates other than today were computed, for the
//! `/metrics` scrape: from today's table less later changes (past dates),
//! plus them (future dates), or from Postgres (no change listener, or the
//! ledger moved while the changes were read). A rising Postgres share
//! means those reads cost a whole-table query each. Also how often the
//! later changes were read from Postgres: for every future date, and for a
//! past date when they were not found kept beside today's table (about once
//! per change to the company while past dates are read).

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use qapmap_runtime::metrics_export::MetricSource;

#[derive(Debug, Default)]
pub struct OtherDateMetrics {
    from_today_less_later: AtomicU64,
    from_today_plus_later: AtomicU64,
    from_postgres: AtomicU64,
    later_changes_read: AtomicU64,
}

impl OtherDateMetrics {
    /// From today's table: less later changes for a `past` date, else plus
    /// them.
    pub fn record_from_today(&self, past: bool) {
        let counter = if past {
            &self.from_today_less_later
        } else {
            &self.from_today_plus_later
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_from_postgres(&self) {
        self.from_postgres.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_later_changes_read(&self) {
        self.later_changes_read.fetch_add(1, Ordering::Relaxed);
    }
}

impl MetricSource for OtherDateMetrics {
    fn render<'a>(&'a self, out: &'a mut String) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            out.push_str("# TYPE qapmap_cap_table_other_dates_total counter\n");
            for (source, count) in [
                ("today_less_later", &self.from_today_less_later),
                ("today_plus_later", &self.from_today_plus_later),
                ("postgres", &self.from_postgres),
            ] {
                let _ = writeln!(
                    out,
                    "qapmap_cap_table_other_dates_total{{computed_from=\"{source}\"}} {}",
                    count.load(Ordering::Relaxed)
                );
            }
            let _ = writeln!(
                out,
                "# TYPE qapmap_cap_table_later_changes_reads_total counter\n\
                 qapmap_cap_table_later_changes_reads_total {}",
                self.later_changes_read.load(Ordering::Relaxed)
            );
        })
    }
}
