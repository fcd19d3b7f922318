//! Why a scenario could not run to the end (as opposed to what it measured: failed connections,
//! drops and refusals are results, reported in the table, not errors).

use crate::conn::ConnError;
use crate::procfs::ProcError;
use crate::worker::WorkerError;

/// A run that had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// `--server-pid` names a process whose `/proc` files cannot be read.
    #[error("cannot measure the server process (--server-pid)")]
    Server(#[source] ProcError),
    /// Worker processes could not be started.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// A WebSocket publisher could not connect or join its channels.
    #[error("publisher connection {index} failed")]
    Publisher {
        /// Which publisher connection.
        index: u64,
        /// What went wrong.
        #[source]
        source: ConnError,
    },
    /// Every subscriber failed, so there is nothing to measure.
    #[error("no subscriber could join (failures: {0})")]
    NoSubscribers(String),
}
