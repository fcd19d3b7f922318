//! Readings from Linux `/proc`: the server's resident memory and CPU time, the kernel's TCP socket
//! memory, this process's open-file limit, and the page size and clock tick from the auxiliary vector.

use std::path::PathBuf;

/// A `/proc` file that could not be read or did not say what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The file could not be read (for example: no such process).
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but the field was missing or malformed.
    #[error("no {field} in {path}")]
    Missing {
        /// The file.
        path: PathBuf,
        /// What was looked for.
        field: &'static str,
    },
}

fn read(path: PathBuf) -> Result<(PathBuf, String), ProcError> {
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok((path, text)),
        Err(source) => Err(ProcError::Read { path, source }),
    }
}

/// Resident set size of process `pid`, in KiB (`VmRSS` in `/proc/<pid>/status`).
pub fn vm_rss_kib(pid: u32) -> Result<u64, ProcError> {
    let (path, text) = read(PathBuf::from(format!("/proc/{pid}/status")))?;
    parse_vm_rss_kib(&text).ok_or(ProcError::Missing {
        path,
        field: "VmRSS",
    })
}

/// User plus system CPU time of process `pid`, in clock ticks (`/proc/<pid>/stat`).
pub fn cpu_ticks(pid: u32) -> Result<u64, ProcError> {
    let (path, text) = read(PathBuf::from(format!("/proc/{pid}/stat")))?;
    parse_cpu_ticks(&text).ok_or(ProcError::Missing {
        path,
        field: "utime/stime",
    })
}

/// Pages of memory in TCP socket buffers, machine-wide (`TCP: ... mem N` in `/proc/net/sockstat`).
pub fn tcp_mem_pages() -> Result<u64, ProcError> {
    let (path, text) = read(PathBuf::from("/proc/net/sockstat"))?;
    parse_tcp_mem_pages(&text).ok_or(ProcError::Missing {
        path,
        field: "TCP mem",
    })
}

/// The soft limit on open files of this process, if it is a number.
pub fn open_files_limit() -> Option<u64> {
    let (_, text) = read(PathBuf::from("/proc/self/limits")).ok()?;
    parse_open_files_limit(&text)
}

/// Page size and clock ticks per second, from `/proc/self/auxv` (4096 and 100 if it can't be read).
pub fn page_size_and_clock_ticks() -> (u64, u64) {
    let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
    let page = auxv_value(&auxv, AT_PAGESZ)
        .filter(|&v| v > 0)
        .unwrap_or(4096);
    let ticks = auxv_value(&auxv, AT_CLKTCK)
        .filter(|&v| v > 0)
        .unwrap_or(100);
    (page, ticks)
}

const AT_PAGESZ: u64 = 6;
const AT_CLKTCK: u64 = 17;

/// Looks `key` up in an auxiliary vector of native-endian `(u64 key, u64 value)` pairs.
fn auxv_value(auxv: &[u8], key: u64) -> Option<u64> {
    auxv.chunks_exact(16).find_map(|pair| {
        let k = u64::from_ne_bytes(pair.get(..8)?.try_into().ok()?);
        let v = u64::from_ne_bytes(pair.get(8..16)?.try_into().ok()?);
        (k == key).then_some(v)
    })
}

fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name is in parentheses and may contain spaces: count fields after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    // Fields after the name start at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn parse_tcp_mem_pages(sockstat: &str) -> Option<u64> {
    let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == "mem" {
            return words.next()?.parse().ok();
        }
    }
    None
}

fn parse_open_files_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
