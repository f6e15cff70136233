//! The pid file: the master's pid in decimal, no newline (as workerman writes it), and the
//! check that a pid really is a master of ours before the CLI signals it.

use std::io;
use std::path::Path;

/// Write this process's pid.
pub fn write(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, std::process::id().to_string())
}

/// The pid in the file, if any.
pub fn read(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

pub fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// True if `pid` is alive and is a gatewayworker master (its command line is our program
/// with the `start` or `restart` command, or `master-resume` once `upgrade` re-executed it),
/// so a stale pid file never makes us signal a stranger.
pub fn is_our_master(pid: u32) -> bool {
    if !crate::stats::pid_alive(pid) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    // A zombie has an empty command line: not running any more.
    let Some(prog) = args.first().filter(|p| !p.is_empty()) else { return false };
    let ours = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "gatewayworker".into());
    let prog_name = Path::new(std::str::from_utf8(prog).unwrap_or(""))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let same_program =
        prog_name.as_deref() == Some(ours.as_str()) || prog_name.as_deref() == Some("gatewayworker");
    same_program && args.iter().any(|a| *a == b"start" || *a == b"restart" || *a == b"master-resume")
}
