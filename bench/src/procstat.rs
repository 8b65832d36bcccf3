//! CPU time and memory of a local process from `/proc/<pid>/stat` and `/proc/<pid>/status`
//! (Linux), and their sampling over a measurement window ([`sample_window`]). Used for the
//! controller (the [`Target`](crate::Target)'s pid, or `--pid`) and for the bench itself; a
//! remote controller has none (`n/a`).

use std::time::{Duration, Instant};

use crate::error::BenchError;
use crate::stats::{Clock, Window};

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    pub at: Instant,
    /// User + system CPU time of all its threads and of its children (the live ones, e.g.
    /// the controller's Python workers, and those it waited for), in clock ticks.
    pub cpu_ticks: u64,
    /// Resident set size of its live children, kB.
    pub children_rss_kb: u64,
    /// Resident set size, kB.
    pub rss_kb: u64,
    /// Peak resident set size since the process started, kB.
    pub hwm_kb: u64,
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on every mainstream Linux).
pub fn ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// Reads process `pid` now (memory only of the process itself, no children).
pub fn sample(pid: u32) -> Result<ProcSample, BenchError> {
    let at = Instant::now();
    let read = |file: &'static str| {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .map_err(|source| BenchError::NoProcess { pid, file, source })
    };
    let stat = read("stat")?;
    let status = read("status")?;
    let s = parse_stat(&stat).ok_or_else(|| BenchError::ProcFormat {
        path: format!("/proc/{pid}/stat"),
    })?;
    Ok(ProcSample {
        at,
        cpu_ticks: s.own + s.waited_children,
        children_rss_kb: 0,
        rss_kb: status_kb(&status, "VmRSS:").unwrap_or(0),
        hwm_kb: status_kb(&status, "VmHWM:").unwrap_or(0),
    })
}

/// Like [`sample`], with the CPU time and memory of the live children added.
pub fn sample_with_children(pid: u32) -> Result<ProcSample, BenchError> {
    let mut s = sample(pid)?;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Ok(s);
    };
    for entry in dir.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        match parse_stat(&stat) {
            Some(c) if c.ppid == pid => {
                s.cpu_ticks += c.own;
                s.children_rss_kb += std::fs::read_to_string(format!("/proc/{child}/status"))
                    .ok()
                    .and_then(|st| status_kb(&st, "VmRSS:"))
                    .unwrap_or(0);
            }
            _ => {}
        }
    }
    Ok(s)
}

/// The fields of `/proc/<pid>/stat` used here.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    ppid: u32,
    /// utime + stime.
    own: u64,
    /// cutime + cstime: children that exited and were waited for.
    waited_children: u64,
}

/// Fields 4 (ppid) and 14-17 (utime, stime, cutime, cstime). The command name in field 2
/// may contain spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat(stat: &str) -> Option<Stat> {
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| -> Option<u64> { f.get(i)?.parse().ok() };
    Some(Stat {
        ppid: u32::try_from(num(1)?).ok()?,
        own: num(11)? + num(12)?,
        waited_children: num(13)? + num(14)?,
    })
}

fn status_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Busy and total time of all CPUs of the machine (`/proc/stat`), in clock ticks.
#[derive(Debug, Clone, Copy)]
pub struct MachineSample {
    pub busy: u64,
    pub total: u64,
}

/// Reads the machine's CPU counters now.
pub fn machine() -> Result<MachineSample, BenchError> {
    let path = "/proc/stat";
    let stat = std::fs::read_to_string(path).map_err(|source| BenchError::Proc {
        path: path.into(),
        source,
    })?;
    parse_machine(&stat).ok_or_else(|| BenchError::ProcFormat { path: path.into() })
}

fn parse_machine(stat: &str) -> Option<MachineSample> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is included in user).
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    let idle = get(3) + get(4);
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    Some(MachineSample {
        busy,
        total: busy + idle,
    })
}

/// CPU use of the whole machine between two samples, in percent of one core (all cores busy
/// = 100 × cores), comparable with [`cpu_percent`].
pub fn machine_percent(a: &MachineSample, b: &MachineSample) -> Option<f64> {
    let total = b.total.checked_sub(a.total)?;
    if total == 0 {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    Some(b.busy.saturating_sub(a.busy) as f64 / total as f64 * 100.0 * cores)
}

/// CPU use between two samples, in percent of one core (200 = two cores busy).
pub fn cpu_percent(a: &ProcSample, b: &ProcSample) -> f64 {
    let secs = b.at.duration_since(a.at).as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    let ticks = b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64;
    ticks / ticks_per_second() as f64 / secs * 100.0
}

/// CPU and memory over a measurement window.
#[derive(Debug, Default)]
pub struct WindowFigures {
    pub cpu_percent: Option<f64>,
    pub rss_start_kb: Option<u64>,
    pub rss_end_kb: Option<u64>,
    pub rss_max_kb: Option<u64>,
    pub children_rss_kb: Option<u64>,
    pub client_cpu_percent: Option<f64>,
    pub machine_cpu_percent: Option<f64>,
}

/// Samples the controller (when local) and this process at the start and the end of the
/// window, and the controller's memory every 250 ms in between.
pub async fn sample_window(pid: Option<u32>, clock: Clock, window: Window) -> WindowFigures {
    tokio::time::sleep_until(clock.instant(window.start).into()).await;
    let me = std::process::id();
    let first: Option<ProcSample> = pid.and_then(|p| sample_with_children(p).ok());
    let me_first = sample(me).ok();
    let machine_first = machine().ok();
    let mut max_kb = first.map(|s| s.rss_kb);
    let end = clock.instant(window.end);
    while std::time::Instant::now() + Duration::from_millis(250) < end {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Some(s) = pid.and_then(|p| sample(p).ok()) {
            max_kb = max_kb.max(Some(s.rss_kb));
        }
    }
    tokio::time::sleep_until(end.into()).await;
    let last = pid.and_then(|p| sample_with_children(p).ok());
    let me_last = sample(me).ok();
    let machine_last = machine().ok();
    if let Some(s) = last {
        max_kb = max_kb.max(Some(s.rss_kb));
    }
    WindowFigures {
        cpu_percent: first.zip(last).map(|(a, b)| cpu_percent(&a, &b)),
        rss_start_kb: first.map(|s| s.rss_kb),
        rss_end_kb: last.map(|s| s.rss_kb),
        rss_max_kb: max_kb,
        children_rss_kb: last.map(|s| s.children_rss_kb),
        client_cpu_percent: me_first.zip(me_last).map(|(a, b)| cpu_percent(&a, &b)),
        machine_cpu_percent: machine_first
            .zip(machine_last)
            .and_then(|(a, b)| machine_percent(&a, &b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat =
            "1234 (iot ctl (x)) S 7 1234 1234 0 -1 4194560 100 0 0 0 250 50 3 4 20 0 9 0 1 2 3";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                ppid: 7,
                own: 300,
                waited_children: 7
            })
        );
        let status = "Name:\tiotctl\nVmHWM:\t  51200 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(status_kb(status, "VmRSS:"), Some(40960));
        assert_eq!(status_kb(status, "VmHWM:"), Some(51200));
        let m = parse_machine("cpu  10 0 10 70 10 0 0 0 0 0\ncpu0 1 2 3\n").unwrap();
        assert_eq!((m.busy, m.total), (20, 100));
        let m2 = MachineSample {
            busy: 70,
            total: 200,
        };
        let cores = std::thread::available_parallelism().unwrap().get() as f64;
        assert_eq!(machine_percent(&m, &m2), Some(50.0 * cores));
        assert!(machine().is_ok());
        let me = sample(std::process::id()).unwrap();
        assert!(me.rss_kb > 0);
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let with = sample_with_children(std::process::id()).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(with.children_rss_kb > 0, "{with:?}");
        assert!(ticks_per_second() > 0);
    }
}
