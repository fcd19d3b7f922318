//! Readings from Linux `/proc`: the server's resident memory and CPU time, the kernel's TCP socket
//! memory, this process's open-file limit, and the page size and clock tick from the auxiliary vector.

use std::path::PathBuf;

/// A `/proc` file that could not be read or did not say what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The file could not be read (for example: no such process).
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file was read but the field was missing or malformed.
    #[error("no {field} in {path}")]
    Missing { path: PathBuf, field: &'static str },
}

/// The number that `parse` reads as `field` out of the file at `path`.
fn read(
    path: String,
    field: &'static str,
    parse: fn(&str) -> Option<u64>,
) -> Result<u64, ProcError> {
    let path = PathBuf::from(path);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text).ok_or(ProcError::Missing { path, field }),
        Err(source) => Err(ProcError::Read { path, source }),
    }
}

/// The word after `key` on the first line starting with `prefix`.
fn after(text: &str, prefix: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(prefix))?;
    let mut words = line.split_whitespace().skip_while(|w| *w != key);
    words.nth(1)?.parse().ok()
}

/// Resident set size of process `pid`, in KiB (`VmRSS` in `/proc/<pid>/status`).
pub fn vm_rss_kib(pid: u32) -> Result<u64, ProcError> {
    read(format!("/proc/{pid}/status"), "VmRSS", |t| {
        after(t, "VmRSS:", "VmRSS:")
    })
}

/// User plus system CPU time of process `pid`, in clock ticks (`/proc/<pid>/stat`).
pub fn cpu_ticks(pid: u32) -> Result<u64, ProcError> {
    read(format!("/proc/{pid}/stat"), "utime/stime", |stat| {
        // The command name is in parentheses and may contain spaces: count fields after the last
        // ')'. Fields after the name start at field 3 (state); utime is field 14, stime field 15.
        let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
        let utime: u64 = fields.nth(11)?.parse().ok()?;
        Some(utime + fields.next()?.parse::<u64>().ok()?)
    })
}

/// Pages of memory in TCP socket buffers, machine-wide (`TCP: ... mem N` in `/proc/net/sockstat`).
pub fn tcp_mem_pages() -> Result<u64, ProcError> {
    read("/proc/net/sockstat".to_owned(), "TCP mem", |t| {
        after(t, "TCP:", "mem")
    })
}

/// The soft limit on open files of this process, if it is a number.
pub fn open_files_limit() -> Option<u64> {
    // `Max open files  <soft>  <hard>  files`: the word after the first `files`.
    let soft = |t: &str| after(t, "Max open files", "files");
    read("/proc/self/limits".to_owned(), "Max open files", soft).ok()
}

/// Page size and clock ticks per second, from `/proc/self/auxv` (4096 and 100 if it can't be read).
pub fn page_size_and_clock_ticks() -> (u64, u64) {
    const AT_PAGESZ: u64 = 6;
    const AT_CLKTCK: u64 = 17;
    let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
    // Native-endian `(u64 key, u64 value)` pairs.
    let value = |key: u64| {
        auxv.chunks_exact(16).find_map(|pair| {
            let k = u64::from_ne_bytes(pair.get(..8)?.try_into().ok()?);
            let v = u64::from_ne_bytes(pair.get(8..16)?.try_into().ok()?);
            (k == key && v > 0).then_some(v)
        })
    };
    (
        value(AT_PAGESZ).unwrap_or(4096),
        value(AT_CLKTCK).unwrap_or(100),
    )
}
