//! The webhook feed on PostgreSQL: notifications written unnumbered, and numbered as they are
//! sealed.
//!
//! A position cannot come from the writing transaction: a sequence value can become visible
//! after a larger one, and a transaction id makes every reader wait for the oldest transaction
//! running anywhere on the server (a report, a backup, a forgotten session) and starts again
//! low in a database restored into another server. So a commit adds its notifications to
//! `feed_unsealed`, and a reader first seals: under the lock of the one row of `feed_sealed`,
//! it moves every committed row into `feed`, numbered on from that row's `last`, in the order
//! they were written. A sealer starts only once the one before it committed, and takes a fresh
//! snapshot once it holds the lock, so a reader never sees a position while a smaller one may
//! still appear; two commits of one case are sealed in their commit order, since the second
//! began after the first had committed.

use std::sync::atomic::Ordering;

use super::PgStore;
use crate::store::StoreError;

const UNSEALED: &str = "SELECT EXISTS (SELECT 1 FROM feed_unsealed)";
/// One implicit transaction of two statements, each with its own snapshot (READ COMMITTED):
/// the lock, then the move, which sees every sealer before it.
const SEAL: &str = "SELECT last FROM feed_sealed WHERE id = 1 FOR UPDATE;
WITH taken AS (
    DELETE FROM feed_unsealed
    WHERE id IN (SELECT id FROM feed_unsealed ORDER BY id LIMIT 10000)
    RETURNING id, record
), moved AS (
    INSERT INTO feed (pos, record)
    SELECT (SELECT last FROM feed_sealed WHERE id = 1) + row_number() OVER (ORDER BY id), record
    FROM taken
    RETURNING pos
)
UPDATE feed_sealed SET last = last + (SELECT count(*) FROM moved) WHERE id = 1";

impl PgStore {
    /// Numbers the notifications committed since the last seal (up to 10,000 of them), if any.
    pub(super) async fn seal(&self) -> Result<(), StoreError> {
        let waiting = self.rows(UNSEALED, &[]).await?;
        if !waiting.first().is_some_and(|r| r.get::<_, bool>(0)) {
            return Ok(());
        }
        let client = self.client().await?;
        self.exchanges.round_trips.fetch_add(1, Ordering::Relaxed);
        client
            .batch_execute(SEAL)
            .await
            .map_err(|e| self.place.error(e))
    }
}
