//! Test harness: starts the whole platform in-process on free ports, against SQLite files in a
//! temporary folder or fresh PostgreSQL databases, and talks to it through the gateway.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use aigronova_cli::{AppConfig, Platform};
use aigronova_platform::{Shutdown, config::InferenceConfig};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// Where the tests find PostgreSQL; trust authentication as on the CI machine.
pub fn postgres_admin_url() -> String {
    std::env::var("AIGRONOVA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
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
    pub gateway_database_url: String,
    shutdown: Shutdown,
    platform: Option<Platform>,
    postgres_databases: Vec<String>,
    _data_dir: tempfile::TempDir,
}

/// Starts the gateway and every service in this process, on `backend`.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// [`spawn_app`] with a configuration tweak applied before the start.
pub async fn spawn_app_with(backend: Backend, configure: impl FnOnce(&mut AppConfig)) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temporary folder");
    let mut config = AppConfig::default().embedded("127.0.0.1:0".parse().unwrap(), data_dir.path());
    config.inference = InferenceConfig { models_dir: models_dir(), ..InferenceConfig::default() };
    assert!(
        std::env::var_os("ORT_DYLIB_PATH").is_some(),
        "ORT_DYLIB_PATH is not set: run the tests with `make test`, which fetches ONNX Runtime"
    );
    let mut postgres_databases = Vec::new();
    if backend == Backend::Postgres {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let gateway_db = format!("e2e_{suffix}_gateway");
        let health_db = format!("e2e_{suffix}_health");
        create_postgres_database(&gateway_db).await;
        create_postgres_database(&health_db).await;
        config.gateway.database_url = postgres_url(&gateway_db);
        config.healthquantum.database_url = postgres_url(&health_db);
        postgres_databases = vec![gateway_db, health_db];
    }
    configure(&mut config);
    let health_database_url = config.healthquantum.database_url.clone();
    let gateway_database_url = config.gateway.database_url.clone();
    let admin_key = format!("agk_test_admin_{}", uuid::Uuid::new_v4().simple());
    let shutdown = Shutdown::new();
    let platform = Platform::start(&config, Some(&admin_key), shutdown.clone()).await.expect("the platform starts");
    TestApp {
        address: format!("http://{}", platform.http_addr),
        admin_key,
        backend,
        client: reqwest::Client::new(),
        health_database_url,
        gateway_database_url,
        shutdown,
        platform: Some(platform),
        postgres_databases,
        _data_dir: data_dir,
    }
}

fn postgres_url(database: &str) -> String {
    let admin = postgres_admin_url();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base);
    format!("{base}/{database}")
}

async fn create_postgres_database(name: &str) {
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
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str, key: &str) -> reqwest::Response {
        self.client.get(self.url(path)).bearer_auth(key).send().await.expect("request sent")
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

    /// Creates a tenant with the admin key and returns its id.
    pub async fn create_tenant(&self, name: &str) -> String {
        let response = self.post("/v1/admin/tenants", &self.admin_key, &json!({"name": name, "plan": "starter"})).await;
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
        response.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_owned()
    }

    /// A tenant and a key that can read and write health data.
    pub async fn tenant_with_key(&self) -> (String, String) {
        let tenant = self.create_tenant("Clínica Teste").await;
        let key = self.create_key(&tenant, &["health:read", "health:write"]).await;
        (tenant, key)
    }

    /// Creates a patient and returns its id.
    pub async fn create_patient(&self, key: &str) -> String {
        let response = self
            .post(
                "/v1/health/patients",
                key,
                &json!({"name": "Maria Silva", "cpf": "529.982.247-25", "birthDate": "1980-02-29"}),
            )
            .await;
        assert_eq!(response.status(), 200, "patient creation");
        response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
    }

    /// Rows in a table of healthquantum's database, read directly.
    pub async fn count_health_rows(&self, table: &str) -> i64 {
        sqlx::any::install_default_drivers();
        let mut connection = sqlx::AnyConnection::connect(&self.health_database_url).await.expect("database opens");
        let row = sqlx::query(AssertSqlSafe(format!("SELECT COUNT(*) AS n FROM {table}")))
            .fetch_one(&mut connection)
            .await
            .expect("count");
        sqlx::Row::try_get::<i64, _>(&row, "n").expect("count is an integer")
    }

    /// Stops the platform and drops its PostgreSQL databases.
    pub async fn stop(mut self) {
        self.shutdown.trigger();
        if let Some(platform) = self.platform.take() {
            platform.wait().await.expect("the platform stops cleanly");
        }
        if !self.postgres_databases.is_empty() {
            let mut connection = PgConnection::connect(&postgres_admin_url()).await.expect("PostgreSQL reachable");
            for name in &self.postgres_databases {
                sqlx::raw_sql(AssertSqlSafe(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#)))
                    .execute(&mut connection)
                    .await
                    .expect("DROP DATABASE");
            }
        }
    }
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
