//! `GET /v1/openapi.json`: the API described as OpenAPI 3.1.

use axum::Json;
use serde_json::{Value, json};

pub async fn document() -> Json<Value> {
    Json(spec())
}

fn error_response(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

pub fn spec() -> Value {
    let job = json!({ "description": "the job", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Job" } } } });
    json!({
        "openapi": "3.1.0",
        "info": { "title": "ferry", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Moves files from URLs into storage in one verified streaming pass." },
        "security": [ { "bearer": [] } ],
        "paths": {
            "/healthz": { "get": { "summary": "Liveness", "security": [], "responses": { "200": { "description": "alive" } } } },
            "/v1/jobs": {
                "post": {
                    "summary": "Submit a job (stored durably before the 202)",
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/JobRequest" } } } },
                    "responses": { "202": job.clone(), "400": error_response("invalid request (field names the culprit, e.g. files[3].sha256)"), "401": error_response("a token is needed (when the server has tokens)"), "413": error_response("body too large"), "429": error_response("too many jobs submitted by this caller; see Retry-After") }
                },
                "get": {
                    "summary": "List jobs, newest first",
                    "parameters": [
                        { "name": "status", "in": "query", "schema": { "$ref": "#/components/schemas/JobStatus" } },
                        { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 50 } },
                        { "name": "cursor", "in": "query", "schema": { "type": "string" } }
                    ],
                    "responses": { "200": { "description": "a page", "content": { "application/json": { "schema": {
                        "type": "object", "properties": { "jobs": { "type": "array", "items": { "$ref": "#/components/schemas/Job" } }, "next_cursor": { "type": ["string", "null"] } } } } } },
                        "400": error_response("bad status or cursor") }
                }
            },
            "/v1/jobs/{id}": {
                "parameters": [ { "name": "id", "in": "path", "required": true, "schema": { "type": "string" } } ],
                "get": { "summary": "A job with its files", "responses": { "200": job.clone(), "404": error_response("no such job") } },
                "delete": { "summary": "Cancel a job: transfers stop, partial uploads are aborted",
                    "responses": { "200": job, "404": error_response("no such job"), "409": error_response("the job already ended") } }
            }
        },
        "components": {
          "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer",
            "description": "needed when the server has tokens (ferry serve --tokens); a non-admin token sees only the jobs it submitted" } },
          "schemas": {
            "JobStatus": { "type": "string", "enum": ["pending", "exporting", "downloading", "completed", "completed_with_errors", "failed", "cancelled"] },
            "JobRequest": { "type": "object", "additionalProperties": false,
                "description": "either `files` or `export`",
                "properties": {
                "files": { "type": "array", "minItems": 1, "items": { "$ref": "#/components/schemas/FileRequest" } },
                "export": { "$ref": "#/components/schemas/ExportRequest" },
                "destination": { "type": "string", "description": "s3://bucket/prefix, or a directory under the server's files root ('' = the root)" },
                "task_token": { "type": "string", "description": "AWS Step Functions task token to answer when the job ends" } } },
            "ExportRequest": { "type": "object", "required": ["start_url"], "additionalProperties": false,
                "description": "an export to start at a provider (protocol: docs/export-provider.md)",
                "properties": {
                "start_url": { "type": "string", "format": "uri" },
                "request": { "description": "any JSON, sent as the start request's body" },
                "poll": { "type": "object", "additionalProperties": false, "properties": {
                    "base_interval_ms": { "type": "integer", "minimum": 1, "default": 2000 },
                    "max_interval_ms": { "type": "integer", "minimum": 1, "default": 60000 },
                    "deadline_ms": { "type": "integer", "minimum": 1, "default": 3600000 } } } } },
            "FileRequest": { "type": "object", "required": ["source", "key"], "additionalProperties": false, "properties": {
                "source": { "type": "string", "format": "uri" }, "key": { "type": "string" },
                "size": { "type": "integer", "minimum": 0 },
                "sha256": { "type": "string", "pattern": "^[0-9a-fA-F]{64}$" }, "md5": { "type": "string", "pattern": "^[0-9a-fA-F]{32}$" } } },
            "Job": { "type": "object", "properties": {
                "id": { "type": "string" }, "status": { "$ref": "#/components/schemas/JobStatus" },
                "destination": { "type": "string" }, "created_at_ms": { "type": "integer" }, "updated_at_ms": { "type": "integer" },
                "failure": { "type": ["string", "null"] }, "has_task_token": { "type": "boolean" },
                "owner": { "type": ["string", "null"], "description": "the name of the token that submitted it" },
                "summary": { "type": "object" }, "export": { "type": ["object", "null"] }, "files": { "type": "array", "items": { "type": "object" } } } },
            "Error": { "type": "object", "properties": { "error": { "type": "object", "properties": {
                "code": { "type": "string" }, "message": { "type": "string" }, "field": { "type": ["string", "null"] } } } } }
        } }
    })
}
