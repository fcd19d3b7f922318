//! The progress line on stderr while a scenario runs: redrawn in place on a terminal, one plain line
//! every few seconds otherwise (so logs stay readable).

use std::io::{IsTerminal, Write};
use std::time::Duration;

use tokio::task::JoinHandle;

/// A running progress printer; stops when finished or dropped.
#[derive(Debug)]
pub struct Progress {
    task: JoinHandle<()>,
    tty: bool,
}

impl Progress {
    /// Prints `line()` periodically until [`Progress::finish`].
    pub fn start(line: impl Fn() -> String + Send + 'static) -> Self {
        let tty = std::io::stderr().is_terminal();
        let every = if tty {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(2)
        };
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let text = line();
                let mut err = std::io::stderr().lock();
                // Progress is best effort: a closed stderr must not stop the benchmark.
                let _ = if tty {
                    write!(err, "\r{text}\x1b[K")
                } else {
                    writeln!(err, "{text}")
                };
                let _ = err.flush();
            }
        });
        Self { task, tty }
    }

    /// Stops printing and clears the line.
    pub fn finish(self) {
        self.task.abort();
        if self.tty {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
    }
}
