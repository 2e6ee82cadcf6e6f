//! The API's description: `/openapi.json` (OpenAPI 3.1, generated from the
//! handlers' `#[utoipa::path]` annotations and the protocol types' schemas) and
//! `/docs`, a page rendered from it on the server. The page is self-contained
//! (no scripts, no assets from elsewhere), so it works offline and behind strict
//! content policies.

use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;
use std::fmt::Write as _;
use std::sync::Arc;

/// `/openapi.json` and `/docs`.
pub fn router<S: Clone + Send + Sync + 'static>(
    openapi: Arc<utoipa::openapi::OpenApi>,
) -> Router<S> {
    let json = Arc::new(serde_json::to_value(&*openapi).unwrap_or(Value::Null));
    let page = Arc::new(render(&json));
    Router::new()
        .route(
            "/openapi.json",
            get({
                let json = json.clone();
                move || async move { Json((*json).clone()).into_response() }
            }),
        )
        .route(
            "/docs",
            get(move || async move { Html((*page).clone()).into_response() }),
        )
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn schema_name(v: &Value) -> String {
    if let Some(r) = v.get("$ref").and_then(Value::as_str) {
        return r.rsplit('/').next().unwrap_or(r).to_owned();
    }
    match v.get("type") {
        Some(Value::String(t)) if t == "array" => {
            format!("[{}]", v.get("items").map(schema_name).unwrap_or_default())
        }
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" | "),
        _ => v
            .get("oneOf")
            .or_else(|| v.get("anyOf"))
            .and_then(Value::as_array)
            .map(|a| a.iter().map(schema_name).collect::<Vec<_>>().join(" | "))
            .unwrap_or_else(|| "object".to_owned()),
    }
}

/// The HTML page for an OpenAPI document.
pub fn render(doc: &Value) -> String {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let info = doc.get("info").cloned().unwrap_or(Value::Null);
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{} API</title><style>body{{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#111}}code,pre{{font:13px ui-monospace,monospace;background:#f3f3f3;padding:.1rem .3rem}}h2{{margin-top:2.5rem;border-bottom:1px solid #ccc}}.op{{margin:1.2rem 0;padding:.6rem 1rem;border-left:4px solid #36c;background:#fafafa}}.m{{font-weight:700;text-transform:uppercase;margin-right:.5rem}}table{{border-collapse:collapse}}td,th{{text-align:left;padding:.15rem .6rem .15rem 0;vertical-align:top}}</style></head><body><h1>{} <small>{}</small></h1><p>{}</p><p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a> (OpenAPI {}).</p>",
        esc(&s(&info, "title")),
        esc(&s(&info, "title")),
        esc(&s(&info, "version")),
        esc(&s(&info, "description")),
        esc(&s(doc, "openapi")),
    );
    out.push_str("<h2>Endpoints</h2>");
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        for (path, item) in paths {
            let Some(item) = item.as_object() else {
                continue;
            };
            for (method, op) in item {
                let _ = write!(
                    out,
                    "<div class=\"op\" id=\"{}-{}\"><div><span class=\"m\">{}</span><code>{}</code></div><p>{}</p>",
                    esc(method),
                    esc(path),
                    esc(method),
                    esc(path),
                    esc([s(op, "summary"), s(op, "description")].join(" ").trim())
                );
                if op.get("security").is_some() {
                    out.push_str("<p>Needs <code>Authorization: Bearer &lt;token&gt;</code>.</p>");
                }
                if let Some(params) = op.get("parameters").and_then(Value::as_array) {
                    out.push_str(
                        "<table><tr><th>parameter</th><th>in</th><th>type</th><th></th></tr>",
                    );
                    for p in params {
                        let _ = write!(
                            out,
                            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                            esc(&s(p, "name")),
                            esc(&s(p, "in")),
                            esc(&p.get("schema").map(schema_name).unwrap_or_default()),
                            esc(&s(p, "description"))
                        );
                    }
                    out.push_str("</table>");
                }
                if let Some(body) = op.pointer("/requestBody/content/application~1json/schema") {
                    let _ = write!(out, "<p>Body: <code>{}</code></p>", esc(&schema_name(body)));
                }
                if let Some(resps) = op.get("responses").and_then(Value::as_object) {
                    out.push_str("<table>");
                    for (code, r) in resps {
                        let body = r
                            .get("content")
                            .and_then(Value::as_object)
                            .and_then(|c| c.values().next())
                            .and_then(|c| c.get("schema"))
                            .map(schema_name)
                            .unwrap_or_default();
                        let _ = write!(
                            out,
                            "<tr><td><b>{}</b></td><td>{}</td><td><code>{}</code></td></tr>",
                            esc(code),
                            esc(&s(r, "description")),
                            esc(&body)
                        );
                    }
                    out.push_str("</table>");
                }
                out.push_str("</div>");
            }
        }
    }
    out.push_str("<h2>Schemas</h2>");
    if let Some(schemas) = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
    {
        for (name, schema) in schemas {
            let _ = write!(
                out,
                "<h3 id=\"{}\">{}</h3><p>{}</p>",
                esc(name),
                esc(name),
                esc(&s(schema, "description"))
            );
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                let required: Vec<&str> = schema
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                out.push_str("<table>");
                for (field, v) in props {
                    let _ = write!(
                        out,
                        "<tr><td><code>{}{}</code></td><td>{}</td><td>{}</td></tr>",
                        esc(field),
                        if required.contains(&field.as_str()) {
                            ""
                        } else {
                            "?"
                        },
                        esc(&schema_name(v)),
                        esc(&s(v, "description"))
                    );
                }
                out.push_str("</table>");
            } else if let Some(values) = schema.get("enum").and_then(Value::as_array) {
                let list: Vec<String> = values.iter().map(|v| v.to_string()).collect();
                let _ = write!(out, "<p>One of {}</p>", esc(&list.join(", ")));
            }
        }
    }
    out.push_str("</body></html>");
    out
}
