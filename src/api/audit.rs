//! The audit log for auditors: its entries (all, by case, by time), its signed tree heads, and
//! the inclusion and consistency proofs that let anyone check, with the log's public keys
//! alone, that an entry is in the log a head signed and that the log only grew.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::{ApiError, AppState, ErrorBody};
use crate::audit::merkle::{Hash, ProofError, leaf_hash};
use crate::audit::{Entry, LogError, TreeHead};
use crate::auth::Operation;
use crate::case::CaseId;
use crate::store::Store;

/// The most entries one page holds.
const MAX_PAGE: usize = 1_000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EntriesQuery {
    /// The entries about this case, in order.
    #[param(value_type = Option<String>, format = Uuid)]
    case_id: Option<CaseId>,
    /// The entries logged at or after this time (RFC 3339) …
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<Timestamp>,
    /// … and before this one.
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<Timestamp>,
    /// The first index (default 0).
    from: Option<u64>,
    /// At most this many (default and most: 1,000).
    limit: Option<usize>,
}

/// An entry as stored: the bytes its leaf hashes (`raw`), and what they say.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoredEntry {
    pub index: u64,
    /// `SHA-256(0x00 || raw)`, hex.
    pub leaf_hash: String,
    /// The stored bytes, as text: hash these to check the leaf.
    pub raw: String,
    /// The entry, read; `null` if the stored bytes cannot be read.
    pub entry: Option<Entry>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EntryPage {
    /// How many entries the log holds.
    pub size: u64,
    pub entries: Vec<StoredEntry>,
    /// Where the next page starts (`from`), if there is more.
    pub next: Option<u64>,
}

fn stored(index: u64, bytes: &[u8]) -> StoredEntry {
    StoredEntry {
        index,
        leaf_hash: hex::encode(leaf_hash(bytes)),
        raw: String::from_utf8_lossy(bytes).into_owned(),
        entry: Entry::decode(bytes).ok(),
    }
}

fn log_error(e: LogError) -> ApiError {
    match e {
        LogError::Store(e) => ApiError::store(e),
        LogError::Proof(e @ (ProofError::NotInTree { .. } | ProofError::BeyondLog { .. })) => {
            ApiError::new(StatusCode::NOT_FOUND, "not_in_log", e.to_string())
        }
        LogError::Proof(e) => ApiError::bad_request("invalid_proof_request", e.to_string()),
        LogError::Gap { .. } => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "audit_log_damaged",
            format!("{e}; `civicflow audit verify` names what does not match"),
        ),
    }
}

/// The audit log's entries: from an index on, about one case, or logged in a time window.
#[utoipa::path(get, path = "/v1/audit/entries", tag = "audit", params(EntriesQuery),
    responses(
        (status = 200, description = "A page of entries", body = EntryPage),
        (status = 403, description = "Not an auditor", body = ErrorBody),
    ))]
pub async fn entries<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    q: Result<Query<EntriesQuery>, QueryRejection>,
) -> Result<Json<EntryPage>, ApiError> {
    caller.require(Operation::ReadAudit)?;
    let Query(q) = q.map_err(ApiError::from_query)?;
    let limit = q.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
    let log = state.engine.audit();
    let store = log.store();
    let (size, _) = log.head().await.map_err(log_error)?;
    let from = q.from.unwrap_or(0);
    let mut entries = Vec::new();
    let mut next = None;
    if let Some(case_id) = q.case_id {
        let indexes = store
            .audit_of_case(case_id)
            .await
            .map_err(ApiError::store)?;
        let mut wanted = indexes.into_iter().filter(|i| *i >= from);
        for index in wanted.by_ref().take(limit) {
            if let Some((i, bytes)) = read_one(store, index).await? {
                entries.push(stored(i, &bytes));
            }
        }
        next = wanted.next();
    } else {
        let start = match q.since {
            Some(since) => from.max(first_logged_at(store, size, since).await?),
            None => from,
        };
        let page = store
            .audit_entries(start, limit + 1)
            .await
            .map_err(ApiError::store)?;
        for (index, bytes) in page {
            let entry = stored(index, &bytes);
            let late = q
                .until
                .zip(entry.entry.as_ref())
                .is_some_and(|(until, e)| e.logged_at >= until);
            if late {
                break;
            }
            if entries.len() == limit {
                next = Some(index);
                break;
            }
            entries.push(entry);
        }
    }
    Ok(Json(EntryPage {
        size,
        entries,
        next,
    }))
}

async fn read_one<S: Store>(store: &S, index: u64) -> Result<Option<(u64, Vec<u8>)>, ApiError> {
    let page = store
        .audit_entries(index, 1)
        .await
        .map_err(ApiError::store)?;
    Ok(page.into_iter().find(|(i, _)| *i == index))
}

/// The first index logged at or after `since`: entries are logged in time order, so a binary
/// search (an unreadable entry counts as earlier, so the search goes on past it).
async fn first_logged_at<S: Store>(
    store: &S,
    size: u64,
    since: Timestamp,
) -> Result<u64, ApiError> {
    let (mut low, mut high) = (0, size);
    while low < high {
        let mid = low + (high - low) / 2;
        let at = read_one(store, mid)
            .await?
            .and_then(|(_, bytes)| Entry::decode(&bytes).ok())
            .map(|e| e.logged_at);
        if at.is_some_and(|at| at >= since) {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    Ok(low)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HeadsQuery {
    /// Heads of this size or more (default 0).
    from_size: Option<u64>,
    /// At most this many (default and most: 1,000).
    limit: Option<usize>,
}

/// The signed tree heads, in size order.
#[utoipa::path(get, path = "/v1/audit/heads", tag = "audit", params(HeadsQuery),
    responses(
        (status = 200, description = "Signed tree heads", body = Vec<TreeHead>),
        (status = 403, description = "Not an auditor", body = ErrorBody),
    ))]
pub async fn heads<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    q: Result<Query<HeadsQuery>, QueryRejection>,
) -> Result<Json<Vec<TreeHead>>, ApiError> {
    caller.require(Operation::ReadAudit)?;
    let Query(q) = q.map_err(ApiError::from_query)?;
    let limit = q.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
    let heads = state
        .engine
        .store()
        .tree_heads(q.from_size.unwrap_or(0), limit)
        .await
        .map_err(ApiError::store)?;
    Ok(Json(heads))
}

/// The latest signed tree head.
#[utoipa::path(get, path = "/v1/audit/heads/latest", tag = "audit",
    responses(
        (status = 200, description = "The signed tree head of the largest size", body = TreeHead),
        (status = 404, description = "No head is signed yet", body = ErrorBody),
        (status = 403, description = "Not an auditor", body = ErrorBody),
    ))]
pub async fn latest_head<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
) -> Result<Json<TreeHead>, ApiError> {
    caller.require(Operation::ReadAudit)?;
    state
        .engine
        .store()
        .latest_tree_head()
        .await
        .map_err(ApiError::store)?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_tree_head",
                "no tree head is signed yet: the log is empty, or its first head is seconds away",
            )
        })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    /// The entry.
    index: u64,
    /// The size of the tree (a signed head's); default: the latest head's.
    size: Option<u64>,
}

/// An entry's inclusion proof (RFC 9162 §2.1.3).
#[derive(Debug, Serialize, ToSchema)]
pub struct InclusionProof {
    pub index: u64,
    pub size: u64,
    pub leaf_hash: String,
    /// The root the proof leads to: a head of this size signs it.
    pub root: String,
    /// The audit path, bottom up, hex.
    pub proof: Vec<String>,
}

fn hexes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(hex::encode).collect()
}

/// The size a proof is asked for, or the latest head's.
async fn size_or_latest<S: Store>(store: &S, size: Option<u64>) -> Result<u64, ApiError> {
    match size {
        Some(size) => Ok(size),
        None => store
            .latest_tree_head()
            .await
            .map_err(ApiError::store)?
            .map(|h| h.size)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "no_tree_head",
                    "no tree head is signed yet: give `size`",
                )
            }),
    }
}

/// Proves that an entry is in the tree of the first `size` entries.
#[utoipa::path(get, path = "/v1/audit/proofs/inclusion", tag = "audit", params(InclusionQuery),
    responses(
        (status = 200, description = "The inclusion proof", body = InclusionProof),
        (status = 404, description = "No such entry in a tree of that size", body = ErrorBody),
        (status = 403, description = "Not an auditor", body = ErrorBody),
    ))]
pub async fn inclusion<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    q: Result<Query<InclusionQuery>, QueryRejection>,
) -> Result<Json<InclusionProof>, ApiError> {
    caller.require(Operation::ReadAudit)?;
    let Query(q) = q.map_err(ApiError::from_query)?;
    let log = state.engine.audit();
    let size = size_or_latest(log.store(), q.size).await?;
    let (leaf, proof) = log.inclusion(q.index, size).await.map_err(log_error)?;
    let root = log.root(size).await.map_err(log_error)?;
    Ok(Json(InclusionProof {
        index: q.index,
        size,
        leaf_hash: hex::encode(leaf),
        root: hex::encode(root),
        proof: hexes(&proof),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    /// The smaller tree's size (a head the auditor kept).
    from: u64,
    /// The larger tree's size; default: the latest head's.
    to: Option<u64>,
}

/// A consistency proof (RFC 9162 §2.1.4): the larger tree extends the smaller.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsistencyProof {
    pub from: u64,
    pub to: u64,
    pub proof: Vec<String>,
}

/// Proves that the tree of the first `to` entries extends the tree of the first `from`.
#[utoipa::path(get, path = "/v1/audit/proofs/consistency", tag = "audit", params(ConsistencyQuery),
    responses(
        (status = 200, description = "The consistency proof", body = ConsistencyProof),
        (status = 400, description = "`from` is larger than `to`", body = ErrorBody),
        (status = 404, description = "The log is smaller than `to`", body = ErrorBody),
        (status = 403, description = "Not an auditor", body = ErrorBody),
    ))]
pub async fn consistency<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    q: Result<Query<ConsistencyQuery>, QueryRejection>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    caller.require(Operation::ReadAudit)?;
    let Query(q) = q.map_err(ApiError::from_query)?;
    let log = state.engine.audit();
    let to = size_or_latest(log.store(), q.to).await?;
    let proof = log.consistency(q.from, to).await.map_err(log_error)?;
    Ok(Json(ConsistencyProof {
        from: q.from,
        to,
        proof: hexes(&proof),
    }))
}
