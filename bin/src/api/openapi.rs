//! `GET /v1/openapi.json`: the API as OpenAPI 3.1, generated (utoipa) from
//! the handlers' annotations and the wire types (`ferry_adapters::wire`),
//! so it cannot drift from what the server answers. A contract test
//! (schemathesis, `scripts/contract.sh`) checks real answers against it.

use axum::Json;
use serde_json::{Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use ferry_adapters::wire;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "needed when the server has tokens (ferry serve --tokens); a non-admin token sees only the jobs it submitted",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ferry",
        description = "Moves files from URLs into storage in one verified streaming pass."
    ),
    paths(
        super::healthz,
        super::readyz,
        super::metrics,
        document,
        super::submit_job,
        super::list_jobs,
        super::get_job,
        super::list_files,
        super::cancel_job,
        super::streams::job_events,
        super::streams::job_ws,
        super::streams::all_events,
    ),
    components(schemas(
        wire::JobDto,
        wire::JobPageDto,
        wire::FilePageDto,
        wire::FileDto,
        wire::SummaryDto,
        wire::ExportView,
        wire::PollView,
        wire::JobStatusDto,
        wire::TaskStatusDto,
        wire::ErrorClassDto,
        wire::FileErrorDto,
        wire::EventDto,
        wire::EventKindDto,
        wire::StreamItemDto,
        wire::ControlDto,
        wire::ErrorDto,
        wire::ErrorDetailDto,
        wire::HealthDto,
        wire::ReadinessDto,
        wire::CheckDto,
        wire::PressureDto,
        wire::JobRequestDto,
        wire::FileRequestDto,
        wire::AttributesDto,
        wire::IfExistsDto,
        wire::ExportRequestDto,
        wire::PollRequestDto,
    )),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "jobs", description = "Submit, read, list and cancel jobs"),
        (name = "streams", description = "Live events: NDJSON, SSE, WebSocket"),
        (name = "health", description = "Liveness, readiness, metrics, this document"),
    )
)]
struct ApiDoc;

/// The OpenAPI document.
#[utoipa::path(get, path = "/v1/openapi.json", security(()), tag = "health",
    responses((status = 200, description = "this document (OpenAPI 3.1)", content_type = "application/json")))]
pub async fn document() -> Json<Value> {
    Json(spec())
}

/// The document, with links from a submitted job to the operations that
/// take its id (so clients, and the contract test's stateful phase, can
/// follow them). The links are added as JSON: utoipa 5.5 serialises a
/// Link's `operationId` as `operation_id`, which OpenAPI readers reject.
pub fn spec() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|e| {
        tracing::error!(error = %e, "the OpenAPI document is not encodable");
        Value::Null
    });
    if let Some(accepted) = doc.pointer_mut("/paths/~1v1~1jobs/post/responses/202")
        && let Some(accepted) = accepted.as_object_mut()
    {
        let link = |operation: &str| json!({ "operationId": operation, "parameters": { "id": "$response.body#/id" } });
        accepted.insert(
            "links".into(),
            json!({
                "GetJob": link("get_job"),
                "JobFiles": link("list_files"),
                "CancelJob": link("cancel_job"),
                "JobEvents": link("job_events"),
            }),
        );
    }
    doc
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_route_is_documented() {
        let doc = spec();
        assert_eq!(doc["openapi"], "3.1.0");
        for (path, method) in [
            ("/healthz", "get"),
            ("/readyz", "get"),
            ("/metrics", "get"),
            ("/v1/openapi.json", "get"),
            ("/v1/events", "get"),
            ("/v1/jobs", "get"),
            ("/v1/jobs", "post"),
            ("/v1/jobs/{id}", "get"),
            ("/v1/jobs/{id}", "delete"),
            ("/v1/jobs/{id}/files", "get"),
            ("/v1/jobs/{id}/events", "get"),
            ("/v1/jobs/{id}/ws", "get"),
        ] {
            assert!(doc["paths"][path][method].is_object(), "{method} {path}");
        }
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert!(doc["components"]["schemas"]["JobDto"]["properties"]["files"].is_object());
        assert!(
            doc["components"]["schemas"]["FilePageDto"]["properties"]["next_cursor"].is_object()
        );
        assert_eq!(
            doc["paths"]["/v1/jobs"]["post"]["responses"]["202"]["links"]["GetJob"]["operationId"],
            "get_job"
        );
    }
}
