//! CPU time per unit of work, by process, from /proc: what the saga floor is
//! about. On 2 cores, 300 sagas/s leaves 2,000 ms / 300 = 6.7 ms of CPU per
//! saga for everything; this says how far each process is from it and
//! where the work is. It is not drift-free: CPU time stretches with the
//! VM's speed as throughput does (bench/README.md, (g)).
//!
//! Figures are user + system time (`/proc/<pid>/stat` fields 14 and 15, in
//! clock ticks of 10 ms: Linux reports them in USER_HZ = 100 on every
//! architecture this runs on), a tick per process over a phase of
//! thousands of units. Kernel work done on a process's behalf in its system
//! calls (loopback TCP: the receiver's side runs in the sender's softirq)
//! counts for the process that made the call.

use std::collections::HashMap;

use crate::config::Config;

/// Milliseconds per clock tick (USER_HZ = 100).
const MS_PER_TICK: f64 = 10.0;

/// Who used the CPU, in the order printed.
const GROUPS: [&str; 8] = [
    "equity",
    "shareholder",
    "ledger",
    "orchestrator",
    "Postgres",
    "NATS",
    "harness",
    "other",
];

/// Indexes into [`GROUPS`] (the four services are 0-3, as in the config).
const POSTGRES: usize = 4;
const NATS: usize = 5;
const HARNESS: usize = 6;
const OTHER: usize = 7;

/// Cumulative CPU ticks per group, and the machine's busy and total ticks.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    by_group: [u64; GROUPS.len()],
    machine_busy: u64,
    machine_total: u64,
}

/// Takes a snapshot: the four processes by pid, Postgres (every `postgres`
/// process, plus what the postmaster reaped of exited backends), NATS, this
/// harness, and the machine from /proc/stat ("other" is the machine's busy
/// time less all of these).
pub(crate) fn snapshot(config: &Config) -> Snapshot {
    let mut snapshot = Snapshot::default();
    let service_pids: HashMap<u32, usize> = config
        .processes
        .iter()
        .enumerate()
        .map(|(index, process)| (process.pid, index))
        .collect();
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return snapshot;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse().ok())
        else {
            continue;
        };
        let Some(stat) = ProcessStat::read(pid) else {
            continue;
        };
        let group = if let Some(index) = service_pids.get(&pid) {
            Some(*index)
        } else if pid == own {
            Some(HARNESS)
        } else if stat.command == "postgres" {
            Some(POSTGRES)
        } else if stat.command == "nats-server" {
            Some(NATS)
        } else {
            None
        };
        let Some(group) = group else { continue };
        snapshot.by_group[group] += stat.own_ticks;
        // The postmaster (its parent is not a postgres process) has
        // collected the CPU of backends that exited, e.g. the harness's own
        // short connections.
        if group == POSTGRES
            && ProcessStat::read(stat.parent).is_none_or(|p| p.command != "postgres")
        {
            snapshot.by_group[group] += stat.reaped_children_ticks;
        }
    }
    if let Some((busy, total)) = machine_ticks() {
        snapshot.machine_busy = busy;
        snapshot.machine_total = total;
    }
    snapshot
}

/// CPU used between two snapshots, per unit of work.
#[derive(Debug, Clone)]
pub(crate) struct Usage {
    /// Milliseconds per unit, per group (GROUPS' order).
    ms_per_unit: [f64; GROUPS.len()],
    /// All busy CPU of the machine, milliseconds per unit.
    machine_ms_per_unit: f64,
    /// The machine's busy share of all its cores.
    machine_busy_share: f64,
}

impl Usage {
    pub(crate) fn between(before: &Snapshot, after: &Snapshot, units: usize) -> Self {
        let units = units.max(1) as f64;
        let mut ms_per_unit = [0.0; GROUPS.len()];
        let mut accounted = 0;
        for (index, slot) in ms_per_unit.iter_mut().enumerate() {
            let ticks = after.by_group[index].saturating_sub(before.by_group[index]);
            accounted += ticks;
            *slot = ticks as f64 * MS_PER_TICK / units;
        }
        let busy = after.machine_busy.saturating_sub(before.machine_busy);
        let total = after.machine_total.saturating_sub(before.machine_total);
        // "other": whatever else ran (kernel threads, Redis, interrupts not
        // charged to a process); per-process ticks can exceed the machine's
        // by rounding, hence the saturation.
        ms_per_unit[OTHER] = busy.saturating_sub(accounted) as f64 * MS_PER_TICK / units;
        Self {
            ms_per_unit,
            machine_ms_per_unit: busy as f64 * MS_PER_TICK / units,
            machine_busy_share: if total == 0 {
                0.0
            } else {
                busy as f64 / total as f64
            },
        }
    }

    /// The machine's busy CPU per unit, in milliseconds.
    pub(crate) fn machine_ms(&self) -> f64 {
        self.machine_ms_per_unit
    }

    /// E.g. `CPU per saga: 21.30 ms (the machine 96% busy), by process in
    /// ms: equity 2.10, ...`; in µs when the total is under a millisecond
    /// (a cap-table read).
    pub(crate) fn line(&self, unit: &str) -> String {
        let (scale, name) = if self.machine_ms_per_unit < 1.0 {
            (1000.0, "µs")
        } else {
            (1.0, "ms")
        };
        let parts: Vec<String> = GROUPS
            .iter()
            .zip(self.ms_per_unit)
            .map(|(group, ms)| format!("{group} {:.2}", ms * scale))
            .collect();
        format!(
            "  CPU per {unit}: {:.2} {name} (the machine {:.0}% busy), by process in {name}: {}",
            self.machine_ms_per_unit * scale,
            self.machine_busy_share * 100.0,
            parts.join(", ")
        )
    }
}

/// User plus system CPU of one process so far, in clock ticks (100 a
/// second); None when it is gone.
pub(crate) fn process_ticks(pid: u32) -> Option<u64> {
    ProcessStat::read(pid).map(|stat| stat.own_ticks)
}

/// The fields of /proc/<pid>/stat this module reads.
#[derive(Debug)]
struct ProcessStat {
    command: String,
    parent: u32,
    /// utime + stime.
    own_ticks: u64,
    /// cutime + cstime: children waited for.
    reaped_children_ticks: u64,
}

impl ProcessStat {
    fn read(pid: u32) -> Option<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Self::parse(&text)
    }

    /// `pid (comm) state ppid ...`: the command may hold spaces and
    /// parentheses, so fields are counted after its last `)`.
    fn parse(text: &str) -> Option<Self> {
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        let command = text.get(open + 1..close)?.to_owned();
        let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
        // fields[0] is field 3 (state); field n is fields[n - 3].
        let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
        Some(Self {
            command,
            parent: u32::try_from(field(4)?).ok()?,
            own_ticks: field(14)? + field(15)?,
            reaped_children_ticks: field(16)? + field(17)?,
        })
    }
}

/// Busy and total ticks of all cores, from the `cpu` line of /proc/stat.
fn machine_ticks() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_ticks(text.lines().next()?)
}

/// `cpu user nice system idle iowait irq softirq steal guest guest_nice`:
/// idle and iowait are not busy; guest time is already inside user.
fn parse_machine_ticks(line: &str) -> Option<(u64, u64)> {
    let mut parts = line.split_whitespace();
    if parts.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = parts
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = values.iter().sum();
    let idle = values.get(3)? + values.get(4)?;
    Some((total - idle, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_with_spaces_and_parentheses_in_its_command_parses() {
        let line = "4242 (tokio (worker) 1) S 17 4242 4242 0 -1 4194560 500 0 0 0 \
                    123 45 6 7 20 0 3 0 99 1000 200";
        let stat = ProcessStat::parse(line).expect("parses");
        assert_eq!(stat.command, "tokio (worker) 1");
        assert_eq!(stat.parent, 17);
        assert_eq!(stat.own_ticks, 168);
        assert_eq!(stat.reaped_children_ticks, 13);
    }

    /// The real /proc: this process's own line parses, and its ticks grow
    /// while it spins (bounded: at most 5 s).
    #[test]
    fn this_process_is_read_from_proc_and_its_cpu_time_grows() {
        let own = std::process::id();
        let before = ProcessStat::read(own).expect("own stat");
        assert!(
            ProcessStat::read(before.parent).is_some(),
            "the parent's stat"
        );
        let started = std::time::Instant::now();
        let mut spun: u64 = 0;
        while ProcessStat::read(own).expect("own stat").own_ticks < before.own_ticks + 3
            && started.elapsed() < std::time::Duration::from_secs(5)
        {
            for i in 0..100_000u64 {
                spun = std::hint::black_box(spun.wrapping_mul(31).wrapping_add(i));
            }
        }
        assert!(ProcessStat::read(own).expect("own stat").own_ticks >= before.own_ticks + 3);
        let (busy, total) = machine_ticks().expect("/proc/stat");
        assert!(0 < busy && busy < total);
    }

    #[test]
    fn machine_ticks_leave_idle_and_iowait_out_of_busy() {
        let line = "cpu  100 5 50 800 20 3 2 0 0 0";
        assert_eq!(parse_machine_ticks(line), Some((160, 980)));
        assert_eq!(parse_machine_ticks("cpu0 1 2 3 4 5 6 7 8"), None);
    }

    #[test]
    fn usage_divides_each_groups_ticks_by_the_units_and_the_rest_is_other() {
        let before = Snapshot::default();
        let mut after = Snapshot::default();
        after.by_group[0] = 30; // equity: 300 ms
        after.by_group[POSTGRES] = 50; // 500 ms
        after.machine_busy = 100;
        after.machine_total = 200;
        let usage = Usage::between(&before, &after, 10);
        assert_eq!(usage.ms_per_unit[0], 30.0);
        assert_eq!(usage.ms_per_unit[POSTGRES], 50.0);
        assert_eq!(usage.ms_per_unit[OTHER], 20.0);
        assert_eq!(usage.machine_ms(), 100.0);
        assert_eq!(usage.machine_busy_share, 0.5);
        assert!(usage.line("saga").contains("CPU per saga: 100.00 ms"));
        let read = Usage::between(&before, &after, 250_000);
        let line = read.line("read");
        assert!(line.contains("CPU per read: 4.00 µs"), "{line}");
        assert!(line.contains("equity 1.20, "), "{line}");
    }
}
