//! The OpenAPI document of the API, generated from the handlers' annotations and the request
//! and response types (utoipa). `civicflow openapi` prints it; `docs/openapi.json` is that
//! output, and a test keeps the two equal.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    agencies, audit, callbacks, cases, consents, deadlines, error, events, kpis, metrics,
    operators, registry, store, subjects, supplements, tokens, webhooks,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "civicflow",
        description = "Durable orchestration of interlinked public services: the portal starts and reads cases, operators settle the stuck ones, agencies answer their steps. Every request but the health and readiness checks needs `Authorization: Bearer <token>`; the token's role decides what it may do."
    ),
    paths(
        super::health,
        super::ready,
        cases::start, cases::list, cases::show, cases::history,
        operators::incidents, operators::act,
        operators::bulk_retry,
        deadlines::extend, deadlines::list,
        supplements::post,
        kpis::read, metrics::read,
        agencies::list, agencies::show, agencies::set,
        store::backup,
        callbacks::post,
        events::post,
        consents::record, consents::withdraw, consents::list,
        subjects::erase,
        audit::entries, audit::heads, audit::latest_head, audit::inclusion, audit::consistency,
        tokens::issue, tokens::list, tokens::revoke,
        webhooks::register, webhooks::list, webhooks::delete,
        registry::publish_adapter, registry::list_adapters, registry::deprecate_adapter,
        registry::publish_workflow, registry::list_workflows, registry::changes, registry::test_adapter,
        registry::show_adapter,
    ),
    components(schemas(
        error::ErrorBody,
        operators::ActionName,
        cases::ListOrder,
        events::BatchItem,
    )),
    modifiers(&Bearer),
    security(("bearer" = [])),
)]
struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document, as pretty JSON with a final newline.
pub fn openapi_json() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the generated document serializes");
    text.push('\n');
    text
}
