//! The backup drill of `deploy/backup/`, against the real PostgreSQL: populate the platform through
//! the gateway, back up every service database with `backup.sh`, drop the databases, restore them
//! with `restore.sh`, check them with `verify.sh`, read the data back through a platform started on
//! the restored databases, and run `drill.sh` (restore into scratch databases, verify, drop). Prints
//! how long each phase took.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Instant,
};

use aigronova_e2e::{Backend, TestApp, postgres_admin_url, spawn_app, spawn_app_with};
use serde_json::Value;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

fn scripts_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/backup"))
}

/// The drill's settings: a `file://` target, a passphrase file, and the two service databases.
struct Drill {
    target: tempfile::TempDir,
    passphrase_file: PathBuf,
    databases: Vec<(&'static str, String)>,
}

impl Drill {
    fn new(app: &TestApp) -> Self {
        for tool in ["psql", "pg_dump", "pg_restore", "gpg"] {
            let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().expect("sh runs");
            assert!(
                found.status.success(),
                "{tool} is not installed: install Debian's postgresql-client and gnupg to run the backup drill"
            );
        }
        let target = tempfile::tempdir().expect("temporary folder");
        let passphrase_file = target.path().join("passphrase");
        std::fs::write(&passphrase_file, "correct horse battery staple").expect("passphrase written");
        let databases =
            vec![("gateway", app.gateway_database_url.clone()), ("healthquantum", app.health_database_url.clone())];
        Self { target, passphrase_file, databases }
    }

    fn backups_dir(&self) -> PathBuf {
        self.target.path().join("backups")
    }

    /// Runs `deploy/backup/<script>` with the drill's settings.
    fn run(&self, script: &str, args: &[&str], passphrase_file: &Path) -> Output {
        let mut command = Command::new("bash");
        command
            .arg(scripts_dir().join(script))
            .args(args)
            .env("AIGRONOVA_BACKUP_TARGET", format!("file://{}", self.backups_dir().display()))
            .env("AIGRONOVA_BACKUP_PASSPHRASE_FILE", passphrase_file)
            .env("AIGRONOVA_BACKUP_SERVICES", "gateway healthquantum")
            .env_remove("AIGRONOVA_BACKUP_PASSPHRASE");
        for (service, url) in &self.databases {
            command.env(format!("AIGRONOVA__{}__DATABASE_URL", service.to_uppercase()), url);
        }
        command.output().unwrap_or_else(|error| panic!("{script} does not start: {error}"))
    }

    /// Runs a script that must succeed, and returns its standard output.
    fn run_ok(&self, script: &str, args: &[&str]) -> String {
        let output = self.run(script, args, &self.passphrase_file);
        assert!(output.status.success(), "{script} failed:\n{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).expect("UTF-8 output")
    }

    /// `rows` lines of the backup's manifest: (service, table) → rows.
    fn manifest_row_counts(&self, backup_id: &str) -> BTreeMap<(String, String), u64> {
        let manifest = std::fs::read_to_string(self.backups_dir().join(backup_id).join("manifest.tsv"))
            .expect("the backup has a manifest");
        manifest
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split('\t').collect();
                (fields[0] == "rows")
                    .then(|| ((fields[1].to_owned(), fields[2].to_owned()), fields[3].parse().expect("a row count")))
            })
            .collect()
    }
}

/// A timer that prints each phase of the drill as it ends.
struct Phases(Instant);

impl Phases {
    fn start() -> Self {
        Self(Instant::now())
    }

    fn end(&mut self, phase: &str) {
        println!("backup drill: {phase} took {:.2} s", self.0.elapsed().as_secs_f64());
        self.0 = Instant::now();
    }
}

fn assessment_request() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/examples/breast-cancer-assessment.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("example assessment")).expect("JSON")
}

async fn execute(database_url: &str, statement: &str) {
    let mut connection = PgConnection::connect(database_url).await.expect("PostgreSQL reachable");
    sqlx::raw_sql(AssertSqlSafe(statement.to_owned())).execute(&mut connection).await.expect(statement);
}

async fn database_exists(name: &str) -> bool {
    let mut connection = PgConnection::connect(&postgres_admin_url()).await.expect("PostgreSQL reachable");
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_one(&mut connection)
        .await
        .expect("pg_database query");
    count == 1
}

fn database_name(url: &str) -> &str {
    url.rsplit_once('/').expect("a database URL").1
}

#[tokio::test]
async fn a_backup_restores_every_row_after_the_databases_are_dropped() {
    let mut phases = Phases::start();
    let app = spawn_app(Backend::Postgres).await;
    let drill = Drill::new(&app);
    let (_, key) = app.tenant_with_key().await;
    let (_, other_key) = app.tenant_with_key().await;
    let patients =
        [app.create_patient(&key).await, app.create_patient(&key).await, app.create_patient(&other_key).await];
    for _ in 0..2 {
        let response =
            app.post(&format!("/v1/health/patients/{}/assessments", patients[0]), &key, &assessment_request()).await;
        assert_eq!(response.status(), 200, "assessment");
    }
    phases.end("populate (2 tenants, 3 patients, 2 assessments)");

    let backup_id = drill.run_ok("backup.sh", &[]).trim().to_owned();
    phases.end("backup");
    let counts = drill.manifest_row_counts(&backup_id);
    let count_of = |service: &str, table: &str| counts.get(&(service.to_owned(), table.to_owned())).copied();
    assert_eq!(count_of("gateway", "public.tenants"), Some(2), "manifest: {counts:?}");
    assert_eq!(count_of("gateway", "public.api_keys"), Some(3), "two tenant keys and the admin key: {counts:?}");
    assert_eq!(count_of("healthquantum", "public.patients"), Some(3), "manifest: {counts:?}");
    assert_eq!(count_of("healthquantum", "public.assessments"), Some(2), "manifest: {counts:?}");
    let backup_dir = drill.backups_dir().join(&backup_id);
    let dump = std::fs::read(backup_dir.join("healthquantum.dump.gpg")).expect("the dump is stored");
    assert!(!dump.windows(11).any(|window| window == b"Maria Silva"), "the stored dump is encrypted");

    let (gateway_url, health_url) = (app.gateway_database_url.clone(), app.health_database_url.clone());
    app.stop().await;
    assert!(!database_exists(database_name(&health_url)).await, "the drill dropped the databases");
    phases.end("stop the platform and drop the databases");

    drill.run_ok("restore.sh", &[&backup_id]);
    phases.end("restore");
    drill.run_ok("verify.sh", &[&backup_id]);
    phases.end("verify");

    execute(&health_url, "DELETE FROM assessments WHERE id = (SELECT min(id) FROM assessments)").await;
    let refused = drill.run("verify.sh", &["latest"], &drill.passphrase_file);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "verify.sh passes a database that lost a row:\n{stderr}");
    assert!(stderr.contains("public.assessments: 2 rows in the backup, 1 now"), "verify.sh says which table: {stderr}");
    drill.run_ok("restore.sh", &["--replace", "latest"]);
    drill.run_ok("verify.sh", &["latest"]);
    phases.end("verify a lost row is found, restore --replace and verify again");

    let restored = spawn_app_with(Backend::Postgres, |config| {
        config.gateway.database_url = gateway_url.clone();
        config.healthquantum.database_url = health_url.clone();
    })
    .await;
    let response = restored.get(&format!("/v1/health/patients/{}", patients[0]), &key).await;
    assert_eq!(response.status(), 200, "the key issued before the backup works after the restore");
    let patient: Value = response.json().await.unwrap();
    assert_eq!(patient["name"], "Maria Silva");
    let response = restored.get(&format!("/v1/health/patients/{}", patients[2]), &key).await;
    assert_eq!(response.status(), 404, "tenants stay apart after the restore");
    let response = restored.get(&format!("/v1/health/patients/{}", patients[2]), &other_key).await;
    assert_eq!(response.status(), 200);
    restored.stop().await;
    phases.end("read the restored data through the gateway");

    let drill_output = drill.run_ok("drill.sh", &[&backup_id]);
    assert!(drill_output.is_empty(), "drill.sh logs to standard error only");
    for url in [&gateway_url, &health_url] {
        let scratch = format!("{}_drill", database_name(url));
        assert!(!database_exists(&scratch).await, "drill.sh leaves {scratch} behind");
    }
    phases.end("drill.sh: restore into scratch databases, verify, drop");
    for url in [&gateway_url, &health_url] {
        execute(&postgres_admin_url(), &format!(r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#, database_name(url)))
            .await;
    }
}

/// What the second drill does to a good backup before restoring it.
enum Damage {
    WrongPassphrase,
    FlippedByte,
}

#[tokio::test]
async fn restore_refuses_a_backup_it_cannot_trust_and_leaves_no_database_behind() {
    let app = spawn_app(Backend::Postgres).await;
    let drill = Drill::new(&app);
    let (_, key) = app.tenant_with_key().await;
    app.create_patient(&key).await;
    let backup_id = drill.run_ok("backup.sh", &[]).trim().to_owned();
    let gateway_database = database_name(&app.gateway_database_url).to_owned();
    let health_database = database_name(&app.health_database_url).to_owned();
    app.stop().await;

    let wrong_passphrase = drill.target.path().join("wrong-passphrase");
    std::fs::write(&wrong_passphrase, "not the passphrase").unwrap();
    let dump = drill.backups_dir().join(&backup_id).join("healthquantum.dump.gpg");
    let cases = [
        ("a wrong passphrase", Damage::WrongPassphrase, "does not decrypt"),
        ("a dump changed after the backup", Damage::FlippedByte, "does not match the manifest's checksum"),
    ];
    for (case, damage, message) in cases {
        let passphrase_file = match damage {
            Damage::WrongPassphrase => &wrong_passphrase,
            Damage::FlippedByte => {
                let mut bytes = std::fs::read(&dump).unwrap();
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0xff;
                std::fs::write(&dump, bytes).unwrap();
                &drill.passphrase_file
            }
        };
        let output = drill.run("restore.sh", &[&backup_id], passphrase_file);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{case}: restore.sh succeeded");
        assert!(stderr.contains(message), "{case}: restore.sh says {stderr}");
        for database in [&gateway_database, &health_database] {
            assert!(!database_exists(database).await, "{case}: restore.sh created {database} anyway");
        }
    }
}
