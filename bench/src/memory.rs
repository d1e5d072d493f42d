//! Resident memory of the four processes, from /proc/<pid>/status (VmRSS).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::Config;

/// VmRSS in KiB, `None` when the process is gone.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

pub(crate) fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Samples every process every 100 ms while running and keeps the peak of
/// each since the last `take_peaks`.
#[derive(Debug)]
pub(crate) struct Sampler {
    pids: Vec<u32>,
    peaks: Arc<Mutex<Vec<u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub(crate) fn start(config: &Config) -> Self {
        let pids: Vec<u32> = config.processes.iter().map(|p| p.pid).collect();
        let peaks = Arc::new(Mutex::new(vec![0; pids.len()]));
        let task = {
            let pids = pids.clone();
            let peaks = peaks.clone();
            tokio::spawn(async move {
                // Bounded: the harness aborts it at the end; at most a day.
                for _ in 0..(24 * 3600 * 10) {
                    let now: Vec<u64> = pids.iter().map(|pid| rss_kib(*pid).unwrap_or(0)).collect();
                    {
                        let mut peaks = peaks.lock().expect("peaks");
                        for (peak, value) in peaks.iter_mut().zip(now) {
                            *peak = (*peak).max(value);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        Self { pids, peaks, task }
    }

    pub(crate) fn current(&self) -> Vec<u64> {
        self.pids
            .iter()
            .map(|pid| rss_kib(*pid).unwrap_or(0))
            .collect()
    }

    /// The peaks since the last call (including the current values), then resets them.
    pub(crate) fn take_peaks(&self) -> Vec<u64> {
        let now = self.current();
        let mut peaks = self.peaks.lock().expect("peaks");
        let result = peaks.iter().zip(now).map(|(p, n)| (*p).max(n)).collect();
        peaks.iter_mut().for_each(|p| *p = 0);
        result
    }

    pub(crate) fn stop(self) {
        self.task.abort();
    }
}
