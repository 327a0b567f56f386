//! The gateway's edge behaviour: CORS, caching, the limits on a request's target and header fields,
//! and the Prometheus metrics.

use aigronova_e2e::{Backend, assert_problem, spawn_app, spawn_app_with};

use crate::resilience::metric;
use serde_json::json;

#[tokio::test]
async fn cors_allows_the_configured_origin_only() {
    let app = spawn_app_with(Backend::Sqlite, |config| {
        config.gateway.cors.allowed_origins = vec!["https://app.acme.com.br".into()];
    })
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/v1/health/patients"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .send()
    };
    // Counted under the route it asks about.
    let counted = r#"aigronova_gateway_requests_total{method="OPTIONS",route="/v1/health/patients",status="200"}"#;
    let before = metric(&app, counted).await;
    let allowed = preflight("https://app.acme.com.br").await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.acme.com.br");
    // Answered by the CORS layer, and passed through the edge as any request: an id, a metric,
    // and none of the no-store that would keep browsers from keeping it.
    assert!(allowed.headers().contains_key("x-request-id"), "{:?}", allowed.headers());
    assert!(!allowed.headers().contains_key("cache-control"), "{:?}", allowed.headers());
    assert_eq!(metric(&app, counted).await - before, 1.0);
    // The methods the routes take: HEAD wherever GET is, and no PUT, which none takes.
    let methods = allowed.headers()["access-control-allow-methods"].to_str().unwrap().to_owned();
    assert_eq!(names(&methods), ["DELETE", "GET", "HEAD", "PATCH", "POST"], "{methods}");
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(!refused.headers().contains_key("access-control-allow-origin"));
    // The CORS layer's answer either way, which holds nothing: browsers may keep it.
    assert!(!refused.headers().contains_key("cache-control"), "{:?}", refused.headers());

    let response =
        app.client.get(app.url("/healthz")).header("origin", "https://app.acme.com.br").send().await.unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], "https://app.acme.com.br");
    // What a page's script needs to read of an answer: the id to quote, the challenge of a 401 or
    // 403, how long to wait, the rate limits, a created resource's place and a PDF's name.
    let exposed = response.headers()["access-control-expose-headers"].to_str().unwrap().to_owned();
    assert_eq!(
        names(&exposed.to_ascii_lowercase()),
        [
            "content-disposition",
            "location",
            "ratelimit",
            "ratelimit-policy",
            "retry-after",
            "traceresponse",
            "www-authenticate",
            "x-request-id"
        ],
        "{exposed}"
    );
    // An answer to no origin, or to one not allowed, exposes nothing, but tells caches it depends on it.
    for origin in [None, Some("https://evil.example")] {
        let mut request = app.client.get(app.url("/healthz"));
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let response = request.send().await.unwrap();
        assert!(!response.headers().contains_key("access-control-allow-origin"), "{origin:?}");
        assert!(!response.headers().contains_key("access-control-expose-headers"), "{origin:?}");
        assert!(response.headers()["vary"].to_str().unwrap().contains("origin"), "{origin:?}");
    }
    // An OPTIONS that asks for no method is no preflight: the routes answer it, as without CORS.
    for path in ["/v1/health/patients", "/healthz"] {
        let options =
            app.client.request(reqwest::Method::OPTIONS, app.url(path)).header("origin", "https://app.acme.com.br");
        let response = options.send().await.unwrap();
        assert!(response.headers().contains_key("x-request-id"), "{path}");
        assert!(!response.headers().contains_key("access-control-allow-methods"), "{path}");
        assert!(response.headers().contains_key("allow"), "{path}");
        assert_problem(response, 405).await;
    }
    // Nor is one that names no origin.
    let no_origin = app.client.request(reqwest::Method::OPTIONS, app.url("/v1/health/patients"));
    let response = no_origin.header("access-control-request-method", "POST").send().await.unwrap();
    assert!(!response.headers().contains_key("access-control-allow-methods"));
    assert_problem(response, 405).await;
    app.stop().await;
}

/// The items of a comma-separated header value, sorted.
fn names(list: &str) -> Vec<String> {
    let mut names: Vec<String> = list.split(',').map(|name| name.trim().to_owned()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn api_answers_tell_caches_not_to_store_them_and_the_api_description_does_not() {
    let app = spawn_app(Backend::Sqlite).await;
    let (tenant, key) = app.tenant_with_key().await;
    let patient = app.create_patient(&key).await;
    let no_store = |response: &reqwest::Response| {
        response.headers().get("cache-control").and_then(|value| value.to_str().ok()).map(str::to_owned)
    };
    let read = app.get(&format!("/v1/health/patients/{patient}"), &key).await;
    assert_eq!(read.status(), 200);
    assert_eq!(no_store(&read).as_deref(), Some("no-store"), "a patient's personal data");
    let issued = app
        .post(
            &format!("/v1/admin/tenants/{tenant}/api-keys"),
            &app.admin_key,
            &json!({"name": "ci", "scopes": ["health:read"]}),
        )
        .await;
    assert_eq!(issued.status(), 201);
    assert_eq!(no_store(&issued).as_deref(), Some("no-store"), "a key shown once");
    let missing = app.get("/v1/health/patients/00000000-0000-7000-8000-000000000000", &key).await;
    assert_eq!(no_store(&missing).as_deref(), Some("no-store"), "a problem");
    assert_problem(missing, 404).await;
    let listed = app.get(&format!("/v1/admin/tenants/{tenant}/api-keys"), &app.admin_key).await;
    assert_eq!(no_store(&listed).as_deref(), Some("no-store"), "the admin API");
    for path in ["/openapi.json", "/docs"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(no_store(&response), None, "{path} is the same for everyone");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_path_spelled_with_escapes_of_unreserved_characters_is_its_route() {
    let app = spawn_app(Backend::Sqlite).await;
    let (_, key) = app.tenant_with_key().await;
    let raw = |path: &str, credential: &str| {
        let request = app.client.get(format!("{}{path}", app.address)).bearer_auth(credential);
        async move { request.send().await.unwrap().status() }
    };
    // The gateway's own routes as the services': RFC 3986 §6.2.2.2.
    assert_eq!(raw("/%6Fpenapi.json", &key).await, 200);
    assert_eq!(raw("/v1/admin/%74enants", &app.admin_key).await, 200);
    assert_eq!(raw("/v1/health/%6D%6Fdels", &key).await, 200);
    assert_eq!(raw("/healthz%7E", &key).await, 404, "a decoded ~ is still a character of the path");
    // A reserved character's escape is not decoded: `%2F` is no separator.
    assert_eq!(raw("/v1/admin%2Ftenants", &app.admin_key).await, 404);
    // Another method on one of the gateway's own routes is told as on the services' routes.
    let put = app.client.put(app.url("/openapi.json")).send().await.unwrap();
    assert!(put.headers()["allow"].to_str().unwrap().contains("GET"), "{:?}", put.headers());
    let problem = assert_problem(put, 405).await;
    assert_eq!(problem["detail"], "PUT is not a method of /openapi.json; it takes GET, HEAD", "{problem}");
    let put = app.client.put(app.url("/v1/admin/tenants/t-1")).bearer_auth(&app.admin_key).send().await.unwrap();
    let mut allowed: Vec<String> =
        put.headers()["allow"].to_str().unwrap().split(',').map(|method| method.trim().to_owned()).collect();
    allowed.sort();
    let problem = assert_problem(put, 405).await;
    let said = format!("PUT is not a method of /v1/admin/tenants/{{tenantId}}; it takes {}", allowed.join(", "));
    assert_eq!(problem["detail"], said.as_str(), "the methods the Allow header lists");
    // The probes and the metrics take no query parameter, as the others refuse what they do not
    // take; an id with anything around it is no id.
    for path in ["/healthz?x=1", "/metrics?x=1", "/readyz?verbose=1"] {
        assert_eq!(raw(path, &app.admin_key).await, 400, "{path}");
    }
    // The metrics' caller is known first; the API's description is everyone's, whatever its query.
    assert_eq!(raw("/metrics?x=1", "agk_nope").await, 401);
    assert_eq!(raw("/openapi.json?v=2", &key).await, 200);
    // A probe's body is not looked at: health checkers that send an empty one are answered.
    let with_body = app.client.get(app.url("/healthz")).body("").send().await.unwrap();
    assert_eq!(with_body.status(), 200);
    let padded = raw("/v1/health/patients/%200190a3b4-c5d6-7e8f-9a0b-1c2d3e4f5a6b", &key).await;
    assert_eq!(padded, 400);
    app.stop().await;
}

#[tokio::test]
async fn without_configured_origins_no_cors_headers_are_sent() {
    let app = spawn_app(Backend::Sqlite).await;
    let response =
        app.client.get(app.url("/healthz")).header("origin", "https://app.acme.com.br").send().await.unwrap();
    assert!(!response.headers().contains_key("access-control-allow-origin"));
    // A preflight nobody answers is refused as any OPTIONS, and no cache keeps the refusal.
    for (path, status) in [("/v1/health/patients", 405), ("/nowhere", 404)] {
        let response = app
            .client
            .request(reqwest::Method::OPTIONS, app.url(path))
            .header("origin", "https://app.acme.com.br")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert!(!response.headers().contains_key("access-control-allow-origin"), "{path}");
        assert_eq!(response.headers()["cache-control"], "no-store", "{path}");
        assert_problem(response, status).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_per_route_and_upstream_for_authorised_scrapers() {
    let app = spawn_app(Backend::Sqlite).await;
    let (tenant, key) = app.tenant_with_key().await;
    let patient = app.create_patient(&key).await;
    app.get(&format!("/v1/health/patients/{patient}"), &key).await;
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/examples/breast-cancer-assessment.json"))
            .unwrap();
    let body: serde_json::Value = serde_json::from_str(&example).unwrap();
    let assessed = app.post(&format!("/v1/health/patients/{patient}/assessments"), &key, &body).await;
    assert_eq!(assessed.status(), 200);
    app.get("/v1/health/patients/00000000-0000-7000-8000-000000000000", &key).await;
    // A method a known path does not take is counted under that path's route.
    let options = app.client.request(reqwest::Method::OPTIONS, app.url("/v1/health/models")).bearer_auth(&key);
    assert_eq!(options.send().await.unwrap().status(), 405);
    // Methods of no standard are counted as one, however many a client invents.
    for invented in ["ZZTOP", "BREW"] {
        let method = reqwest::Method::from_bytes(invented.as_bytes()).unwrap();
        assert_eq!(app.client.request(method, app.url("/nope")).send().await.unwrap().status(), 404);
    }

    assert_problem(app.client.get(app.url("/metrics")).send().await.unwrap(), 401).await;
    assert_problem(app.get("/metrics", &key).await, 403).await;
    let scraper = app.create_key(&tenant, &["metrics:read"]).await;
    for scraper_key in [&scraper, &app.admin_key] {
        let response = app.get("/metrics", scraper_key).await;
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        for expected in [
            r#"aigronova_gateway_requests_total{method="GET",route="/v1/health/patients/{id}",status="200"} 1"#,
            r#"aigronova_gateway_requests_total{method="GET",route="/v1/health/patients/{id}",status="404"} 1"#,
            r#"aigronova_gateway_requests_total{method="OPTIONS",route="/v1/health/models",status="405"} 1"#,
            r#"aigronova_gateway_requests_total{method="_OTHER",route="unmatched",status="404"} 2"#,
            r#"aigronova_gateway_upstream_calls_total{code="Ok",upstream="healthquantum"}"#,
            r#"aigronova_gateway_upstream_calls_total{code="NotFound",upstream="healthquantum"} 1"#,
            "aigronova_gateway_request_duration_seconds_bucket",
            r#"aigronova_gateway_requests_total{method="POST",route="/v1/admin/tenants",status="201"} 1"#,
            r#"aigronova_gateway_requests_total{method="POST",route="/v1/admin/tenants/{tenantId}/api-keys",status="201"} 2"#,
            r#"aigronova_inference_duration_seconds_count{model="breast-cancer",outcome="ok",version="1"} 1"#,
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
        assert!(!text.contains("ZZTOP") && !text.contains("BREW"), "an invented method is no label:\n{text}");
    }
    // A tenant's scraper is refused once its tenant is suspended.
    app.suspend_tenant(&tenant).await;
    let refused = assert_problem(app.get("/metrics", &scraper).await, 403).await;
    assert_eq!(refused["detail"], "the tenant is suspended", "{refused}");
    assert_eq!(app.get("/metrics", &app.admin_key).await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn an_overlong_target_or_header_section_is_refused_with_a_problem_document() {
    let app = spawn_app(Backend::Sqlite).await;
    let tenant = app.create_tenant("Edge").await;
    let key = app.create_key(&tenant, &["health:read", "health:write"]).await;
    let get = |query: String| {
        app.client.get(app.url(&format!("/v1/health/patients?namePrefix={query}"))).bearer_auth(&key).send()
    };

    // Within the limits the request reaches its route, whose service refuses a prefix longer than
    // any name.
    let listed = assert_problem(get("a".repeat(7 * 1024)).await.unwrap(), 400).await;
    assert_eq!(listed["field"], "namePrefix", "{listed}");

    let long = get("a".repeat(9 * 1024)).await.unwrap();
    assert!(long.headers().contains_key("x-request-id"));
    let problem = assert_problem(long, 414).await;
    assert!(problem["detail"].as_str().unwrap().contains("at most 8192"), "{problem}");
    // Measured as sent: a path of escapes that would decode to fewer bytes is over the limit too.
    let escaped = format!("{}/v1/health/{}", app.address, "%41".repeat(3 * 1024));
    let problem = assert_problem(app.client.get(escaped).bearer_auth(&key).send().await.unwrap(), 414).await;
    assert!(problem["detail"].as_str().unwrap().contains("is 9227 bytes"), "{problem}");

    // The limit counts the fields as the client sent them: 16384 bytes pass, one more does not,
    // whatever request id the gateway adds.
    let address = app.address.trim_start_matches("http://").to_owned();
    let at_most = |padding: usize| {
        let (address, key) = (address.clone(), key.clone());
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
            let head = format!(
                "GET /v1/health/patients HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {key}\r\n\
                 x-padding: {}\r\nconnection: close\r\n\r\n",
                "p".repeat(padding)
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.unwrap();
            String::from_utf8_lossy(&answer).into_owned()
        }
    };
    let fixed = ["host".len() + address.len(), "authorization".len() + 7 + key.len(), "x-padding".len(), 15]
        .iter()
        .sum::<usize>()
        + 4 * 32;
    let answer = at_most(16384 - fixed).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answer = at_most(16385 - fixed).await;
    assert!(answer.starts_with("HTTP/1.1 431") && answer.contains("are 16385 bytes"), "{answer}");

    // The answer to `request`, written as it is on a connection of its own.
    let answer_to = |request: String| {
        let address = address.clone();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.unwrap();
            String::from_utf8_lossy(&answer).into_owned()
        }
    };
    // A target that is no path (authority or asterisk form) names no route: 400, not 404.
    for head in ["GET healthz HTTP/1.1", "OPTIONS * HTTP/1.1"] {
        let answer = answer_to(format!("{head}\r\nhost: {address}\r\nconnection: close\r\n\r\n")).await;
        assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("must be a path starting with /"), "{answer}");
    }
    // An HTTP/1.1 request without its Host field, or with two, is refused (RFC 9112 §3.2).
    for hosts in ["", "host: a\r\nhost: b\r\n"] {
        let answer = answer_to(format!("GET /healthz HTTP/1.1\r\n{hosts}connection: close\r\n\r\n")).await;
        assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("one Host field"), "{hosts:?}: {answer}");
    }
    // A Host field that holds no host and port is refused, an empty one taken (RFC 9112 §3.2).
    for host in ["a b", "user@localhost", "localhost:http"] {
        let answer = answer_to(format!("GET /healthz HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n")).await;
        assert!(
            answer.starts_with("HTTP/1.1 400") && answer.contains("a host and an optional port"),
            "{host}: {answer}"
        );
    }
    let answer = answer_to("GET /healthz HTTP/1.1\r\nhost: \r\nconnection: close\r\n\r\n".to_owned()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A transfer coding other than chunked is not read: 501, and nothing reaches the service.
    let body = json!({"name": "Maria", "cpf": "52998224725", "birthDate": "1980-02-29"}).to_string();
    let answer = answer_to(format!(
        "POST /v1/health/patients HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ntransfer-encoding: gzip, chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    ))
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 501") && answer.contains(r#"the transfer coding \"gzip\" is not implemented"#),
        "{answer}"
    );
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    // The same body chunked alone is taken.
    let answer = answer_to(format!(
        "POST /v1/health/patients HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    ))
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(app.count_health_rows("patients").await, 1);

    // The same over HTTP/1.1 and HTTP/2, whose header lists the HTTP server reads up to 64 KiB.
    let http2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    for (client, version) in [(&app.client, reqwest::Version::HTTP_11), (&http2, reqwest::Version::HTTP_2)] {
        let padded = client
            .get(app.url("/v1/health/patients"))
            .bearer_auth(&key)
            .header("x-padding", "p".repeat(17 * 1024))
            .send()
            .await
            .unwrap();
        assert_eq!(padded.version(), version);
        assert!(padded.headers().contains_key("x-request-id"));
        let problem = assert_problem(padded, 431).await;
        assert!(problem["detail"].as_str().unwrap().contains("at most 16384"), "{problem}");
    }
    // Refused before routing, they are counted under the route their path is one of.
    let metrics = app.get("/metrics", &app.admin_key).await.text().await.unwrap();
    for (status, count) in [("414", 1), ("431", 3)] {
        let line = format!(
            r#"aigronova_gateway_requests_total{{method="GET",route="/v1/health/patients",status="{status}"}} {count}"#
        );
        assert!(metrics.lines().any(|candidate| candidate == line), "no {line} in\n{metrics}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_connection_that_stops_before_its_request_is_read_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(Backend::Sqlite, |config| config.gateway.request_header_timeout_secs = 1).await;
    let address = app.address.trim_start_matches("http://");
    // Silent, part of an HTTP/2 preface, and part of an HTTP/1.1 request's header fields.
    let header_fields = format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\nX-Slow: ");
    for opening in ["", "PRI * HTTP/2.0\r\n", header_fields.as_str()] {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(opening.as_bytes()).await.unwrap();
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "{opening:?}: the connection is still open after 10 s");
        assert!(!String::from_utf8_lossy(&rest).contains("200 OK"), "{opening:?}: {}", String::from_utf8_lossy(&rest));
    }
    // A client that sends its request in time is answered, over either version.
    assert_eq!(app.client.get(app.url("/healthz")).send().await.unwrap().status(), 200);
    let http2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    assert_eq!(http2.get(app.url("/healthz")).send().await.unwrap().status(), 200);
    app.stop().await;
}
