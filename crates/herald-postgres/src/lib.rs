//! Postgres Changes for Herald: row changes streamed from PostgreSQL logical replication (`pgoutput`)
//! to the channels that subscribed to them, with filters and row-level security, recoverable from a
//! per-table log; broadcasts sent from SQL with `realtime.send(...)` and `herald.send(...)`; and the
//! policy checks of private channels (Realtime Authorization).
//!
//! [`Postgres::start`] spawns four tasks: the replication consumer (leader lock, slot, reconnects),
//! the processor (matching, RLS, delivery, subscriptions), the batcher of channel policy checks and
//! a janitor for sent rows. Sessions talk to the processor through [`Postgres::subscribe`] and
//! [`Postgres::unsubscribe`], and ask [`Postgres::authorize`] about private channels.

pub mod authz;
pub mod catalog;
pub mod change;
pub mod filter;
pub mod index;
pub mod install;
pub mod processor;
pub mod replication;
pub mod rls;
pub mod values;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use herald_core::Hub;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

pub use authz::{AuthzError, Check, Permissions};
pub use index::Group;
pub use processor::{Command, SubscribeRequest};
use replication::Feedback;

/// Table logs are history channels named `$pg:<schema>.<table>`.
pub const LOG_PREFIX: &str = "$pg:";

/// How Herald reaches the database.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The connection URL (`postgres://user:pass@host:port/db`).
    pub database_url: String,
    /// The publication whose tables are streamed.
    pub publication: String,
    /// The permanent logical replication slot.
    pub slot: String,
    /// Connections for row-level security checks and catalog reads.
    pub pool_size: usize,
    /// Where large streamed transactions wait for their commit.
    pub spill_dir: PathBuf,
}

/// Why something in this crate failed.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// A query or connection failed.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No pooled connection.
    #[error("PostgreSQL pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The pool could not be built.
    #[error("PostgreSQL pool: {0}")]
    Build(#[from] deadpool_postgres::CreatePoolError),
    /// The database URL is not valid.
    #[error("invalid database URL: {0}")]
    Url(String),
    /// Spilling a large transaction failed.
    #[error("spill file: {0}")]
    Io(#[from] std::io::Error),
    /// The history store failed.
    #[error(transparent)]
    History(#[from] herald_core::history::HistoryError),
    /// A spilled change could not be written.
    #[error("spill encoding: {0}")]
    Json(#[from] serde_json::Error),
}

/// The running Postgres Changes service of a node.
#[derive(Debug)]
pub struct Postgres {
    commands: mpsc::UnboundedSender<Command>,
    feedback: Arc<Feedback>,
    authorizer: authz::Authorizer,
}

impl Postgres {
    /// Starts the consumer, the processor and the janitor. The database need not be up: they retry.
    pub fn start(
        settings: Settings,
        hub: Arc<Hub>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Postgres>, PgError> {
        let pg_config: tokio_postgres::Config = settings
            .database_url
            .parse()
            .map_err(|e: tokio_postgres::Error| PgError::Url(e.to_string()))?;
        let manager = deadpool_postgres::Manager::from_config(
            pg_config,
            tokio_postgres::NoTls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| PgError::Url(e.to_string()))?;
        let authorizer =
            authz::Authorizer::start(pool.clone(), settings.pool_size, shutdown.clone());
        let settings = Arc::new(settings);
        let feedback = Arc::new(Feedback::default());
        let (events_tx, events_rx) = mpsc::channel(4096);
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let processor =
            processor::Processor::new(settings.clone(), pool.clone(), hub, feedback.clone());
        tokio::spawn(processor.run(events_rx, commands_rx, shutdown.clone()));
        tokio::spawn(replication::run(
            settings.clone(),
            events_tx,
            feedback.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(janitor(pool, feedback.clone(), shutdown));
        Ok(Arc::new(Postgres {
            commands: commands_tx,
            feedback,
            authorizer,
        }))
    }

    /// Asks for a channel's changes; the answer (a `system` message) goes to the session.
    pub fn subscribe(&self, req: SubscribeRequest) {
        let _ = self.commands.send(Command::Subscribe(Box::new(req)));
    }

    /// Drops a channel's subscription.
    pub fn unsubscribe(&self, session: u64, topic: &str) {
        let _ = self.commands.send(Command::Unsubscribe {
            session,
            topic: topic.to_owned(),
        });
    }

    /// Gives a channel a new role and claims (after a token refresh).
    pub fn refresh(&self, session: u64, topic: &str, group: Group) {
        let _ = self.commands.send(Command::Claims {
            session,
            topic: topic.to_owned(),
            group,
        });
    }

    /// What a token may do on a private channel, by the database's policies on `realtime.messages`.
    /// Checks arriving together are asked in one statement.
    pub async fn authorize(&self, check: Check) -> Result<Permissions, AuthzError> {
        if !self.ready() {
            return Err(AuthzError::Unavailable(
                "the database objects are not installed yet".to_owned(),
            ));
        }
        self.authorizer.check(check).await
    }

    /// True while this node streams from the slot.
    pub fn streaming(&self) -> bool {
        self.feedback.streaming.load(Ordering::Acquire)
    }

    /// True while this node holds the leader lock.
    pub fn leader(&self) -> bool {
        self.feedback.leader.load(Ordering::Acquire)
    }

    /// True while another node holds the leader lock and this one waits.
    pub fn standby(&self) -> bool {
        self.feedback.standby.load(Ordering::Acquire)
    }

    /// True once the schema is installed and the catalog read.
    pub fn ready(&self) -> bool {
        self.feedback.ready.load(Ordering::Acquire)
    }
}

/// Every minute, on the leader: deletes old message rows and touches the heartbeat.
async fn janitor(
    pool: deadpool_postgres::Pool,
    feedback: Arc<Feedback>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !feedback.leader.load(Ordering::Acquire) {
            continue;
        }
        match pool.get().await {
            Ok(client) => {
                install::clean_messages(&client).await;
                install::heartbeat(&client).await;
            }
            Err(e) => warn!(error = %e, "janitor: no database connection"),
        }
    }
}
