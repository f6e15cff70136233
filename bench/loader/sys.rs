//! What the loader asks of Linux directly: the fd limit, a timerfd for sub-millisecond send
//! schedules, and CPU / memory figures read from `/proc`.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

/// Lets timers of this process fire within 1 µs of their deadline (default slack is 50 µs).
pub fn tighten_timer_slack() {
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0);
    }
}

/// A non-blocking CLOCK_MONOTONIC timerfd: one-shot, re-armed for every deadline.
pub struct TimerFd(OwnedFd);

impl TimerFd {
    pub fn new() -> io::Result<TimerFd> {
        // SAFETY: timerfd_create returns a new fd or -1.
        let fd =
            unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is ours and open.
        Ok(TimerFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Fires once after `after` (a zero duration is rounded up to 1 ns: zero would disarm).
    pub fn arm(&self, after: Duration) -> io::Result<()> {
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: valid fd and pointers to locals.
        if unsafe { libc::timerfd_settime(self.0.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Consumes the expiration count so the next expiration makes a new edge.
    pub fn drain(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reading 8 bytes into a local buffer; errors (EAGAIN) are expected and ignored.
        unsafe {
            libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), 8);
        }
    }

    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Fields of `/proc/PID/stat` after the command name: (ppid, utime + stime in ticks, rss pages).
fn read_stat(pid: u32) -> Option<(u32, u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // rest starts at field 3 (state): ppid = field 4, utime = 14, stime = 15, rss = 24.
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let rss: u64 = f.get(21)?.parse().ok()?;
    Some((ppid, utime + stime, rss))
}

/// CPU time (user + system) of this process in µs: the scheduler's exact runtime when the
/// kernel shows it, else the tick-sampled utime + stime.
pub fn self_cpu_us() -> u64 {
    let pid = std::process::id();
    match sched_runtime_ns(pid) {
        Some(ns) => ns / 1000,
        None => read_stat(pid).map(|(_, t, _)| t * 1_000_000 / clock_ticks_per_sec()).unwrap_or(0),
    }
}

/// Exact on-CPU time of all threads of `pid` in ns, summed from the `se.sum_exec_runtime`
/// lines of `/proc/PID/task/*/sched` (shown by kernels with scheduler debug info). utime and
/// stime in `/proc/PID/stat` are sampled at each timer tick (4 ms at HZ=250) where the kernel
/// uses tick accounting, too coarse for short bursts of work.
pub fn sched_runtime_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    let mut any = false;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Ok(s) = std::fs::read_to_string(entry.path().join("sched")) else {
            continue;
        };
        let Some(line) = s.lines().find(|l| l.starts_with("se.sum_exec_runtime")) else {
            continue;
        };
        let Some(v) = line.rsplit(':').next().map(str::trim) else {
            continue;
        };
        // Milliseconds with six decimals: "123.456789" -> 123456789 ns.
        let (ms, frac) = v.split_once('.').unwrap_or((v, "0"));
        let frac = format!("{frac:0<6}");
        if let (Ok(ms), Ok(ns)) = (ms.parse::<u64>(), frac[..6].parse::<u64>()) {
            total += ms * 1_000_000 + ns;
            any = true;
        }
    }
    any.then_some(total)
}

/// `root` and all its descendants, found by scanning `/proc`.
pub fn process_tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((ppid, _, _)) = read_stat(pid) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = children.get(&out[i]) {
            out.extend(c);
        }
        i += 1;
    }
    out
}

/// CPU of one process: (utime + stime in µs from ticks, exact runtime in µs if shown).
#[derive(Clone, Copy, Default)]
pub struct Cpu {
    pub ticks_us: u64,
    pub exact_us: Option<u64>,
}

fn cpu_of(pid: u32) -> Option<Cpu> {
    let (_, ticks, _) = read_stat(pid)?;
    Some(Cpu {
        ticks_us: ticks * 1_000_000 / clock_ticks_per_sec(),
        exact_us: sched_runtime_ns(pid).map(|ns| ns / 1000),
    })
}

/// The CPU time of the process trees of `roots` over a window: the processes known at the
/// start are read at both ends; processes born during the window count from zero.
pub struct TreeCpu {
    roots: Vec<u32>,
    start: HashMap<u32, Cpu>,
}

/// CPU of the trees over a window.
#[derive(Clone, Copy)]
pub struct TreeCpuResult {
    /// Exact runtime where the kernel shows it, else the tick-sampled figure.
    pub cpu_us: u64,
    /// From utime + stime of `/proc/PID/stat`.
    pub ticks_us: u64,
    pub exact: bool,
    pub procs: usize,
}

impl TreeCpu {
    pub fn start(roots: &[u32], known: &[u32]) -> TreeCpu {
        TreeCpu {
            roots: roots.to_vec(),
            start: known.iter().filter_map(|&p| cpu_of(p).map(|c| (p, c))).collect(),
        }
    }

    pub fn tree(roots: &[u32]) -> Vec<u32> {
        let mut all: Vec<u32> = roots.iter().flat_map(|&r| process_tree(r)).collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    pub fn finish(&self, known: &[u32]) -> TreeCpuResult {
        let seen: HashSet<u32> = known.iter().copied().collect();
        let now = TreeCpu::tree(&self.roots);
        let mut ticks = 0;
        let mut exact = Some(0u64);
        for &p in known.iter().chain(now.iter().filter(|p| !seen.contains(p))) {
            let Some(end) = cpu_of(p) else { continue };
            let start = self.start.get(&p).copied().unwrap_or_default();
            ticks += end.ticks_us.saturating_sub(start.ticks_us);
            exact = match (exact, end.exact_us) {
                (Some(sum), Some(e)) => Some(sum + e.saturating_sub(start.exact_us.unwrap_or(0))),
                _ => None,
            };
        }
        TreeCpuResult {
            cpu_us: exact.unwrap_or(ticks),
            ticks_us: ticks,
            exact: exact.is_some(),
            procs: now.len(),
        }
    }
}

/// Resident set size of the trees of `roots` in KiB (sum over processes).
pub fn tree_rss_kib(roots: &[u32]) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    TreeCpu::tree(roots).iter().filter_map(|&p| read_stat(p).map(|(_, _, rss)| rss * page / 1024)).sum()
}

/// `Slab:` of `/proc/meminfo` in KiB (kernel objects, sockets included).
pub fn kernel_slab_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Slab:"))
                .and_then(|l| l.split_ascii_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Timestamps carried in payloads: CLOCK_MONOTONIC in µs, the clock `Instant` reads, so that
/// loader processes on one machine agree.
#[derive(Clone, Copy)]
pub struct Clock {
    base: std::time::Instant,
    base_us: u64,
}

impl Clock {
    pub fn new() -> Clock {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        let base = std::time::Instant::now();
        // SAFETY: clock_gettime writes into a local timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        Clock { base, base_us: ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000 }
    }

    pub fn us(&self, t: std::time::Instant) -> u64 {
        self.base_us + t.saturating_duration_since(self.base).as_micros() as u64
    }
}
