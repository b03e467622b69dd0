//! A backup of the store while it serves: the admin's `civicflow store backup FILE`.

use std::io::Write;

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::auth::Caller;
use super::{ApiError, AppState, ErrorBody};
use crate::auth::Operation;
use crate::store::{Copied, Store, StoreError};

/// Bytes sent to the client at a time.
const PIECE: usize = 64 << 10;

/// What the thread copying the store tells the request.
enum Copying {
    Bytes(Vec<u8>),
    /// The end: the copy made, or why not, or `None` for a backend copied with its own tools.
    Done(Option<Result<Copied, StoreError>>),
}

/// Hands what the copy writes to the request, a piece at a time; fails once the client is
/// gone, which ends the copy.
struct Pieces {
    to: mpsc::Sender<Copying>,
    piece: Vec<u8>,
}

impl Write for Pieces {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.piece.extend_from_slice(buf);
        if self.piece.len() >= PIECE {
            self.flush()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.piece.is_empty() {
            return Ok(());
        }
        let piece = std::mem::take(&mut self.piece);
        self.to
            .blocking_send(Copying::Bytes(piece))
            .map_err(|_| std::io::Error::other("the client went away"))
    }
}

/// A consistent copy of the whole store, taken while it serves (commits go on; none waits
/// longer than one read of a thousand records); `civicflow store backup FILE` saves it and
/// checks it, `civicflow store restore FILE --data DIR` builds a store from it.
#[utoipa::path(get, path = "/v1/store/backup", tag = "admin",
    responses(
        (status = 200, description = "The backup: the format version, every record, a SHA-256 checksum", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 501, description = "A PostgreSQL store: back it up with PostgreSQL's own tools (`backup_unsupported`)", body = ErrorBody),
    ))]
pub async fn backup<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(Operation::Backup)?;
    let store = state.engine.store().clone();
    let (to, mut from) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut pieces = Pieces {
            to: to.clone(),
            piece: Vec::with_capacity(PIECE),
        };
        let done = store
            .backup_to(&mut pieces)
            .map(|copied| copied.and_then(|c| pieces.flush().map(|()| c).map_err(io)));
        let _ = to.blocking_send(Copying::Done(done));
    });
    let first = match from.recv().await {
        Some(Copying::Bytes(piece)) => piece,
        Some(Copying::Done(None)) => {
            return Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "backup_unsupported",
                "this server's store is PostgreSQL: back it up with PostgreSQL's own tools (pg_dump, or base backups with WAL archiving; see docs/operations.md)",
            ));
        }
        Some(Copying::Done(Some(Err(e)))) => return Err(ApiError::store(e)),
        Some(Copying::Done(Some(Ok(_)))) | None => {
            return Err(ApiError::internal("the backup ended without a byte"));
        }
    };
    let rest = futures_util::stream::unfold(from, |mut from| async move {
        match from.recv().await? {
            Copying::Bytes(piece) => Some((Ok(piece), from)),
            Copying::Done(Some(Ok(copied))) => {
                tracing::info!(
                    records = copied.records,
                    bytes = copied.bytes,
                    "a backup of the store was taken"
                );
                None
            }
            // The body ends short of its checksum: the client's check finds it incomplete.
            Copying::Done(Some(Err(e))) => {
                tracing::error!(error = %e, "a backup of the store failed");
                Some((Err(std::io::Error::other(e.to_string())), from))
            }
            Copying::Done(None) => None,
        }
    });
    let first = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) });
    let body = first.chain(rest);
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(body),
    )
        .into_response())
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Io {
        path: "the backup".to_owned(),
        detail: e.to_string(),
    }
}
