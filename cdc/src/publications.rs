//! The publications the CDC streams, one per set of operations.
//!
//! `SUBSCRIBE public.posts INSERT,UPDATE` must publish only inserts and updates of that table.
//! Postgres can filter by operation itself, per publication (`WITH (publish = '...')`), so the
//! CDC keeps one publication per non-empty subset of {insert, update, delete, truncate} and puts
//! each subscribed table in the one matching its operations. Postgres then never decodes or
//! sends the operations nobody asked for, and a table subscribed for INSERT only may lack a
//! primary key without its UPDATEs being refused (Postgres refuses UPDATE/DELETE on a table
//! without replica identity only when a publication of it publishes them).
//!
//! Names: the full set is `REALTIME_PUBLICATION` itself (so a user may also manage it by hand,
//! as with Supabase's `supabase_realtime`); a subset is `<REALTIME_PUBLICATION>_<letters>` with
//! letters from `iudt` in that order (`nself_realtime_iu`). All fifteen exist from `init` on,
//! because a running replication stream only reads the publications named when it started.
//! A table in several publications (say via `public.*` and `public.posts`) gets the union of
//! their operations.

use nself_realtime_shared::subject::Operation;

/// One publication's name and the operations it publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub name: String,
    pub operations: Vec<Operation>,
}

impl Publication {
    /// The `publish` option value: `insert, update`.
    pub fn publish_option(&self) -> String {
        self.operations
            .iter()
            .map(|op| op.token())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn letter(op: Operation) -> char {
    match op {
        Operation::Insert => 'i',
        Operation::Update => 'u',
        Operation::Delete => 'd',
        Operation::Truncate => 't',
    }
}

/// The publication for exactly `operations` (order and duplicates do not matter).
/// `None` when `operations` is empty.
pub fn for_operations(base: &str, operations: &[Operation]) -> Option<Publication> {
    let ops: Vec<Operation> = Operation::ALL
        .into_iter()
        .filter(|op| operations.contains(op))
        .collect();
    if ops.is_empty() {
        return None;
    }
    let name = if ops.len() == Operation::ALL.len() {
        base.to_string()
    } else {
        format!(
            "{base}_{}",
            ops.iter().map(|&op| letter(op)).collect::<String>()
        )
    };
    Some(Publication {
        name,
        operations: ops,
    })
}

/// All fifteen publications, the full set first.
pub fn all(base: &str) -> Vec<Publication> {
    let mut sets: Vec<Vec<Operation>> = (1u8..16)
        .map(|mask| {
            Operation::ALL
                .into_iter()
                .enumerate()
                .filter(|(bit, _)| mask & (1 << bit) != 0)
                .map(|(_, op)| op)
                .collect()
        })
        .collect();
    sets.sort_by_key(|ops| std::cmp::Reverse(ops.len()));
    sets.iter()
        .filter_map(|ops| for_operations(base, ops))
        .collect()
}

/// Creates whichever of the fifteen publications are missing (tables are added by `SUBSCRIBE`),
/// each publishing a partitioned table's changes as its root's (`publish_via_partition_root`):
/// `realtime.messages` is partitioned by day, and its subscribers follow
/// `realtime.db.realtime.messages.*` whatever the partition. Publications an older version
/// created without that option get it. `base` must be a plain identifier (checked by
/// `config::plain_identifier`), so names need no quoting.
pub async fn ensure_exist(
    client: &tokio_postgres::Client,
    base: &str,
) -> Result<(), tokio_postgres::Error> {
    let wanted = all(base);
    let names: Vec<&str> = wanted.iter().map(|p| p.name.as_str()).collect();
    let existing: Vec<(String, bool)> = client
        .query(
            "SELECT pubname::text, pubviaroot FROM pg_publication WHERE pubname = ANY($1)",
            &[&names],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    for publication in &wanted {
        let statement = match existing.iter().find(|(name, _)| *name == publication.name) {
            None => format!(
                "CREATE PUBLICATION {} WITH (publish = '{}', publish_via_partition_root = true)",
                publication.name,
                publication.publish_option()
            ),
            Some((_, false)) => format!(
                "ALTER PUBLICATION {} SET (publish_via_partition_root = true)",
                publication.name
            ),
            Some((_, true)) => continue,
        };
        client.batch_execute(&statement).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Operation::*;

    #[test]
    fn names_follow_the_operation_set() {
        assert_eq!(
            for_operations("p", &[Insert, Update, Delete, Truncate])
                .unwrap()
                .name,
            "p"
        );
        assert_eq!(for_operations("p", &[Update, Insert]).unwrap().name, "p_iu");
        assert_eq!(for_operations("p", &[Delete, Delete]).unwrap().name, "p_d");
        assert_eq!(
            for_operations("p", &[Insert]).unwrap().publish_option(),
            "insert"
        );
        assert!(for_operations("p", &[]).is_none());
    }

    #[test]
    fn there_are_fifteen_distinct_publications() {
        let all = all("p");
        assert_eq!(all.len(), 15);
        assert_eq!(all[0].name, "p");
        let mut names: Vec<_> = all.iter().map(|p| p.name.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 15);
    }
}
