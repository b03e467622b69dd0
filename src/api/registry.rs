//! The registry's door: agencies publish and deprecate their adapters, admins publish
//! workflows, everyone may list what is loaded and read the registry's history. A publication
//! is checked exactly as `civicflow validate` checks files, and takes effect without a restart.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, StringRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::auth::Caller;
use super::{ApiError, AppState, ErrorBody, shown_without};
use crate::auth::Operation;
use crate::engine::TrialError;
use crate::registry::{Kind, PublishError, Published, Retire};
use crate::store::Store;
use crate::workflow::definition::{Definitions, SchemaViolation};

fn publish_error(e: PublishError) -> ApiError {
    match e {
        PublishError::Invalid(problems) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_definition",
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        )
        .with_fields(
            problems
                .iter()
                .map(|d| SchemaViolation {
                    field: format!("{}:{}", d.pos, d.code),
                    message: d.message.clone(),
                })
                .collect(),
        ),
        PublishError::NotYours { .. } => {
            ApiError::new(StatusCode::FORBIDDEN, "not_your_namespace", e.to_string())
        }
        PublishError::Exists { .. } | PublishError::AlreadyDeprecated { .. } => {
            ApiError::new(StatusCode::CONFLICT, "immutable", e.to_string())
        }
        PublishError::Unknown { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_definition", e.to_string())
        }
        PublishError::WrongKind { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "wrong_kind",
            e.to_string(),
        ),
        PublishError::Compile(e) => ApiError::internal(e),
        PublishError::Store(e) => ApiError::store(e),
    }
}

async fn publish<S: Store + Clone>(
    state: &AppState<S>,
    caller: &Caller,
    kind: Kind,
    body: Result<String, StringRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Operation::Publish)?;
    let text = body.map_err(|e| ApiError::new(e.status(), "invalid_body", e.body_text()))?;
    let now = state.engine.now();
    let engine = &state.engine;
    let record = state
        .registry
        .publish(kind, &text, &caller.0, now, |version, defs| {
            engine.set_definitions(version, defs)
        })
        .await
        .map_err(publish_error)?;
    Ok((StatusCode::CREATED, Json(summary(&record))))
}

/// Publishes an adapter manifest (YAML in the body). An agency publishes only under its own
/// name; a published version never changes.
#[utoipa::path(post, path = "/v1/adapters", tag = "registry",
    request_body(content = String, content_type = "application/yaml", description = "The adapter manifest"),
    responses(
        (status = 201, description = "Published; in effect at once", body = Object),
        (status = 403, description = "Another agency's namespace", body = ErrorBody),
        (status = 409, description = "That version is already published", body = ErrorBody),
        (status = 422, description = "The manifest's problems, located, as `civicflow validate` gives them", body = ErrorBody),
    ))]
pub async fn publish_adapter<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    body: Result<String, StringRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    publish(&state, &caller, Kind::Adapter, body).await
}

/// Publishes a workflow (YAML in the body; admin). New cases may start on it at once.
#[utoipa::path(post, path = "/v1/workflows", tag = "registry",
    request_body(content = String, content_type = "application/yaml", description = "The workflow file"),
    responses(
        (status = 201, description = "Published; in effect at once", body = Object),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 409, description = "That version is already published", body = ErrorBody),
        (status = 422, description = "The workflow's problems, located; a pin of a deprecated adapter names its replacement", body = ErrorBody),
    ))]
pub async fn publish_workflow<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    body: Result<String, StringRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    publish(&state, &caller, Kind::Workflow, body).await
}

/// Where a loaded definition came from: published (when, by whom) or bundled with the server.
fn with_source(v: &mut Value, published: Option<&Published>) {
    match published {
        Some(p) => {
            v["source"] = json!("published");
            v["published_at"] = json!(p.published_at);
            v["published_by"] = json!(p.published_by);
        }
        None => v["source"] = json!("bundled"),
    }
}

/// For a reader of the registry: what was published, and the definitions this node runs.
async fn loaded<S: Store + Clone>(
    state: &AppState<S>,
    caller: &Caller,
) -> Result<(Vec<Published>, Arc<Definitions>), ApiError> {
    caller.require(Operation::ReadRegistry)?;
    let published = state.registry.published().await.map_err(ApiError::store)?;
    Ok((published, state.engine.definitions()))
}

/// Every loaded adapter version: bundled with the server or published, and whether deprecated.
#[utoipa::path(get, path = "/v1/adapters", tag = "registry",
    responses((status = 200, description = "`items`", body = Object)))]
pub async fn list_adapters<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let (published, defs) = loaded(&state, &caller).await?;
    let items: Vec<Value> = defs
        .adapters()
        .map(|a| {
            let found = published.iter().find(|p| {
                p.kind == Kind::Adapter && a.reference == format!("{}@{}", p.id, p.version)
            });
            let mut v = json!({"adapter": a.reference, "agency": a.agency, "title": a.title});
            with_source(&mut v, found);
            if let Some(p) = found {
                v["deprecated"] = json!(p.deprecated);
            }
            v
        })
        .collect();
    Ok(Json(json!({"items": items})))
}

/// Every loaded workflow version: bundled with the server or published, its statutory
/// deadline and its steps (with the adapter version and deadline of each), and whether it is
/// the version new cases start on.
#[utoipa::path(get, path = "/v1/workflows", tag = "registry",
    responses((status = 200, description = "`items`", body = Object)))]
pub async fn list_workflows<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let (published, defs) = loaded(&state, &caller).await?;
    let items: Vec<Value> = defs
        .workflows()
        .map(|w| {
            let newest = defs.workflow(&w.name, None).map(|n| n.version) == Some(w.version);
            let steps: Vec<Value> = w
                .steps
                .iter()
                .map(|s| {
                    json!({
                        "id": s.id,
                        "adapter": s.adapter.reference,
                        "agency": s.adapter.agency,
                        "deadline": s.deadline.to_string(),
                    })
                })
                .collect();
            let mut v = json!({
                "workflow": w.name,
                "version": w.version,
                "title": w.title,
                "deadline": w.deadline.map(|d| d.to_string()),
                "newest": newest,
                "steps": steps,
            });
            let found = published
                .iter()
                .find(|p| p.kind == Kind::Workflow && p.id == w.name && p.version == w.version);
            with_source(&mut v, found);
            v
        })
        .collect();
    Ok(Json(json!({"items": items})))
}

/// One adapter version: its manifest and where it came from.
#[utoipa::path(get, path = "/v1/adapters/{agency}/{name}/{version}", tag = "registry",
    params(
        ("agency" = String, Path, description = "The agency"),
        ("name" = String, Path, description = "The adapter's name"),
        ("version" = u32, Path, description = "The version"),
    ),
    responses(
        (status = 200, description = "`adapter`, `source`, `manifest` and, if published, who published and any deprecation", body = Object),
        (status = 404, description = "Not loaded", body = ErrorBody),
    ))]
pub async fn show_adapter<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    path: Result<Path<(String, String, u32)>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Operation::ReadRegistry)?;
    let Path((agency, name, version)) = path.map_err(ApiError::from_path)?;
    let id = format!("{agency}/{name}");
    let text = state
        .registry
        .text(Kind::Adapter, &id, version)
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_definition",
                format!("no adapter `{id}@{version}` is loaded"),
            )
        })?;
    let published = state
        .registry
        .published()
        .await
        .map_err(ApiError::store)?
        .into_iter()
        .find(|p| p.kind == Kind::Adapter && p.id == id && p.version == version);
    let mut v = match &published {
        Some(p) => summary(p),
        None => json!({"kind": "adapter", "id": id, "version": version}),
    };
    v["adapter"] = json!(format!("{id}@{version}"));
    v["source"] = json!(if published.is_some() {
        "published"
    } else {
        "bundled"
    });
    v["manifest"] = json!(text);
    Ok(Json(v))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Deprecate {
    /// Why; recorded in the registry's history.
    reason: String,
    /// The version to use instead, named to whoever pins this one.
    #[serde(default)]
    replacement: Option<u32>,
}

/// Deprecates a published adapter version: running cases keep it, new workflows may not pin it.
#[utoipa::path(post, path = "/v1/adapters/{agency}/{name}/{version}/deprecate", tag = "registry",
    request_body = Deprecate,
    params(
        ("agency" = String, Path, description = "The agency"),
        ("name" = String, Path, description = "The adapter's name"),
        ("version" = u32, Path, description = "The version to deprecate"),
    ),
    responses(
        (status = 200, description = "The deprecated definition", body = Object),
        (status = 403, description = "Another agency's namespace", body = ErrorBody),
        (status = 404, description = "No such published version", body = ErrorBody),
        (status = 409, description = "Already deprecated", body = ErrorBody),
    ))]
pub async fn deprecate_adapter<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    path: Result<Path<(String, String, u32)>, PathRejection>,
    body: Result<Json<Deprecate>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Operation::Publish)?;
    let Path((agency, name, version)) = path.map_err(ApiError::from_path)?;
    let Json(b) = body.map_err(ApiError::from_json)?;
    let id = format!("{agency}/{name}");
    let now = state.engine.now();
    let record = state
        .registry
        .deprecate(
            Retire {
                kind: Kind::Adapter,
                id: &id,
                version,
                replacement: b.replacement,
                reason: &b.reason,
            },
            &caller.0,
            now,
        )
        .await
        .map_err(publish_error)?;
    Ok(Json(summary(&record)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Trial {
    /// The adapter manifest (YAML), published or not.
    manifest: String,
    /// A sample step input, checked against the manifest's input schema.
    input: Value,
    /// Where to send it (a sandbox); default: the agency's configured URL.
    #[serde(default)]
    base_url: Option<String>,
}

/// Runs a manifest against the agency's endpoint (or a sandbox) with a sample input and shows
/// the classified outcome, touching no case: how an agency checks a manifest before publishing.
#[utoipa::path(post, path = "/v1/adapters/test", tag = "registry", request_body = Trial,
    responses(
        (status = 200, description = "`outcome` (success, rejected, pending, retryable, unexpected) with the mapped output or the reason, and the request and reply", body = Object),
        (status = 403, description = "Another agency's namespace", body = ErrorBody),
        (status = 422, description = "The manifest's problems, located, or a sample input that breaks its schema", body = ErrorBody),
    ))]
pub async fn test_adapter<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    body: Result<Json<Trial>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Operation::TestAdapter)?;
    let Json(b) = body.map_err(ApiError::from_json)?;
    let adapter = state
        .registry
        .check_manifest(&b.manifest, &caller.0)
        .map_err(publish_error)?;
    let outcome = state
        .engine
        .try_adapter(&adapter, &b.input, b.base_url.as_deref())
        .await
        .map_err(|e| match e {
            TrialError::InvalidInput(v) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_input",
                "the sample input does not match the adapter's input schema",
            )
            .with_fields(v),
            other => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "cannot_test",
                other.to_string(),
            ),
        })?;
    Ok(Json(outcome))
}

/// Every change to the registry: who published or deprecated what, when.
#[utoipa::path(get, path = "/v1/registry/changes", tag = "registry",
    responses((status = 200, description = "`items`, oldest first", body = Object)))]
pub async fn changes<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Operation::ReadRegistry)?;
    let items = state
        .engine
        .store()
        .registry_changes()
        .await
        .map_err(ApiError::store)?;
    Ok(Json(json!({"items": items})))
}

/// A published definition without its text.
fn summary(p: &Published) -> Value {
    shown_without(p, "text")
}
