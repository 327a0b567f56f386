//! Test harness: starts the whole platform in-process on free ports, against SQLite files in a
//! temporary folder or fresh PostgreSQL databases, and talks to it through the gateway.

#![forbid(unsafe_code)]

pub mod credit;
pub mod institution;
pub mod oidc;

use std::{net::TcpStream, path::PathBuf, time::Duration};

use aigronova_cli::{AppConfig, Platform};
use aigronova_gateway::{AdminKey, Gateway};
use aigronova_platform::{Shutdown, auth::TokenSigner, config::InferenceConfig};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// Where the tests find PostgreSQL; trust authentication as on the CI machine.
pub fn postgres_admin_url() -> String {
    std::env::var("AIGRONOVA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Where the tests find Redis (`AIGRONOVA_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`);
/// fails the test, saying how to start it, when nothing listens there.
pub fn redis_url() -> String {
    let url = std::env::var("AIGRONOVA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let address = url.trim_start_matches("redis://").trim_end_matches('/');
    let reachable =
        address.parse().is_ok_and(|address| TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_ok());
    assert!(reachable, "Redis is not reachable at {url}; start it with `redis-server --daemonize yes`");
    url
}

/// A Redis key prefix of one test, so that tests sharing the Redis do not meet.
pub fn unique_redis_prefix() -> String {
    format!("e2e:{}:", uuid::Uuid::new_v4().simple())
}

/// A loopback port that nothing listens on now, for a service a test starts later. It lies below the
/// kernel's range for ephemeral ports, so the servers the test starts on port 0 in the meantime cannot
/// take it.
pub fn port_to_start_later() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (1_024u16, ephemeral_start.max(1_025));
    // A random start, so that tests running at once do not walk the same ports.
    let start = std::collections::hash_map::RandomState::new().build_hasher().finish();
    let span = u64::from(high - low);
    (0..span)
        .map(|step| low + ((start + step) % span) as u16)
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("no free loopback port below the ephemeral range")
}

/// The repository's `models/` folder.
pub fn models_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../models"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A running platform and a client for it.
pub struct TestApp {
    pub address: String,
    pub admin_key: String,
    pub backend: Backend,
    pub client: reqwest::Client,
    pub health_database_url: String,
    /// finquantum's database; empty when the gateway runs alone.
    pub fin_database_url: String,
    /// ai-governance's database; empty when the gateway runs alone.
    pub governance_database_url: String,
    pub gateway_database_url: String,
    shutdown: Shutdown,
    /// The configuration the platform started with; `None` when the gateway runs alone.
    config: Option<AppConfig>,
    gateway_config: aigronova_gateway::Config,
    signing_key: String,
    replicas: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    running: Option<Running>,
    postgres_databases: PostgresDatabases,
    _data_dir: tempfile::TempDir,
}

/// What a [`TestApp`] runs: the whole platform, or the gateway alone.
enum Running {
    Platform(Box<Platform>),
    Gateway(tokio::task::JoinHandle<anyhow::Result<()>>),
}

/// Starts the gateway and every service in this process, on `backend`.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// Starts the platform as [`spawn_app`] does, with `tweak` applied to its configuration last.
pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut AppConfig)) -> TestApp {
    aigronova_gateway::install_crypto_provider();
    let data_dir = tempfile::tempdir().expect("temporary folder");
    let mut config = AppConfig::default().embedded(Some("127.0.0.1:0".parse().unwrap()), data_dir.path());
    config.inference = InferenceConfig { models_dir: models_dir(), ..InferenceConfig::default() };
    // Chosen here rather than by the platform, so that gateway replicas sign like the first.
    config.internal_auth.signing_key = Some(TokenSigner::generate().to_base64());
    config.internal_auth.service_signing_key = Some(TokenSigner::generate().to_base64());
    assert!(
        std::env::var_os("ORT_DYLIB_PATH").is_some(),
        "ORT_DYLIB_PATH is not set: run the tests with `make test`, which fetches ONNX Runtime"
    );
    let mut postgres_databases = PostgresDatabases::default();
    if backend == Backend::Postgres {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let gateway_db = format!("e2e_{suffix}_gateway");
        let health_db = format!("e2e_{suffix}_health");
        let governance_db = format!("e2e_{suffix}_governance");
        let fin_db = format!("e2e_{suffix}_fin");
        for name in [&gateway_db, &health_db, &governance_db, &fin_db] {
            postgres_databases.create(name).await;
        }
        config.gateway.database_url = postgres_url(&gateway_db);
        config.healthquantum.database_url = postgres_url(&health_db);
        config.ai_governance.database_url = postgres_url(&governance_db);
        config.finquantum.database_url = postgres_url(&fin_db);
    }
    tweak(&mut config);
    let signing_key = config.internal_auth.signing_key.clone().expect("a signing key");
    let health_database_url = config.healthquantum.database_url.clone();
    let governance_database_url = config.ai_governance.database_url.clone();
    let fin_database_url = config.finquantum.database_url.clone();
    let gateway_database_url = config.gateway.database_url.clone();
    let admin_key = format!("agk_test_admin_{}", uuid::Uuid::new_v4().simple());
    let shutdown = Shutdown::new();
    let platform =
        Platform::start(&config, AdminKey::Given(&admin_key), shutdown.clone()).await.expect("the platform starts");
    TestApp {
        address: format!("http://{}", platform.http_addr),
        config: Some(config),
        gateway_config: platform.gateway_config.clone(),
        signing_key,
        replicas: Vec::new(),
        admin_key,
        backend,
        client: reqwest::Client::new(),
        health_database_url,
        fin_database_url,
        governance_database_url,
        gateway_database_url,
        shutdown,
        running: Some(Running::Platform(Box::new(platform))),
        postgres_databases,
        _data_dir: data_dir,
    }
}

/// Starts the gateway alone, on SQLite, with its `healthquantum` upstream at `upstream_url` (a
/// test server) and `customize` applied to its configuration. There is no healthquantum database.
pub async fn spawn_gateway(upstream_url: &str, customize: impl FnOnce(&mut AppConfig)) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temporary folder");
    let mut config = AppConfig::default().embedded(Some("127.0.0.1:0".parse().unwrap()), data_dir.path());
    config.gateway.upstreams.insert("healthquantum".into(), upstream_url.to_owned());
    customize(&mut config);
    let admin_key = format!("agk_test_admin_{}", uuid::Uuid::new_v4().simple());
    let signer = TokenSigner::generate();
    let signing_key = signer.to_base64();
    let gateway =
        Gateway::build(&config.gateway, signer, AdminKey::Given(&admin_key)).await.expect("the gateway starts");
    let address = format!("http://{}", gateway.local_addr());
    let shutdown = Shutdown::new();
    let task = tokio::spawn(gateway.run_until_stopped(shutdown.clone()));
    TestApp {
        address,
        admin_key,
        backend: Backend::Sqlite,
        client: reqwest::Client::new(),
        health_database_url: String::new(),
        fin_database_url: String::new(),
        governance_database_url: String::new(),
        gateway_database_url: config.gateway.database_url.clone(),
        config: None,
        gateway_config: config.gateway.clone(),
        signing_key,
        replicas: Vec::new(),
        shutdown,
        running: Some(Running::Gateway(task)),
        postgres_databases: PostgresDatabases::default(),
        _data_dir: data_dir,
    }
}

fn postgres_url(database: &str) -> String {
    let admin = postgres_admin_url();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base);
    format!("{base}/{database}")
}

/// PostgreSQL databases made for one test, dropped with this value, so that a test that fails
/// leaves none behind.
#[derive(Default)]
pub struct PostgresDatabases(Vec<String>);

impl PostgresDatabases {
    /// Creates database `name` and returns its URL; fails the test, saying how to start
    /// PostgreSQL, when it is not reachable.
    pub async fn create(&mut self, name: &str) -> String {
        let url = postgres_admin_url();
        let mut connection = PgConnection::connect(&url).await.unwrap_or_else(|error| {
            panic!(
                "PostgreSQL is not reachable at {url} ({error}); start it with \
                 `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
            )
        });
        sqlx::raw_sql(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .execute(&mut connection)
            .await
            .expect("CREATE DATABASE");
        self.0.push(name.to_owned());
        postgres_url(name)
    }
}

impl Drop for PostgresDatabases {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let names = std::mem::take(&mut self.0);
        // On a thread of its own: this may run inside the test's runtime, unwinding from a panic.
        let dropping = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let mut connection = PgConnection::connect(&postgres_admin_url()).await?;
                for name in &names {
                    sqlx::raw_sql(AssertSqlSafe(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#)))
                        .execute(&mut connection)
                        .await?;
                }
                anyhow::Ok(())
            })
        });
        match dropping.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("the test's PostgreSQL databases were not dropped: {error:#}"),
            Err(_) => eprintln!("dropping the test's PostgreSQL databases panicked"),
        }
    }
}

impl TestApp {
    /// The folder of the platform's embedded files (SQLite databases, keys, objects).
    pub fn data_dir(&self) -> &std::path::Path {
        self._data_dir.path()
    }

    /// Where `service` (`healthquantum`, `ai-governance`…) serves gRPC, for calls that bypass the
    /// gateway. Panics when the gateway runs alone.
    pub fn grpc_addr(&self, service: &str) -> std::net::SocketAddr {
        match &self.running {
            Some(Running::Platform(platform)) => *platform
                .services
                .get(service)
                .unwrap_or_else(|| panic!("the platform runs no service named {service}")),
            _ => panic!("only the whole platform serves {service} over gRPC; this app runs the gateway alone"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// The gRPC URL the gateway calls the service `owner` at.
    pub fn upstream_url(&self, owner: &str) -> &str {
        &self.gateway_config.upstreams[owner]
    }

    pub async fn get(&self, path: &str, key: &str) -> reqwest::Response {
        self.get_from(&self.address, path, key).await
    }

    /// A GET through the gateway at `address` (the first one, or a replica).
    pub async fn get_from(&self, address: &str, path: &str, key: &str) -> reqwest::Response {
        self.client.get(format!("{address}{path}")).bearer_auth(key).send().await.expect("request sent")
    }

    /// The key the gateway signs its callers' internal tokens with, for calls that bypass it.
    pub fn gateway_signer(&self) -> TokenSigner {
        TokenSigner::from_base64(&self.signing_key).expect("the test's signing key")
    }

    /// The key the services sign their calls to ai-governance with.
    pub fn service_signer(&self) -> TokenSigner {
        let config = self.config.as_ref().expect("the whole platform runs");
        let key = config.internal_auth.service_signing_key.as_deref().expect("a service signing key");
        TokenSigner::from_base64(key).expect("the test's service signing key")
    }

    /// Starts one more gateway on a free port, on the same database, services and settings as
    /// the first (as another replica of a deployment), and returns its address.
    pub async fn start_gateway_replica(&mut self) -> String {
        let signer = self.gateway_signer();
        let gateway = Gateway::build(&self.gateway_config, signer, AdminKey::Given(&self.admin_key))
            .await
            .expect("the replica starts");
        let address = format!("http://{}", gateway.local_addr());
        self.replicas.push(tokio::spawn(gateway.run_until_stopped(self.shutdown.clone())));
        address
    }

    pub async fn post(&self, path: &str, key: &str, body: &Value) -> reqwest::Response {
        self.client.post(self.url(path)).bearer_auth(key).json(body).send().await.expect("request sent")
    }

    pub async fn patch(&self, path: &str, key: &str, body: &Value) -> reqwest::Response {
        self.client.patch(self.url(path)).bearer_auth(key).json(body).send().await.expect("request sent")
    }

    pub async fn delete(&self, path: &str, key: &str) -> reqwest::Response {
        self.client.delete(self.url(path)).bearer_auth(key).send().await.expect("request sent")
    }

    /// Posts raw bytes as JSON, for malformed bodies.
    pub async fn post_raw(&self, path: &str, key: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    /// The entries of the tenant's audit log (the first 1,000) once `done` holds of them, as the
    /// services' relays deliver their events a moment after the calls; fails the test after 20 s.
    pub async fn audit_entries_once(&self, key: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let page: Value = self.get("/v1/governance/audit/entries?pageSize=1000", key).await.json().await.unwrap();
            let entries = page["entries"].as_array().cloned().unwrap_or_default();
            if done(&entries) {
                return entries;
            }
            let actions: Vec<&str> = entries.iter().filter_map(|entry| entry["action"].as_str()).collect();
            assert!(tokio::time::Instant::now() < deadline, "the audit log never got there: {actions:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks for a review of the decision `decision_id` with `reason`, as soon as the decision has
    /// reached the audit log (404 until then); the answer to the first call that is not a 404, or
    /// the last 404 after 20 s.
    pub async fn review_decision(&self, key: &str, decision_id: &Value, reason: &str) -> reqwest::Response {
        let body = serde_json::json!({"decisionId": decision_id, "reason": reason});
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let response = self.post("/v1/governance/reviews", key, &body).await;
            if response.status() != 404 || tokio::time::Instant::now() > deadline {
                return response;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates a tenant on the Starter plan with the admin key and returns its id.
    pub async fn create_tenant(&self, name: &str) -> String {
        self.create_tenant_on(name, "starter").await
    }

    /// Creates a tenant on `plan`, for tests whose bursts of calls are not about rate limits.
    pub async fn create_tenant_on(&self, name: &str, plan: &str) -> String {
        let response = self.post("/v1/admin/tenants", &self.admin_key, &json!({"name": name, "plan": plan})).await;
        assert_eq!(response.status(), 201, "tenant creation");
        response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
    }

    /// Issues a key of `tenant_id` with `scopes` and returns it.
    pub async fn create_key(&self, tenant_id: &str, scopes: &[&str]) -> String {
        let response = self
            .post(
                &format!("/v1/admin/tenants/{tenant_id}/api-keys"),
                &self.admin_key,
                &json!({"name": "test", "scopes": scopes}),
            )
            .await;
        assert_eq!(response.status(), 201, "key creation");
        let issued: Value = response.json().await.unwrap();
        // Shaped as the list shows keys: a key that does not expire says so with `null`.
        assert_eq!(issued.get("expireTime"), Some(&Value::Null), "{issued}");
        issued["key"].as_str().unwrap().to_owned()
    }

    /// A tenant and a key that can read and write health data.
    pub async fn tenant_with_key(&self) -> (String, String) {
        let tenant = self.create_tenant("Clínica Teste").await;
        let key = self.create_key(&tenant, &["health:read", "health:write"]).await;
        (tenant, key)
    }

    /// Creates a patient and returns its id: with CPF 529.982.247-25 while no patient of the tenant
    /// has it (the data-subject tests find the patient by it), else with another valid CPF, since a
    /// CPF is one patient of a tenant (409 otherwise).
    pub async fn create_patient(&self, key: &str) -> String {
        static OTHER_CPFS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mut cpf = "529.982.247-25".to_owned();
        loop {
            let body = json!({"name": "Maria Silva", "cpf": cpf, "birthDate": "1980-02-29"});
            let response = self.post("/v1/health/patients", key, &body).await;
            if response.status() == 409 {
                cpf = credit::cpf(900_000_000 + OTHER_CPFS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
                continue;
            }
            let status = response.status();
            let answer = response.text().await.unwrap();
            assert_eq!(status, 200, "patient creation: {answer}");
            return serde_json::from_str::<Value>(&answer).unwrap()["id"].as_str().unwrap().to_owned();
        }
    }

    /// The entries of the audit log of `key`'s tenant that `keep` keeps, once there are `count` of
    /// them (events reach the log through the services' outboxes); fails after 20 s saying how
    /// many there were.
    pub async fn audited(&self, key: &str, count: usize, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let page: Value = self.get("/v1/governance/audit/entries?pageSize=1000", key).await.json().await.unwrap();
            let kept: Vec<Value> =
                page["entries"].as_array().into_iter().flatten().filter(|entry| keep(entry)).cloned().collect();
            if kept.len() == count {
                return kept;
            }
            assert!(tokio::time::Instant::now() < deadline, "{} of {count} entries in the log: {kept:?}", kept.len());
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Suspends a tenant through the admin API.
    pub async fn suspend_tenant(&self, tenant_id: &str) {
        let response = self
            .patch(&format!("/v1/admin/tenants/{tenant_id}"), &self.admin_key, &json!({"status": "suspended"}))
            .await;
        assert_eq!(response.status(), 200, "tenant {tenant_id} suspended");
    }

    /// Takes the write lock of healthquantum's embedded SQLite database, as another process
    /// writing to it would, until the connection returned is closed.
    pub async fn hold_health_writes(&self) -> sqlx::AnyConnection {
        assert!(self.health_database_url.starts_with("sqlite:"), "an embedded database's lock");
        sqlx::any::install_default_drivers();
        let mut connection = sqlx::AnyConnection::connect(&self.health_database_url).await.expect("database opens");
        sqlx::query("BEGIN IMMEDIATE").execute(&mut connection).await.expect("the write lock");
        connection
    }

    /// Rows in a table of healthquantum's database, read directly.
    pub async fn count_health_rows(&self, table: &str) -> i64 {
        count_rows(&self.health_database_url, table).await
    }

    /// Rows in a table of finquantum's database, read directly.
    pub async fn count_fin_rows(&self, table: &str) -> i64 {
        count_rows(&self.fin_database_url, table).await
    }

    /// Rows in a table of ai-governance's database, read directly.
    pub async fn count_governance_rows(&self, table: &str) -> i64 {
        count_rows(&self.governance_database_url, table).await
    }

    /// Rows in a table of the gateway's database, read directly.
    pub async fn count_gateway_rows(&self, table: &str) -> i64 {
        count_rows(&self.gateway_database_url, table).await
    }

    /// Runs `sql` on ai-governance's database directly, as someone with database access would.
    pub async fn execute_on_governance(&self, sql: &str) -> u64 {
        execute_on(&self.governance_database_url, sql).await
    }

    /// Runs `sql` on healthquantum's database directly, as someone with database access would.
    pub async fn execute_on_health(&self, sql: &str) -> u64 {
        execute_on(&self.health_database_url, sql).await
    }

    /// Runs `sql` on finquantum's database directly, as a row stored by an earlier release would be.
    pub async fn execute_on_fin(&self, sql: &str) -> u64 {
        execute_on(&self.fin_database_url, sql).await
    }

    /// [`Self::restart`] with the configuration changed by `change` (a new signing key, say).
    pub async fn restart_with(&mut self, change: impl FnOnce(&mut AppConfig)) {
        change(self.config.as_mut().expect("a platform, not a lone gateway"));
        self.restart().await;
    }

    /// Stops every server of the platform, as a restart of the processes would, and starts them
    /// again on the same databases (ports change; `address` follows).
    pub async fn restart(&mut self) {
        let config = self.config.clone().expect("a platform, not a lone gateway");
        self.shutdown.trigger();
        if let Some(Running::Platform(platform)) = self.running.take() {
            platform.wait().await.expect("the platform stops cleanly");
        }
        self.shutdown = Shutdown::new();
        let platform = Platform::start(&config, AdminKey::Given(&self.admin_key), self.shutdown.clone())
            .await
            .expect("the platform restarts");
        self.address = format!("http://{}", platform.http_addr);
        self.gateway_config = platform.gateway_config.clone();
        self.running = Some(Running::Platform(Box::new(platform)));
    }

    /// Stops the platform and drops its PostgreSQL databases.
    pub async fn stop(mut self) {
        self.halt().await;
        drop(std::mem::take(&mut self.postgres_databases));
    }

    /// Stops the platform as [`Self::stop`] does, then counts the rows of `table` in
    /// healthquantum's database, which is kept until then.
    pub async fn stop_then_count_health_rows(mut self, table: &str) -> i64 {
        self.halt().await;
        count_rows(&self.health_database_url, table).await
    }

    async fn halt(&mut self) {
        self.shutdown.trigger();
        match self.running.take() {
            Some(Running::Platform(platform)) => platform.wait().await.expect("the platform stops cleanly"),
            Some(Running::Gateway(task)) => task.await.expect("the gateway task").expect("the gateway stops cleanly"),
            None => {}
        }
        for replica in self.replicas.drain(..) {
            replica.await.expect("the replica task").expect("the replica stops cleanly");
        }
    }
}

/// Rows in `table` of the database at `url`.
async fn count_rows(url: &str, table: &str) -> i64 {
    sqlx::any::install_default_drivers();
    let mut connection = sqlx::AnyConnection::connect(url).await.expect("database opens");
    let row = sqlx::query(AssertSqlSafe(format!("SELECT COUNT(*) AS n FROM {table}")))
        .fetch_one(&mut connection)
        .await
        .expect("count");
    sqlx::Row::try_get::<i64, _>(&row, "n").expect("count is an integer")
}

/// Checks that `response` is a problem document with `status`, and returns it.
pub async fn assert_problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status, "status");
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert_eq!(content_type, "application/problem+json", "content type");
    let problem: Value = response.json().await.expect("a JSON problem document");
    assert_eq!(problem["status"], status, "problem status: {problem}");
    for member in ["type", "title", "detail", "requestId"] {
        assert!(problem[member].is_string(), "problem lacks {member}: {problem}");
    }
    problem
}

/// Waits until another session of the PostgreSQL database `connection` is on waits for a lock
/// (a row `connection` holds, in the tests that use it); fails the test, saying `who` never
/// waited, after 20 s.
pub async fn until_a_session_waits_for_a_lock(connection: &mut sqlx::AnyConnection, who: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut *connection)
        .await
        .expect("pg_stat_activity");
        if waiting > 0 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{who} never waited for the row held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until none of `needles` is in the embedded database at `database_url` or in its
/// write-ahead log, which an erasure empties once it has answered (nothing to wait for on
/// PostgreSQL); fails after 10 s naming the file and what it still holds.
pub async fn until_gone_from_disk(database_url: &str, needles: &[&[u8]]) {
    let Some(path) = database_url.strip_prefix("sqlite://") else { return };
    let path = path.split('?').next().unwrap_or(path);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    for file in [path.to_owned(), format!("{path}-wal")] {
        for needle in needles {
            loop {
                let bytes = std::fs::read(&file).unwrap_or_default();
                if !bytes.windows(needle.len()).any(|window| window == *needle) {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{file} still holds {:?}",
                    String::from_utf8_lossy(needle)
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// The text of a PDF, as `pdftotext -layout` extracts it; fails, saying what to install, when
/// poppler-utils is missing.
pub fn pdf_text(pdf: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join("document.pdf");
    std::fs::write(&path, pdf).expect("PDF written");
    let output =
        std::process::Command::new("pdftotext").arg("-layout").arg(&path).arg("-").output().unwrap_or_else(|error| {
            panic!("cannot run pdftotext ({error}); install poppler-utils (apt-get install poppler-utils)")
        });
    assert!(output.status.success(), "pdftotext refused the PDF: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("pdftotext writes UTF-8")
}

/// Runs `sql` on the database at `url` directly; the rows it affected.
async fn execute_on(url: &str, sql: &str) -> u64 {
    sqlx::any::install_default_drivers();
    let mut connection = sqlx::AnyConnection::connect(url).await.expect("database opens");
    sqlx::query(AssertSqlSafe(sql.to_owned())).execute(&mut connection).await.expect("statement runs").rows_affected()
}

/// A transaction on `connection` that acts for `tenant` as the services' tenant transactions do on
/// PostgreSQL: under the role row-level security applies to, with the tenant set.
pub async fn acting_for<'c>(
    connection: &'c mut sqlx::PgConnection,
    tenant: &str,
) -> sqlx::Transaction<'c, sqlx::Postgres> {
    use sqlx::Connection;
    let mut transaction = connection.begin().await.expect("a transaction");
    sqlx::query("SELECT set_config('aigronova.tenant_id', $1, true)")
        .bind(tenant)
        .execute(&mut *transaction)
        .await
        .expect("the tenant set");
    sqlx::raw_sql("SET LOCAL ROLE aigronova_tenant").execute(&mut *transaction).await.expect("the tenant role taken");
    transaction
}
