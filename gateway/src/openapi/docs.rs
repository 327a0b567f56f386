//! `/docs`: one self-contained page (inline style and script, nothing fetched from another host, so
//! that it works offline) that renders `/openapi.json`. A Content-Security-Policy that allows only
//! that style and script, by hash, and requests to the gateway itself enforces it in the browser.

use axum::{
    body::Bytes,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use base64::Engine;
use sha2::{Digest, Sha256};

const STYLE: &str = include_str!("docs.css");
const SCRIPT: &str = include_str!("docs.js");

pub(super) struct Page {
    html: Bytes,
    content_security_policy: HeaderValue,
}

impl Page {
    pub(super) fn new() -> Self {
        let html = format!(
            "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>AigroNova API</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
             <header><div class=\"wrap\"><h1 id=\"title\">AigroNova API</h1><span id=\"version\"></span>\
             <p id=\"description\"></p>\
             <input id=\"filter\" type=\"search\" placeholder=\"Filter by path, summary or scope\" \
             aria-label=\"Filter operations\"></div></header>\n\
             <div class=\"wrap layout\"><nav id=\"toc\" aria-label=\"Sections\"></nav>\
             <main id=\"content\"><p class=\"note\">Loading openapi.json…</p></main></div>\n\
             <script>{SCRIPT}</script>\n</body>\n</html>\n"
        );
        let policy = format!(
            "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; connect-src 'self'; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            digest(SCRIPT),
            digest(STYLE)
        );
        Self { html: html.into(), content_security_policy: HeaderValue::try_from(policy).expect("the policy is ASCII") }
    }

    pub(super) fn response(&self) -> Response {
        let headers = [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (header::CONTENT_SECURITY_POLICY, self.content_security_policy.clone()),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ];
        (headers, self.html.clone()).into_response()
    }
}

fn digest(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
}
