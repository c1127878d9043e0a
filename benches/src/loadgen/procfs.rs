//! Linux `/proc` sampling around the measured window: CPU time and memory of watched
//! processes (the proxy under test), per-core utilisation, and the generator's own CPU time.
//!
//! Everything here is best effort: on a system without `/proc`, or for a process that has
//! gone, the values are simply missing.

use std::fmt::Write as _;

/// Clock ticks per second of the `utime`/`stime` fields (`USER_HZ`, 100 on every Linux
/// architecture Spooky targets).
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of everything watched.
#[derive(Debug, Clone, Default)]
pub struct ProcSnapshot {
    /// `(pid, utime + stime in ticks)`; `None` when the process could not be read.
    pids: Vec<(u32, Option<u64>)>,
    /// Per core ticks from `/proc/stat`.
    cpus: Vec<CoreTicks>,
    /// The generator's own `utime + stime`, in ticks.
    own: Option<u64>,
    /// When it was taken.
    at: Option<std::time::Instant>,
}

impl ProcSnapshot {
    /// Reads the CPU times of `pids`, of every core and of this process.
    pub fn take(pids: &[u32]) -> ProcSnapshot {
        ProcSnapshot {
            pids: pids.iter().map(|&p| (p, cpu_ticks(p))).collect(),
            cpus: per_core_ticks(),
            own: cpu_ticks(std::process::id()),
            at: Some(std::time::Instant::now()),
        }
    }
}

/// What one watched process did between two snapshots, and its memory at the second.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcUsage {
    /// The process id.
    pub pid: u32,
    /// User + system CPU seconds spent between the snapshots (all threads).
    pub cpu_s: Option<f64>,
    /// Resident set size at the end, KiB (`VmRSS`).
    pub rss_kb: Option<u64>,
    /// Peak resident set size, KiB (`VmHWM`: since start, or since the peak was last reset
    /// through `/proc/PID/clear_refs`).
    pub hwm_kb: Option<u64>,
}

/// The difference between two snapshots.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcReport {
    /// One entry per watched process, in the order given.
    pub watched: Vec<ProcUsage>,
    /// Busy share (0 to 1) of every core over the interval: everything but idle and I/O wait.
    pub cpu_busy: Vec<f64>,
    /// Share of every core spent running tasks (user, nice and system time; interrupts,
    /// softirqs and time stolen by the hypervisor excluded): compared with the CPU time of the
    /// known processes, it shows how much else ran on the machine.
    pub cpu_task: Vec<f64>,
    /// The generator's own CPU seconds over the interval.
    pub own_cpu_s: Option<f64>,
    /// Wall-clock seconds between the two snapshots (the CPU figures are over this).
    pub interval_s: Option<f64>,
}

impl ProcReport {
    /// Compares `before` with `after` (the memory figures are read now).
    pub fn between(before: &ProcSnapshot, after: &ProcSnapshot) -> ProcReport {
        let secs = |a: u64, b: u64| b.saturating_sub(a) as f64 / TICKS_PER_SECOND;
        let watched = before
            .pids
            .iter()
            .zip(&after.pids)
            .map(|(&(pid, b), &(_, a))| {
                let (rss_kb, hwm_kb) = memory_kb(pid);
                ProcUsage {
                    pid,
                    cpu_s: match (b, a) {
                        (Some(b), Some(a)) => Some(secs(b, a)),
                        _ => None,
                    },
                    rss_kb,
                    hwm_kb,
                }
            })
            .collect();
        let share = |pick: fn(&CoreTicks) -> u64| -> Vec<f64> {
            before
                .cpus
                .iter()
                .zip(&after.cpus)
                .map(|(b, a)| {
                    let total = a.total.saturating_sub(b.total);
                    if total == 0 {
                        0.0
                    } else {
                        pick(a).saturating_sub(pick(b)) as f64 / total as f64
                    }
                })
                .collect()
        };
        let cpu_busy = share(|c| c.busy);
        let cpu_task = share(|c| c.task);
        let own_cpu_s = match (before.own, after.own) {
            (Some(b), Some(a)) => Some(secs(b, a)),
            _ => None,
        };
        let interval_s = match (before.at, after.at) {
            (Some(b), Some(a)) => Some(a.saturating_duration_since(b).as_secs_f64()),
            _ => None,
        };
        ProcReport {
            watched,
            cpu_busy,
            cpu_task,
            own_cpu_s,
            interval_s,
        }
    }

    /// Memory only (no interval): RSS and peak RSS of `pids` now.
    pub fn memory(pids: &[u32]) -> ProcReport {
        ProcReport {
            watched: pids
                .iter()
                .map(|&pid| {
                    let (rss_kb, hwm_kb) = memory_kb(pid);
                    ProcUsage {
                        pid,
                        cpu_s: None,
                        rss_kb,
                        hwm_kb,
                    }
                })
                .collect(),
            cpu_busy: Vec::new(),
            cpu_task: Vec::new(),
            own_cpu_s: None,
            interval_s: None,
        }
    }

    /// The JSON members `"watched":[...],"cpu_busy":[...],"loadgen_cpu_s":x` (no braces).
    pub fn json_members(&self) -> String {
        let opt_f = |v: Option<f64>| v.map_or_else(|| "null".to_owned(), |v| format!("{v:.3}"));
        let opt_u = |v: Option<u64>| v.map_or_else(|| "null".to_owned(), |v| v.to_string());
        let mut s = String::from("\"watched\":[");
        for (i, w) in self.watched.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(
                s,
                "{sep}{{\"pid\":{},\"cpu_s\":{},\"rss_kb\":{},\"hwm_kb\":{}}}",
                w.pid,
                opt_f(w.cpu_s),
                opt_u(w.rss_kb),
                opt_u(w.hwm_kb)
            );
        }
        for (name, values) in [("cpu_busy", &self.cpu_busy), ("cpu_task", &self.cpu_task)] {
            let _ = write!(s, "],\"{name}\":[");
            for (i, b) in values.iter().enumerate() {
                let sep = if i == 0 { "" } else { "," };
                let _ = write!(s, "{sep}{b:.4}");
            }
        }
        let _ = write!(
            s,
            "],\"loadgen_cpu_s\":{},\"proc_interval_s\":{}",
            opt_f(self.own_cpu_s),
            opt_f(self.interval_s)
        );
        s
    }

    /// Human-readable lines (possibly none).
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        for w in &self.watched {
            let cpu = w.cpu_s.map_or("?".to_owned(), |c| format!("{c:.2} s CPU"));
            let rss = w
                .rss_kb
                .map_or("?".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
            let hwm = w
                .hwm_kb
                .map_or("?".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
            let _ = writeln!(s, "  pid {:<8}{cpu}, RSS {rss}, peak RSS {hwm}", w.pid);
        }
        if !self.cpu_busy.is_empty() {
            let cores: Vec<String> = self
                .cpu_busy
                .iter()
                .enumerate()
                .map(|(i, b)| format!("cpu{i} {:.0}%", b * 100.0))
                .collect();
            let _ = writeln!(s, "  cores busy  {}", cores.join(", "));
        }
        if let Some(own) = self.own_cpu_s {
            let _ = writeln!(s, "  loadgen CPU {own:.2} s");
        }
        s
    }
}

/// `utime + stime` of a process (all its threads), in ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_ticks(&stat)
}

/// Fields 14 and 15 of `/proc/PID/stat`; the command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state (3), ppid (4), ..., utime is field 14, i.e. the 12th here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `(VmRSS, VmHWM)` in KiB.
fn memory_kb(pid: u32) -> (Option<u64>, Option<u64>) {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return (None, None);
    };
    let field = |name: &str| {
        status.lines().find_map(|l| {
            l.strip_prefix(name)?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Tick counters of one core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CoreTicks {
    /// Everything but idle and I/O wait.
    busy: u64,
    /// User, nice and system.
    task: u64,
    /// Everything.
    total: u64,
}

/// The ticks of every core, from the `cpuN` lines of `/proc/stat`.
fn per_core_ticks() -> Vec<CoreTicks> {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    parse_per_core(&stat)
}

fn parse_per_core(stat: &str) -> Vec<CoreTicks> {
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|f| f.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal (guest time is inside user).
            let total: u64 = v.iter().take(8).sum();
            let at = |i: usize| v.get(i).copied().unwrap_or(0);
            CoreTicks {
                busy: total.saturating_sub(at(3) + at(4)),
                task: at(0) + at(1) + at(2),
                total,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields() {
        let stat = "1234 (a (weird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 \
                    4 0 100 1000 10 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(325));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn per_core_lines() {
        let stat = "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 5 0 5 40 0 0 0 0 0 0\n\
                    cpu1 5 0 5 30 10 0 2 1 0 0\nintr 1\n";
        let cores = parse_per_core(stat);
        assert_eq!(
            cores,
            vec![
                CoreTicks {
                    busy: 10,
                    task: 10,
                    total: 50
                },
                CoreTicks {
                    busy: 13,
                    task: 10,
                    total: 53
                }
            ]
        );
    }

    #[test]
    fn own_process_is_readable() {
        let before = ProcSnapshot::take(&[std::process::id()]);
        let after = ProcSnapshot::take(&[std::process::id()]);
        let report = ProcReport::between(&before, &after);
        if std::path::Path::new("/proc/self/stat").exists() {
            assert!(report.watched[0].cpu_s.is_some());
            assert!(report.watched[0].hwm_kb.unwrap_or(0) > 0);
            assert!(!report.cpu_busy.is_empty());
        }
        assert!(report.json_members().starts_with("\"watched\":[{\"pid\":"));
    }
}
