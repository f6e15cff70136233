//! Statistics in a file-backed shared-memory region in the run directory: a header written
//! by the master and one fixed slot of atomic counters per process, each written only by its
//! own process. `status` maps the file read-only; no signal round trip, no temp files.

pub mod conns;
pub mod table;

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

const MAGIC: u64 = 0x6777_7374_6174_7331; // "gwstats1"
/// Layout version of the region: 2 added the rate and backpressure counters to `Slot`; 3 the
/// running version label, the operation in progress and the upgrade outcome to the header.
pub const VERSION: u32 = 3;
const TEXT_LEN: usize = 48;
/// Bytes of the version label in the header (UTF-8, NUL-padded).
pub const LABEL_LEN: usize = 48;
/// Bytes of the last upgrade message in the header (UTF-8, NUL-padded, cut at a character).
pub const MESSAGE_LEN: usize = 256;

/// An enum stored as a `u32` in the shared region, with the word `status` shows for each value.
macro_rules! stored_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $value:literal => $word:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u32)]
        pub enum $name {
            $($(#[$vdoc])* $variant = $value,)+
        }

        impl $name {
            const ALL: &'static [$name] = &[$($name::$variant),+];

            fn from_u32(v: u32) -> Option<$name> {
                Self::ALL.iter().copied().find(|x| *x as u32 == v)
            }

            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }
        }
    };
}

stored_enum! {
    /// Process roles, as stored in a slot.
    Role {
        Empty = 0 => "-", Master = 1 => "master", Register = 2 => "register",
        Gateway = 3 => "gateway", Worker = 4 => "worker", Http = 5 => "http",
    }
}

stored_enum! {
    /// Life-cycle state of the process in a slot.
    State {
        /// Spawned, not serving yet (a worker: not linked to every gateway yet).
        Starting = 1 => "starting",
        /// Serving.
        Ready = 2 => "idle",
        /// Finishing its work before exit (graceful reload/stop).
        Draining = 3 => "draining",
        /// Gone; the slot is kept for its exit statistics.
        Exited = 4 => "exited",
        /// A gateway started by `upgrade`, waiting for the process it replaces to hand over
        /// its connections (it listens on its handover socket).
        Receiving = 5 => "receiving",
    }
}

stored_enum! {
    /// What the master is doing to its processes (header field, read by the CLI).
    Operation {
        Idle = 0 => "idle",
        /// Business workers are being replaced (`reload`).
        Reload = 1 => "reload",
        /// Every process is being replaced (`upgrade`).
        Upgrade = 2 => "upgrade",
    }
}

/// Global section, written by the master.
#[repr(C)]
pub struct Header {
    magic: AtomicU64,
    version: AtomicU32,
    slots: AtomicU32,
    pub master_pid: AtomicU32,
    pub daemon: AtomicU32,
    /// Unix seconds of the master's start.
    pub started: AtomicU64,
    pub reloads: AtomicU64,
    /// Non-zero while an empty secret is allowed on a non-loopback listener
    /// (`allow_empty_secret`); `status` prints a warning.
    pub empty_secret_exposed: AtomicU32,
    /// `Operation` in progress.
    operation: AtomicU32,
    /// Completed upgrades.
    pub upgrades: AtomicU64,
    /// Upgrades refused or failed; the reason is in `upgrade_message` (written before the
    /// count is bumped).
    pub upgrades_failed: AtomicU64,
    /// The running master's version label (`cli::main_with`).
    label: [AtomicU8; LABEL_LEN],
    /// The outcome of the last upgrade: why it was refused or failed, or what it did.
    upgrade_message: [AtomicU8; MESSAGE_LEN],
}

impl Header {
    pub fn operation(&self) -> Operation {
        Operation::from_u32(self.operation.load(Ordering::Acquire)).unwrap_or(Operation::Idle)
    }

    pub fn set_operation(&self, op: Operation) {
        self.operation.store(op as u32, Ordering::Release);
    }

    pub fn label(&self) -> String {
        read_text(&self.label)
    }

    pub fn set_label(&self, label: &str) {
        write_text(&self.label, label);
    }

    pub fn upgrade_message(&self) -> String {
        read_text(&self.upgrade_message)
    }

    /// Record the outcome of an upgrade. `failed`: count it as refused or failed (the
    /// message is in place before the count moves); else as done.
    pub fn finish_upgrade(&self, failed: bool, message: &str) {
        write_text(&self.upgrade_message, message);
        let count = if failed { &self.upgrades_failed } else { &self.upgrades };
        count.fetch_add(1, Ordering::Release);
    }

    /// (upgrades done, upgrades refused or failed).
    pub fn upgrade_counts(&self) -> (u64, u64) {
        (self.upgrades.load(Ordering::Acquire), self.upgrades_failed.load(Ordering::Acquire))
    }
}

/// One process's counters. Written by that process (the master writes identity fields
/// before spawning and exit statistics after reaping).
#[repr(C, align(64))]
pub struct Slot {
    pub pid: AtomicU32,
    role: AtomicU32,
    /// Index of the process within its role group (gateway/worker id).
    pub id: AtomicU32,
    state: AtomicU32,
    /// Unix milliseconds, refreshed every second by the process: a stale value means hung.
    pub heartbeat: AtomicU64,
    /// Every live TCP/Unix connection of the process (clients, links, register).
    pub connections: AtomicU64,
    pub send_fail: AtomicU64,
    pub timers: AtomicU64,
    /// Complete messages/packets decoded.
    pub total_request: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    /// Resident memory in bytes, refreshed every second.
    pub memory: AtomicU64,
    pub exit_count: AtomicU64,
    pub last_exit_status: AtomicU64,
    /// Limits hit (gateway): connections refused or paused, oversize messages, handshake and
    /// idle timeouts, slow clients closed, groups/uid refusals (then rates and backpressure below).
    pub limit_conn: AtomicU64,
    pub limit_size: AtomicU64,
    pub limit_handshake: AtomicU64,
    pub limit_idle: AtomicU64,
    pub limit_slow: AtomicU64,
    pub limit_index: AtomicU64,
    pub bad_input: AtomicU64,
    /// Clients over their rate (`max_messages_per_second`, `max_bytes_per_second`): paused
    /// or, with `rate_policy = "close"`, closed.
    pub limit_rate: AtomicU64,
    /// Clients paused because their worker link was above its high-water mark.
    pub limit_backpressure: AtomicU64,
    name: [AtomicU8; TEXT_LEN],
    listen: [AtomicU8; TEXT_LEN],
}

impl Slot {
    pub fn role(&self) -> Role {
        Role::from_u32(self.role.load(Ordering::Relaxed)).unwrap_or(Role::Empty)
    }

    pub fn state(&self) -> Option<State> {
        State::from_u32(self.state.load(Ordering::Acquire))
    }

    pub fn set_state(&self, s: State) {
        self.state.store(s as u32, Ordering::Release);
    }

    pub fn name(&self) -> String {
        read_text(&self.name)
    }

    pub fn listen(&self) -> String {
        read_text(&self.listen)
    }

    /// Master: fill the identity of a slot about to be used by a new child.
    pub fn claim(&self, role: Role, id: u32, name: &str, listen: &str) {
        for c in [&self.connections, &self.send_fail, &self.timers, &self.total_request] {
            c.store(0, Ordering::Relaxed);
        }
        for c in [&self.bytes_read, &self.bytes_written, &self.memory, &self.heartbeat] {
            c.store(0, Ordering::Relaxed);
        }
        self.pid.store(0, Ordering::Relaxed);
        self.role.store(role as u32, Ordering::Relaxed);
        self.id.store(id, Ordering::Relaxed);
        write_text(&self.name, name);
        write_text(&self.listen, listen);
        self.set_state(State::Starting);
    }

    /// Count one more of `c`.
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set(c: &AtomicU64, v: u64) {
        c.store(v, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// Refresh heartbeat and memory (called once a second by the owning process).
    pub fn tick(&self) {
        Slot::set(&self.heartbeat, unix_millis());
        Slot::set(&self.memory, rss_bytes());
    }
}

/// Store `s` NUL-padded, cut to leave at least one NUL and at a character boundary.
fn write_text<const N: usize>(dst: &[AtomicU8; N], s: &str) {
    let mut end = s.len().min(N - 1);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let b = &s.as_bytes()[..end];
    for (i, cell) in dst.iter().enumerate() {
        cell.store(b.get(i).copied().unwrap_or(0), Ordering::Relaxed);
    }
}

fn read_text<const N: usize>(src: &[AtomicU8; N]) -> String {
    let bytes: Vec<u8> = src.iter().map(|c| c.load(Ordering::Relaxed)).take_while(|&b| b != 0).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The mapped region.
pub struct Shm {
    ptr: *mut u8,
    len: usize,
}

// The region holds only atomics; sharing references across threads is as safe as across
// processes.
unsafe impl Send for Shm {}
unsafe impl Sync for Shm {}

impl Shm {
    /// Anonymous private region for a process started without a master (in-process tests).
    #[cfg(test)]
    pub fn anonymous(slots: usize) -> io::Result<Shm> {
        let len = Shm::size(slots);
        // SAFETY: a fresh anonymous mapping, owned by the returned value.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let shm = Shm { ptr: ptr as *mut u8, len };
        shm.header().slots.store(slots as u32, Ordering::Relaxed);
        shm.header().magic.store(MAGIC, Ordering::Relaxed);
        shm.header().version.store(VERSION, Ordering::Relaxed);
        Ok(shm)
    }

    fn size(slots: usize) -> usize {
        std::mem::size_of::<Header>().next_multiple_of(64) + slots * std::mem::size_of::<Slot>()
    }

    /// Master: create (or truncate) the file with `slots` zeroed slots.
    pub fn create(path: &Path, slots: usize) -> io::Result<Shm> {
        let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
        let len = Shm::size(slots);
        f.set_len(len as u64)?;
        let shm = Shm::map(&f, len, true)?;
        let h = shm.header();
        h.version.store(VERSION, Ordering::Relaxed);
        h.slots.store(slots as u32, Ordering::Relaxed);
        h.started.store(unix_millis() / 1000, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        Ok(shm)
    }

    /// The layout version of the region at `path` (an error when it is no statistics file).
    pub fn layout(path: &Path) -> io::Result<u32> {
        let f = OpenOptions::new().read(true).open(path)?;
        if (f.metadata()?.len() as usize) < Shm::size(0) {
            return Err(io::Error::other("statistics file too small"));
        }
        let shm = Shm::map(&f, Shm::size(0), false)?;
        let h = shm.header();
        if h.magic.load(Ordering::Acquire) != MAGIC {
            return Err(io::Error::other("not a statistics file"));
        }
        Ok(h.version.load(Ordering::Relaxed))
    }

    /// Open an existing region (children and a re-executed master read-write, `status`
    /// read-only).
    pub fn open(path: &Path, writable: bool) -> io::Result<Shm> {
        let f = OpenOptions::new().read(true).write(writable).open(path)?;
        let len = f.metadata()?.len() as usize;
        if len < Shm::size(0) {
            return Err(io::Error::other("statistics file too small"));
        }
        let shm = Shm::map(&f, len, writable)?;
        let h = shm.header();
        if h.magic.load(Ordering::Acquire) != MAGIC || h.version.load(Ordering::Relaxed) != VERSION {
            return Err(io::Error::other("not a statistics file of this version"));
        }
        if Shm::size(h.slots.load(Ordering::Relaxed) as usize) > len {
            return Err(io::Error::other("statistics file truncated"));
        }
        Ok(shm)
    }

    fn map(f: &std::fs::File, len: usize, writable: bool) -> io::Result<Shm> {
        let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        // SAFETY: mapping a regular file we opened, of at least `len` bytes.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, f.as_raw_fd(), 0) };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Shm { ptr: ptr as *mut u8, len })
    }

    pub fn header(&self) -> &Header {
        // SAFETY: the mapping starts with a Header (size checked at open/create), which
        // consists of atomics only, valid for any bit pattern, aligned by mmap.
        unsafe { &*(self.ptr as *const Header) }
    }

    pub fn slot_count(&self) -> usize {
        self.header().slots.load(Ordering::Relaxed) as usize
    }

    /// Slot `i`; `None` past the end.
    pub fn slot(&self, i: usize) -> Option<&Slot> {
        if i >= self.slot_count() {
            return None;
        }
        let off = std::mem::size_of::<Header>().next_multiple_of(64) + i * std::mem::size_of::<Slot>();
        if off + std::mem::size_of::<Slot>() > self.len {
            return None;
        }
        // SAFETY: in bounds (checked), 64-aligned (page-aligned base + multiples of 64),
        // atomics only.
        Some(unsafe { &*(self.ptr.add(off) as *const Slot) })
    }

    pub fn slots(&self) -> impl Iterator<Item = &Slot> {
        (0..self.slot_count()).filter_map(|i| self.slot(i))
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        // SAFETY: unmapping what `map`/`anonymous` mapped; no references outlive self.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

/// A process's own slot, owning its mapping.
pub struct Stats {
    shm: Shm,
    index: usize,
}

impl Stats {
    /// A slot nobody else sees (in-process tests).
    #[cfg(test)]
    pub fn private() -> io::Result<Stats> {
        let s = Stats { shm: Shm::anonymous(1)?, index: 0 };
        s.slot().pid.store(std::process::id(), Ordering::Relaxed);
        Ok(s)
    }

    /// Attach to slot `index` (given by the master) of the region at `path`.
    pub fn attach(path: &Path, index: usize) -> io::Result<Stats> {
        let shm = Shm::open(path, true)?;
        if shm.slot(index).is_none() {
            return Err(io::Error::other(format!("no statistics slot {index}")));
        }
        let s = Stats { shm, index };
        s.slot().pid.store(std::process::id(), Ordering::Relaxed);
        Ok(s)
    }

    pub fn slot(&self) -> &Slot {
        // The index was checked when attaching.
        self.shm.slot(self.index).unwrap_or_else(|| unreachable!("slot checked at attach"))
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Resident set size of this process, from /proc/self/statm.
pub fn rss_bytes() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/statm") else { return 0 };
    let pages: u64 = s.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no memory effects.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    pages * page
}

/// True if a process with this pid exists (signal 0).
pub fn pid_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence/permission.
    pid != 0 && unsafe { libc::kill(pid as i32, 0) } == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_shared_through_the_file() {
        let dir = std::env::temp_dir().join(format!("gw-stats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let master = Shm::create(&path, 4).unwrap();
        master.slot(2).unwrap().claim(Role::Gateway, 1, "ChatGateway", "websocket://0.0.0.0:7272");
        let child = Shm::open(&path, true).unwrap();
        let slot = child.slot(2).unwrap();
        Slot::bump(&slot.total_request);
        slot.set_state(State::Ready);
        let reader = Shm::open(&path, false).unwrap();
        let r = reader.slot(2).unwrap();
        assert_eq!(r.role(), Role::Gateway);
        assert_eq!(r.name(), "ChatGateway");
        assert_eq!(r.listen(), "websocket://0.0.0.0:7272");
        assert_eq!(Slot::get(&r.total_request), 1);
        assert_eq!(r.state(), Some(State::Ready));
        assert!(reader.slot(4).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_header_carries_the_label_and_the_upgrade_outcome() {
        let dir = std::env::temp_dir().join(format!("gw-stats-hdr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let master = Shm::create(&path, 2).unwrap();
        let h = master.header();
        h.set_label("0.1.0+v2");
        h.set_operation(Operation::Upgrade);
        h.finish_upgrade(true, "upgrade refused: a reload is in progress");
        let reader = Shm::open(&path, false).unwrap();
        let r = reader.header();
        assert_eq!(r.label(), "0.1.0+v2");
        assert_eq!(r.operation(), Operation::Upgrade);
        assert_eq!(r.upgrade_counts(), (0, 1));
        assert_eq!(r.upgrade_message(), "upgrade refused: a reload is in progress");
        h.finish_upgrade(false, "done");
        assert_eq!((r.upgrade_counts(), r.upgrade_message().as_str()), ((1, 1), "done"));
        // Too long: cut at a character boundary, always NUL-terminated.
        h.set_label(&"é".repeat(40));
        assert_eq!(r.label(), "é".repeat(23));
        h.finish_upgrade(true, &"x".repeat(300));
        assert_eq!(r.upgrade_message().len(), MESSAGE_LEN - 1);
        assert_eq!(Shm::layout(&path).unwrap(), VERSION);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_foreign_files() {
        let dir = std::env::temp_dir().join(format!("gw-stats-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        assert!(Shm::open(&path, false).is_err());
        assert!(Shm::layout(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
