//! Upkeep of `realtime.messages`' day partitions while this CDC leads.
//!
//! `realtime.messages` (database broadcasts and chat messages) is partitioned by day, as
//! Supabase Realtime's is. Its default partition takes any row whose day has no partition, so an
//! insert never fails; this task keeps the days ahead partitioned and drops the days older than
//! the retention (`REALTIME_MESSAGE_RETENTION`), by calling
//! `realtime.maintain_messages_partitions` (migration 0004) when the CDC becomes leader and every
//! hour after. Only the leader does it, so two CDCs never race to create the same partition.

use crate::health::Role;
use crate::postgres_error::describe;
use nself_realtime_shared::postgres_tls::Database;
use std::time::Duration;
use tokio::sync::watch;

/// How often the partitions are looked after.
const EVERY: Duration = Duration::from_secs(3600);
/// Days after today kept partitioned.
const DAYS_AHEAD: i32 = 3;

/// Looks after the partitions whenever `role` is [`Role::Leader`], until `role`'s sender is
/// dropped.
pub async fn run(database: Database, retention: Duration, mut role: watch::Receiver<Role>) {
    loop {
        if role.wait_for(|r| *r == Role::Leader).await.is_err() {
            return;
        }
        match maintain(&database, retention).await {
            Ok(dropped) if dropped > 0 => {
                tracing::info!(
                    dropped,
                    "dropped realtime.messages rows past their retention"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not maintain realtime.messages partitions"),
        }
        let demoted = role.wait_for(|r| *r != Role::Leader);
        let _ = tokio::time::timeout(EVERY, demoted).await;
    }
}

/// One pass; returns how many messages went.
pub async fn maintain(database: &Database, retention: Duration) -> Result<i32, String> {
    let (client, connection) = database.connect().await.map_err(|e| describe(&e))?;
    let connection = tokio::spawn(connection);
    let seconds = retention.as_secs_f64();
    let result = client
        .query_one(
            "SELECT realtime.maintain_messages_partitions(make_interval(secs => $1), $2)",
            &[&seconds, &DAYS_AHEAD],
        )
        .await
        .map(|row| row.get::<_, i32>(0))
        .map_err(|e| describe(&e));
    drop(client);
    let _ = connection.await;
    result
}
