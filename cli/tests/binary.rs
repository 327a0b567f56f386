//! The `aigronova` binary as an operator runs it: `up` prints its URL and the administrator key
//! once, answers requests, stops on SIGINT, and its logs never carry keys, tokens or personal data,
//! not even typed into a URL; its access lines name the route, the key's id and the W3C trace.

use std::{
    io::{BufRead, BufReader, Read},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use serde_json::{Value, json};

const CPF: &str = "52998224725";
const PATIENT_NAME: &str = "Joana Exemplo de Souza";

struct Running {
    child: Child,
    url: String,
    /// Standard error's lines before the URL's: the administrator key's notice, on a first start.
    head: String,
    /// Taken by `stop`.
    stdout: Option<std::thread::JoinHandle<String>>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

/// A test that fails before it stops its platform leaves no process behind.
impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads `stream` to its end on a thread of its own, so that the process never blocks on a full
/// pipe; sends each line to `lines` as it comes and returns them all.
fn drain(stream: impl Read + Send + 'static, lines: Option<mpsc::Sender<String>>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if let Some(lines) = &lines {
                let _ = lines.send(line.clone());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    })
}

/// Starts `aigronova up` on a free port and waits for its URL line; its home folder is `home` beside
/// `data_dir`, so that what it writes outside its data folder can be seen.
fn start(data_dir: &std::path::Path, admin_key: Option<&str>) -> Running {
    start_with(data_dir, admin_key, &[])
}

/// [`start`] with the variables `env` set too.
// The child is handed to the caller, and `stop` waits for it.
#[allow(clippy::zombie_processes)]
fn start_with(data_dir: &std::path::Path, admin_key: Option<&str>, env: &[(&str, &str)]) -> Running {
    let ort = std::env::var("ORT_DYLIB_PATH").expect("ORT_DYLIB_PATH is not set: run the tests with `make test`");
    let home = data_dir.with_file_name("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_aigronova"));
    command
        .args(["up", "--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("HOME", &home)
        .env_remove("XDG_CACHE_HOME")
        // The binary turns ONNX Runtime's telemetry off itself.
        .env_remove("ORT_DISABLE_TELEMETRY")
        .env("ORT_DYLIB_PATH", ort)
        .env("AIGRONOVA__INFERENCE__MODELS_DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/../models"))
        .env("AIGRONOVA__TELEMETRY__LOG_FILTER", "debug,h2=info,hyper=info,tower=info,sqlx=info")
        .env_remove("AIGRONOVA_ADMIN_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(key) = admin_key {
        command.env("AIGRONOVA_ADMIN_KEY", key);
    }
    command.envs(env.iter().copied());
    let mut child = command.spawn().expect("the binary starts");
    let stdout = drain(child.stdout.take().unwrap(), None);
    let (lines, banner) = mpsc::channel();
    let stderr = drain(child.stderr.take().unwrap(), Some(lines));
    let mut head = String::new();
    loop {
        let Ok(line) = banner.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let status = child.wait();
            panic!("aigronova up exited or hung before printing its URL: {status:?}");
        };
        if let Some(url) = line.trim().strip_prefix("AigroNova is up at ") {
            return Running { child, url: url.to_owned(), head, stdout: Some(stdout), stderr: Some(stderr) };
        }
        head.push_str(&line);
        head.push('\n');
    }
}

/// Sends SIGINT and returns what the process printed on standard output and on standard error.
fn stop(mut running: Running) -> (String, String) {
    Command::new("kill").args(["-INT", &running.child.id().to_string()]).status().unwrap();
    let status = running.child.wait().unwrap();
    assert!(status.success(), "aigronova up exits cleanly on SIGINT: {status}");
    let output = |handle: Option<std::thread::JoinHandle<String>>| handle.expect("not stopped before").join().unwrap();
    (output(running.stdout.take()), output(running.stderr.take()))
}

/// Opens, as a new tenant's key, a request whose body, announced at 900 kB, never comes past its
/// first bytes: a slow upload.
fn slow_upload(url: &str, data_dir: &std::path::Path) -> std::net::TcpStream {
    use std::io::Write;
    let admin = std::fs::read_to_string(data_dir.join("admin-key")).expect("the key file").trim().to_owned();
    aigronova_gateway::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (_, key) = runtime.block_on(tenant_with_key(url, &admin, &["health:write"]));
    let key = key["key"].as_str().unwrap();
    let address = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "POST /v1/health/patients HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 900000\r\n\r\n{{\"name\": "
    )
    .unwrap();
    stream
}

/// Sends `signal` to the running process.
fn signal(running: &Running, signal: &str) {
    Command::new("kill").args([signal, &running.child.id().to_string()]).status().unwrap();
}

/// Waits up to `limit` for the process to exit; its status, or `None` if it is still running
/// (killed when `running` is dropped).
fn exit_within(running: &mut Running, limit: Duration) -> Option<std::process::ExitStatus> {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = running.child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn a_stop_waits_for_a_slow_upload_no_longer_than_its_grace_and_a_second_signal_stops_at_once() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    // The request body's own timeout (a minute) is longer than the grace.
    let env =
        [("AIGRONOVA__GATEWAY__SHUTDOWN_GRACE_SECS", "2"), ("AIGRONOVA__GATEWAY__REQUEST_BODY_TIMEOUT_SECS", "60")];
    let mut running = start_with(&data_dir, None, &env);
    let _upload = slow_upload(&running.url, &data_dir);
    std::thread::sleep(Duration::from_millis(300));
    let asked = std::time::Instant::now();
    signal(&running, "-TERM");
    let status = exit_within(&mut running, Duration::from_secs(15)).expect("the stop waited past its grace");
    assert!(status.success(), "{status}");
    assert!(asked.elapsed() >= Duration::from_secs(2), "the upload was given its grace: {:?}", asked.elapsed());

    // Without a grace that short, a second Ctrl-C ends the wait.
    let mut running = start_with(&data_dir, None, &[("AIGRONOVA__GATEWAY__REQUEST_BODY_TIMEOUT_SECS", "60")]);
    let _upload = slow_upload(&running.url, &data_dir);
    std::thread::sleep(Duration::from_millis(300));
    signal(&running, "-INT");
    std::thread::sleep(Duration::from_millis(500));
    assert!(running.child.try_wait().unwrap().is_none(), "the first signal drains");
    signal(&running, "-INT");
    let status = exit_within(&mut running, Duration::from_secs(5)).expect("the second signal stops at once");
    assert_eq!(status.code(), Some(130), "{status}");
}

/// The line of `up`'s banner that hands over a generated administrator key.
fn admin_key_notice(output: &str) -> Option<&str> {
    output.lines().find(|line| line.starts_with("Administrator key"))
}

#[test]
fn up_hands_over_the_admin_key_once_and_logs_no_secrets_or_personal_data() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    let first = start(data_dir.as_path(), None);
    // Standard error is a pipe here, not a terminal: the banner names the file that holds the
    // key, readable by its owner only, instead of showing it, before the key is stored.
    let key_file = data_dir.as_path().join("admin-key");
    let notice = admin_key_notice(&first.head).expect("the first start hands over an administrator key");
    assert!(notice.contains(&key_file.display().to_string()), "{notice}");
    let admin = std::fs::read_to_string(&key_file).expect("the key file").trim().to_owned();
    assert!(admin.starts_with("agk_"), "the key file holds a key");
    assert!(!notice.contains(&admin), "{notice}");
    {
        use std::os::unix::fs::PermissionsExt;
        for path in [&key_file, &data_dir] {
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is its owner's only: {mode:o}", path.display());
        }
    }
    let url = first.url.clone();
    let Exercised { tenant_id, tenant_key, tenant_key_id, token_fragment } = runtime.block_on(exercise(&url, &admin));
    std::thread::sleep(Duration::from_millis(200));
    let (logs, stderr) = stop(first);
    // Nothing is written outside the data folder: no ONNX Runtime usage telemetry queued in the
    // home folder's cache, say.
    let home: Vec<_> =
        std::fs::read_dir(data.path().join("home")).unwrap().map(|entry| entry.unwrap().path()).collect();
    assert!(home.is_empty(), "written to the home folder: {home:?}");
    // Every file and folder it wrote (databases and their journals, the object store, keys) is
    // its owner's only, not just the folder that holds them.
    let mut written = vec![data_dir.clone()];
    while let Some(path) = written.pop() {
        use std::os::unix::fs::PermissionsExt;
        let metadata = std::fs::metadata(&path).unwrap();
        assert_eq!(metadata.permissions().mode() & 0o077, 0, "{} is its owner's only", path.display());
        if metadata.is_dir() {
            written.extend(std::fs::read_dir(&path).unwrap().map(|entry| entry.unwrap().path()));
        }
    }

    // Standard output is the logs, one JSON object a line; the key is on standard error only.
    for line in logs.lines() {
        assert!(serde_json::from_str::<Value>(line).is_ok(), "a log line that is not JSON: {line}");
    }
    for secret in [
        admin.as_str(),
        tenant_key.as_str(),
        CPF,
        "529.982.247-25",
        PATIENT_NAME,
        "Bearer",
        &token_fragment,
        CLIENT_JWT,
    ] {
        assert!(!logs.contains(secret), "the logs contain {secret:?}:\n{logs}");
        assert!(!stderr.contains(secret), "standard error contains {secret:?}:\n{stderr}");
    }
    let access: Vec<Value> = logs
        .lines()
        .filter(|line| line.contains("\"target\":\"access\""))
        .map(|line| serde_json::from_str(line).expect("an access line is JSON"))
        .collect();
    assert_eq!(access.len(), 13, "one access line per request:\n{logs}");
    for line in &access {
        assert!(line["request_id"].as_str().is_some_and(|id| !id.is_empty()), "{line}");
        // The route's template, never the path, which holds whatever was typed into the URL.
        assert!(
            line["route"]
                .as_str()
                .is_some_and(|route| route.starts_with("/v1/") || ["/metrics", "unmatched"].contains(&route)),
            "{line}"
        );
        assert!(line.get("path").is_none(), "{line}");
        assert!(line["status"].is_u64() && line["latency_ms"].is_f64(), "{line}");
        let trace_id = line["trace_id"].as_str().unwrap_or_default();
        assert!(trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()), "a W3C trace id: {line}");
    }
    let routes_of = |status: u64| {
        let lines = access.iter().filter(|line| line["status"] == status);
        lines.map(|line| line["route"].as_str().unwrap()).collect::<Vec<&str>>()
    };
    assert_eq!(routes_of(404), ["unmatched"], "the key pasted as a path");
    assert_eq!(routes_of(400), ["/v1/health/patients/{id}"], "the CPF typed as a patient's id");
    let admin_route = |line: &Value| line["route"].as_str().is_some_and(|route| route.starts_with("/v1/admin/"));
    let tenant_calls: Vec<&Value> = access.iter().filter(|line| line["status"] == 200 && !admin_route(line)).collect();
    assert!(tenant_calls.iter().all(|line| line["tenant_id"] == tenant_id.as_str()), "{tenant_calls:?}");
    let refused: Vec<&Value> = access.iter().filter(|line| line["status"] == 403).collect();
    assert!(refused.len() == 2 && refused.iter().all(|line| line["tenant_id"] == tenant_id.as_str()), "{refused:?}");
    let routes: Vec<&str> = tenant_calls.iter().map(|line| line["route"].as_str().unwrap()).collect();
    assert_eq!(
        routes,
        ["/v1/health/patients", "/v1/health/patients/{patientId}/assessments", "/v1/health/patients/{id}", "/metrics"]
    );
    assert_eq!(tenant_calls[2]["trace_id"], CLIENT_TRACE_ID, "the trace the client's traceparent named");
    // Authenticated lines name the key by its id, administrator keys included; the others name none.
    for line in &access {
        let route = line["route"].as_str().unwrap();
        match line["status"].as_u64().unwrap() {
            403 if route.starts_with("/v1/admin/") => assert_eq!(line["key_id"], tenant_key_id.as_str(), "{line}"),
            _ if route.starts_with("/v1/admin/") => {
                let key_id = line["key_id"].as_str().unwrap_or_default();
                assert!(!key_id.is_empty() && key_id != admin, "{line}");
                assert!(line.get("tenant_id").is_none(), "an administrator key has no tenant: {line}");
            }
            200 | 400 | 403 => assert_eq!(line["key_id"], tenant_key_id.as_str(), "{line}"),
            _ => assert!(line.get("key_id").is_none(), "not authenticated: {line}"),
        }
    }

    std::fs::remove_file(&key_file).unwrap();
    let second = start(data_dir.as_path(), None);
    let (logs, stderr) = stop(second);
    assert!(admin_key_notice(&format!("{logs}{stderr}")).is_none(), "a key is made on the first start only");
    assert!(!key_file.exists(), "and written on the first start only");
}

/// A JWT from no provider the gateway trusts: refused, and never written to the logs.
const CLIENT_JWT: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QifQ.eyJzdWIiOiJtYXJpYSJ9.c2lnbmF0dXJlLXRoYXQtaXMtbm90";

/// The trace a client's `traceparent` names.
const CLIENT_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

/// What [`exercise`] made.
struct Exercised {
    tenant_id: String,
    tenant_key: String,
    /// The key's public id, as the admin API returned it.
    tenant_key_id: String,
    /// The prefix of every internal token.
    token_fragment: String,
}

/// A Starter tenant `Acme` made with the administrator key `admin`, and a key of it with `scopes`,
/// as the admin API answers them.
async fn tenant_with_key(url: &str, admin: &str, scopes: &[&str]) -> (Value, Value) {
    let client = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let request = client.post(format!("{url}{path}")).bearer_auth(admin).json(&body);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let tenant = post("/v1/admin/tenants".into(), json!({"name": "Acme", "plan": "starter"})).await;
    let path = format!("/v1/admin/tenants/{}/api-keys", tenant["id"].as_str().unwrap());
    let key = post(path, json!({"name": "ci", "scopes": scopes})).await;
    (tenant, key)
}

/// Creates a tenant, a key, a patient and an assessment, reads the patient within a client's trace,
/// scrapes the metrics with the tenant's key, sends a key in the wrong header, a JWT nobody trusts, a CPF typed as a patient's id and the key
/// pasted as a path, then suspends the tenant and calls once more.
async fn exercise(url: &str, admin: &str) -> Exercised {
    aigronova_gateway::install_crypto_provider();
    let client = reqwest::Client::new();
    let (tenant, key) = tenant_with_key(url, admin, &["health:read", "health:write", "metrics:read"]).await;
    let id = tenant["id"].as_str().unwrap();
    let key_id = key["id"].as_str().unwrap().to_owned();
    let key = key["key"].as_str().unwrap().to_owned();
    let patient = client
        .post(format!("{url}/v1/health/patients"))
        .bearer_auth(&key)
        .json(&json!({"name": PATIENT_NAME, "cpf": "529.982.247-25", "birthDate": "1980-02-29"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patient.status(), 200);
    let patient: Value = patient.json().await.unwrap();
    let patient_id = patient["id"].as_str().unwrap();
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/examples/breast-cancer-assessment.json"))
            .unwrap();
    let assessed = client
        .post(format!("{url}/v1/health/patients/{patient_id}/assessments"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(example)
        .send()
        .await
        .unwrap();
    assert_eq!(assessed.status(), 200);
    let read = client
        .get(format!("{url}/v1/health/patients/{patient_id}"))
        .bearer_auth(&key)
        .header("traceparent", format!("00-{CLIENT_TRACE_ID}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    // A tenant's scraper is logged with its tenant.
    let scraped = client.get(format!("{url}/metrics")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(scraped.status(), 200);
    // Whatever is typed into a URL stays out of the logs: a CPF where an id goes, a key as a path.
    let typed = client.get(format!("{url}/v1/health/patients/529.982.247-25")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(typed.status(), 400);
    let pasted = client.get(format!("{url}/{key}")).send().await.unwrap();
    assert_eq!(pasted.status(), 404);
    // A refused call with the key in a wrong header must not echo it either.
    let refused = client
        .get(format!("{url}/v1/health/patients/{patient_id}"))
        .header("authorization", format!("Token {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let refused =
        client.get(format!("{url}/v1/health/patients/{patient_id}")).bearer_auth(CLIENT_JWT).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    // A tenant's key on the admin API is refused, and logged with its tenant.
    let probing = client.get(format!("{url}/v1/admin/tenants")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(probing.status(), 403);
    // A suspended tenant's call is refused and logged with its tenant.
    let suspended = client
        .patch(format!("{url}/v1/admin/tenants/{id}"))
        .bearer_auth(admin)
        .json(&json!({"status": "suspended"}))
        .send()
        .await
        .unwrap();
    assert_eq!(suspended.status(), 200);
    let refused = client.get(format!("{url}/v1/health/patients/{patient_id}")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    Exercised { tenant_id: id.to_owned(), tenant_key: key, tenant_key_id: key_id, token_fragment: "v1.ey".to_owned() }
}

#[test]
fn audit_verify_explains_its_options_and_exits_2_when_it_cannot_verify() {
    let help = Command::new(env!("CARGO_BIN_EXE_aigronova")).args(["audit", "verify", "--help"]).output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for expected in
        ["--url", "--key", "--public-key", "--entry", "--tenant", "Exits 0 when the log verifies, 1 with the first bad"]
    {
        assert!(text.contains(expected), "--help lacks {expected:?}:\n{text}");
    }

    // Arguments it does not take are told apart from a log it cannot verify.
    let misused =
        Command::new(env!("CARGO_BIN_EXE_aigronova")).args(["audit", "verify", "--entry", "-1"]).output().unwrap();
    assert_eq!(misused.status.code(), Some(64), "{misused:?}");
    let misused = Command::new(env!("CARGO_BIN_EXE_aigronova"))
        .args(["audit", "verify", "--url", "http://127.0.0.1:9", "--key", "agk_x", "--tenant", "bogus"])
        .output()
        .unwrap();
    assert_eq!(misused.status.code(), Some(64), "{misused:?}");
    assert!(String::from_utf8_lossy(&misused.stderr).contains("is not a tenant id"), "{misused:?}");

    let unreachable = Command::new(env!("CARGO_BIN_EXE_aigronova"))
        .args(["audit", "verify", "--url", "http://127.0.0.1:9", "--key", "agk_not_a_real_key"])
        .env_remove("AIGRONOVA_API_KEY")
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(2), "{unreachable:?}");
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(stderr.contains("cannot reach http://127.0.0.1:9"), "{stderr}");
    assert!(!stderr.contains("agk_not_a_real_key"), "the key is not echoed: {stderr}");

    // A base URL with credentials, a query or a fragment is no base URL: refused, and not echoed whole.
    for url in ["http://user:s3cretpw@127.0.0.1:9", "http://127.0.0.1:9/?token=s3cretpw", "http://127.0.0.1:9#s3cretpw"]
    {
        let refused = Command::new(env!("CARGO_BIN_EXE_aigronova"))
            .args(["audit", "verify", "--url", url, "--key", "agk_not_a_real_key"])
            .output()
            .unwrap();
        assert_eq!(refused.status.code(), Some(64), "{url}: {refused:?}");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("is not the gateway's base URL"), "{url}: {stderr}");
        if url.contains('@') {
            assert!(!stderr.contains("s3cretpw"), "the password is not echoed: {stderr}");
        }
    }
}

#[test]
fn audit_roots_tells_wrong_arguments_from_a_database_it_cannot_read() {
    let roots = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_aigronova"))
            .args(["audit", "roots"])
            .args(args)
            .env_remove("AIGRONOVA__AI_GOVERNANCE__DATABASE_URL")
            .output()
            .unwrap()
    };
    for (args, said) in [
        (
            &["--database-url", "mysql://root:s3cretpw@localhost/db"][..],
            "is no postgres://, postgresql:// or sqlite: URL",
        ),
        (
            &["--database-url", "sqlite://governance.db", "--snapshot", "00000003-1"],
            "for a postgres:// database URL only",
        ),
        (&["--database-url", "postgres://127.0.0.1:9/x", "--snapshot", "x'; DROP"], "must be a snapshot id"),
    ] {
        let output = roots(args);
        assert_eq!(output.status.code(), Some(64), "{args:?}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(said) && !stderr.contains("s3cretpw"), "{args:?}: {stderr}");
    }
    let unreachable = roots(&["--database-url", "postgres://postgres@127.0.0.1:9/governance"]);
    assert_eq!(unreachable.status.code(), Some(2), "{unreachable:?}");
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("cannot connect to the ai-governance database"));
}

/// A tenant whose log has an entry gone stops neither the other tenants' lines nor the command
/// (a backup of a damaged log is still taken): its line is the root of the entries it holds, and
/// the gap is said on standard error.
#[test]
fn audit_roots_records_every_tenant_when_one_log_has_an_entry_gone() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("governance.db").display());
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let mut connection = sqlx::AnyConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE audit_entries (tenant_id TEXT NOT NULL, idx BIGINT NOT NULL, event_id TEXT NOT NULL, \
             leaf TEXT NOT NULL, leaf_hash TEXT NOT NULL, PRIMARY KEY (tenant_id, idx));
             INSERT INTO audit_entries VALUES ('a', 0, 'e0', 'a0', ''), ('a', 1, 'e1', 'a1', ''), ('a', 2, 'e2', 'a2', ''),
                 ('b', 0, 'e0', 'b0', ''), ('b', 2, 'e2', 'b2', '');",
        )
        .execute(&mut connection)
        .await
        .unwrap();
    });
    let output = Command::new(env!("CARGO_BIN_EXE_aigronova"))
        .args(["audit", "roots", "--database-url", &url])
        .env_remove("AIGRONOVA__AI_GOVERNANCE__DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<Vec<&str>> = stdout.lines().map(|line| line.split('\t').collect()).collect();
    assert_eq!(lines.iter().map(|line| (line[0], line[1])).collect::<Vec<_>>(), [("a", "3"), ("b", "2")], "{stdout}");
    assert!(lines.iter().all(|line| line[2].len() == 64) && lines[0][2] != lines[1][2], "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("tenant b: audit entry 1 is missing") && !stderr.contains("tenant a"), "{stderr}");
}

#[test]
fn a_config_path_that_is_a_directory_stops_the_start_with_64() {
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_aigronova"))
        .args(["--config", data.path().to_str().unwrap(), "up", "--http-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not a file"), "{output:?}");
}

#[test]
fn an_upstream_set_for_a_service_up_runs_itself_stops_the_start_with_64() {
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_aigronova"))
        .args(["up", "--http-addr", "127.0.0.1:0", "--data-dir", data.path().to_str().unwrap()])
        .env("AIGRONOVA__GATEWAY__UPSTREAMS__FINQUANTUM", "http://127.0.0.1:6392")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("gateway.upstreams.finquantum is set") && stderr.contains("serve gateway"), "{stderr}");
}

#[test]
fn a_service_served_alone_answers_metrics_on_its_own_port() {
    let data = tempfile::tempdir().unwrap();
    let keys = Command::new(env!("CARGO_BIN_EXE_aigronova")).arg("keygen").output().unwrap();
    let keys = String::from_utf8(keys.stdout).unwrap();
    let verifying_key = keys
        .lines()
        .find_map(|line| line.strip_prefix("AIGRONOVA__INTERNAL_AUTH__VERIFYING_KEY="))
        .expect("keygen prints the verifying key");
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_aigronova"))
        .args(["serve", "ai-governance"])
        .env("AIGRONOVA__INTERNAL_AUTH__VERIFYING_KEY", verifying_key)
        .env("AIGRONOVA__AI_GOVERNANCE__GRPC_ADDR", "127.0.0.1:0")
        .env("AIGRONOVA__AI_GOVERNANCE__DATABASE_URL", format!("sqlite://{}", data.path().join("g.db").display()))
        .env("AIGRONOVA__AI_GOVERNANCE__SIGNING_KEY_FILE", data.path().join("checkpoint.key"))
        .env("AIGRONOVA__AI_GOVERNANCE__MASTER_KEY_FILE", data.path().join("master.key"))
        .env("AIGRONOVA__TELEMETRY__METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    aigronova_gateway::install_crypto_provider();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{metrics_port}");
    let scraped = runtime.block_on(async {
        for _ in 0..100 {
            if let Ok(response) = client.get(format!("{url}/metrics")).send().await {
                let status = response.status();
                let not_found = client.get(format!("{url}/v1/anything")).send().await.unwrap().status();
                return Some((status, not_found));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    });
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    let (metrics, other) = scraped.expect("the metrics port answers");
    assert_eq!((metrics.as_u16(), other.as_u16()), (200, 404));
    assert!(status.success(), "serve ai-governance exits cleanly on SIGINT: {status}");
    assert!(data.path().join("checkpoint.key").exists(), "the checkpoint key file is created");
    assert!(data.path().join("master.key").exists(), "the master key file is created");
}

/// `up` run to its end, as a start that fails ends: its exit code and standard error.
fn up_once(data_dir: &std::path::Path, http_addr: &str, admin_key: Option<&str>) -> (Option<i32>, String) {
    up_once_with(data_dir, http_addr, admin_key, &[])
}

/// [`up_once`] with the settings `env` as well.
fn up_once_with(
    data_dir: &std::path::Path,
    http_addr: &str,
    admin_key: Option<&str>,
    env: &[(&str, &str)],
) -> (Option<i32>, String) {
    let ort = std::env::var("ORT_DYLIB_PATH").expect("ORT_DYLIB_PATH is not set: run the tests with `make test`");
    let mut command = Command::new(env!("CARGO_BIN_EXE_aigronova"));
    command
        .args(["up", "--http-addr", http_addr, "--data-dir"])
        .arg(data_dir)
        .env("ORT_DYLIB_PATH", ort)
        .env("AIGRONOVA__INFERENCE__MODELS_DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/../models"))
        .env_remove("AIGRONOVA_ADMIN_KEY");
    if let Some(key) = admin_key {
        command.env("AIGRONOVA_ADMIN_KEY", key);
    }
    command.envs(env.iter().copied());
    let output = command.output().unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn a_first_start_that_cannot_listen_keeps_no_administrator_key_and_the_next_one_hands_one_over() {
    aigronova_gateway::install_crypto_provider();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (code, stderr) = up_once(&data_dir, &busy.local_addr().unwrap().to_string(), None);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&format!("cannot listen for HTTP on {}", busy.local_addr().unwrap())), "{stderr}");
    assert!(admin_key_notice(&stderr).is_none(), "no key is made before the port is held: {stderr}");
    drop(busy);

    let running = start(&data_dir, None);
    assert!(admin_key_notice(&running.head).is_some(), "the next start hands one over: {}", running.head);
    let admin = std::fs::read_to_string(data_dir.join("admin-key")).unwrap().trim().to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let status = runtime.block_on(async {
        let client = reqwest::Client::new();
        client.get(format!("{}/v1/admin/tenants", running.url)).bearer_auth(&admin).send().await.unwrap().status()
    });
    assert_eq!(status, 200);
    stop(running);
}

#[test]
fn the_administrator_key_set_at_start_replaces_every_other() {
    aigronova_gateway::install_crypto_provider();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    let first = "agk_first_0123456789abcdef0123456789abcdef";
    let second = "agk_second_0123456789abcdef0123456789abcdef";
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let status = |url: &str, key: &str| {
        runtime.block_on(async {
            let client = reqwest::Client::new();
            client.get(format!("{url}/v1/admin/tenants")).bearer_auth(key).send().await.unwrap().status().as_u16()
        })
    };
    let running = start(&data_dir, Some(first));
    assert!(admin_key_notice(&running.head).is_none(), "a key was given: none is made");
    assert_eq!(status(&running.url, first), 200);
    stop(running);
    let running = start(&data_dir, Some(second));
    assert_eq!((status(&running.url, first), status(&running.url, second)), (401, 200));
    stop(running);
    // The key stays the administrator key when the next start names none.
    let running = start(&data_dir, None);
    assert_eq!((status(&running.url, first), status(&running.url, second)), (401, 200));
    // A tenant's key cannot become the administrator's.
    let (_, tenant_key) = runtime.block_on(tenant_with_key(&running.url, second, &["health:read"]));
    let tenant_key = tenant_key["key"].as_str().unwrap().to_owned();
    stop(running);
    let (code, stderr) = up_once(&data_dir, "127.0.0.1:0", Some(&tenant_key));
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("AIGRONOVA_ADMIN_KEY is a tenant's API key"), "{stderr}");
    // A key used before, and revoked since, can be the administrator key again.
    let running = start(&data_dir, Some(first));
    assert_eq!((status(&running.url, first), status(&running.url, second)), (200, 401));
    stop(running);

    for short in [
        "a",
        "agk_too_short",
        "agk_with a space in it 0123456789abcdef",
        "agk.with.dots.0123456789abcdef0123456789",
        "{\"agk\":\"0123456789abcdef0123456789abcdef\"}",
    ] {
        let (code, stderr) = up_once(&data_dir, "127.0.0.1:0", Some(short));
        assert_eq!(code, Some(64), "{short:?}: {stderr}");
        assert!(stderr.contains("AIGRONOVA_ADMIN_KEY must be at least 32"), "{stderr}");
    }
}

#[test]
fn settings_that_cannot_work_stop_the_start_with_64_and_say_which() {
    let data = tempfile::tempdir().unwrap();
    let empty = data.path().join("no-models");
    std::fs::create_dir(&empty).unwrap();
    let (code, stderr) = up_once_with(
        data.path(),
        "127.0.0.1:0",
        None,
        &[("AIGRONOVA__INFERENCE__MODELS_DIR", empty.to_str().unwrap())],
    );
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains(&format!("no version found under {}/", empty.display())), "{stderr}");
    assert!(stderr.contains("set inference.models_dir"), "{stderr}");

    let (code, stderr) =
        up_once_with(data.path(), "127.0.0.1:0", None, &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("ONNX Runtime"), "{stderr}");
}
