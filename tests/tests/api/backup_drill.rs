//! The backup drill of `deploy/backup/`, against the real PostgreSQL: populate the platform through
//! the gateway (ai-governance's audit log included), back up every service database with
//! `backup.sh`, drop the databases, restore them with `restore.sh`, check them with `verify.sh` (row
//! counts, and the audit log's Merkle roots recomputed by `aigronova audit roots`), read the data
//! back through a platform started on the restored databases, and run `drill.sh` (restore into
//! scratch databases, verify, drop). Prints how long each phase took.
//!
//! The scripts run the `aigronova` binary of this build (`<target>/debug/aigronova`): build it
//! first (`cargo build --bin aigronova`; a test run of the whole workspace builds it too).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use aigronova_ai_governance::checkpoint::CheckpointSigner;
use aigronova_cli::audit::{self, VerifyArgs};
use aigronova_e2e::{Backend, TestApp, postgres_admin_url, spawn_app, spawn_app_with};
use base64::Engine;
use serde_json::Value;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

fn scripts_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/backup"))
}

/// The `aigronova` binary next to this test's own (the test runs from `<target>/debug/deps/`),
/// which the scripts run as `aigronova audit roots`. Fails, saying how to build it, when it is
/// missing or older than the `audit roots` subcommand.
fn aigronova_bin() -> PathBuf {
    let test_binary = std::env::current_exe().expect("the test binary's path");
    let profile_dir = test_binary
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("{} is not in <target>/<profile>/deps/", test_binary.display()));
    let binary = profile_dir.join("aigronova");
    assert!(
        binary.is_file(),
        "the aigronova binary is not at {}: build it with `cargo build --bin aigronova` (with the same \
         CARGO_TARGET_DIR) before running the backup drill; a test run of the whole workspace builds it too",
        binary.display()
    );
    let help = Command::new(&binary)
        .args(["audit", "roots", "--help"])
        .output()
        .unwrap_or_else(|error| panic!("{} does not run: {error}", binary.display()));
    assert!(
        help.status.success(),
        "{} has no `audit roots` subcommand: it was built from older sources; rebuild it with \
         `cargo build --bin aigronova`",
        binary.display()
    );
    binary
}

/// The drill's settings: a `file://` target, a passphrase file, the three service databases and
/// the `aigronova` binary.
struct Drill {
    target: tempfile::TempDir,
    passphrase_file: PathBuf,
    databases: Vec<(&'static str, String)>,
    aigronova_bin: PathBuf,
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
        // The scripts name a service after its variable: AIGRONOVA__AI_GOVERNANCE__DATABASE_URL is ai_governance.
        let databases = vec![
            ("gateway", app.gateway_database_url.clone()),
            ("healthquantum", app.health_database_url.clone()),
            ("ai_governance", app.governance_database_url.clone()),
        ];
        Self { target, passphrase_file, databases, aigronova_bin: aigronova_bin() }
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
            .env("AIGRONOVA_BACKUP_SERVICES", "gateway healthquantum ai-governance")
            .env("AIGRONOVA_BIN", &self.aigronova_bin)
            .env_remove("AIGRONOVA_BACKUP_PASSPHRASE");
        for (service, url) in &self.databases {
            command.env(format!("AIGRONOVA__{}__DATABASE_URL", service.to_uppercase()), url);
        }
        command.output().unwrap_or_else(|error| panic!("{script} does not start: {error}"))
    }

    /// Runs a script that must succeed, and returns its standard output.
    fn run_ok(&self, script: &str, args: &[&str]) -> String {
        self.run_ok_logging(script, args).0
    }

    /// Runs a script that must succeed, and returns its standard output and its log (standard error).
    fn run_ok_logging(&self, script: &str, args: &[&str]) -> (String, String) {
        let output = self.run(script, args, &self.passphrase_file);
        let log = String::from_utf8(output.stderr).expect("UTF-8 log");
        assert!(output.status.success(), "{script} failed:\n{log}");
        (String::from_utf8(output.stdout).expect("UTF-8 output"), log)
    }

    /// Runs a script that must fail, and returns its log (standard error).
    fn run_failing(&self, script: &str, args: &[&str]) -> String {
        let output = self.run(script, args, &self.passphrase_file);
        let log = String::from_utf8(output.stderr).expect("UTF-8 log");
        assert!(!output.status.success(), "{script} succeeded:\n{log}");
        log
    }

    fn manifest(&self, backup_id: &str) -> String {
        std::fs::read_to_string(self.backups_dir().join(backup_id).join("manifest.tsv"))
            .expect("the backup has a manifest")
    }

    /// `rows` lines of the backup's manifest: (service, table) → rows.
    fn manifest_row_counts(&self, backup_id: &str) -> BTreeMap<(String, String), u64> {
        self.manifest(backup_id)
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split('\t').collect();
                (fields[0] == "rows")
                    .then(|| ((fields[1].to_owned(), fields[2].to_owned()), fields[3].parse().expect("a row count")))
            })
            .collect()
    }

    /// `audit` lines of the backup's manifest: (service, tenant) → (tree size, hex root).
    fn manifest_audit_roots(&self, backup_id: &str) -> BTreeMap<(String, String), (u64, String)> {
        self.manifest(backup_id)
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split('\t').collect();
                (fields[0] == "audit").then(|| {
                    assert_eq!(fields.len(), 5, "audit <service> <tenant> <size> <root>: {line:?}");
                    let size = fields[3].parse().expect("a tree size");
                    ((fields[1].to_owned(), fields[2].to_owned()), (size, fields[4].to_owned()))
                })
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

/// Waits until ai-governance holds `entries` audit entries and healthquantum's outbox is empty, so
/// that the backup catches the log complete and no event is still on its way; fails after 30 s.
async fn wait_for_audit_log(app: &TestApp, entries: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (stored, pending) =
            (app.count_governance_rows("audit_entries").await, app.count_health_rows("audit_outbox").await);
        if stored == entries && pending == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the audit log holds {stored} of {entries} entries, {pending} pending");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The latest checkpoint ai-governance signed for `tenant`: (tree size, hex root).
async fn latest_checkpoint(governance_url: &str, tenant: &str) -> (u64, String) {
    let mut connection = PgConnection::connect(governance_url).await.expect("PostgreSQL reachable");
    let (size, root): (i64, String) = sqlx::query_as(
        "SELECT tree_size, root_hash FROM audit_checkpoints WHERE tenant_id = $1 ORDER BY tree_size DESC LIMIT 1",
    )
    .bind(tenant)
    .fetch_one(&mut connection)
    .await
    .expect("a checkpoint of the tenant");
    (u64::try_from(size).expect("a tree size"), root)
}

#[tokio::test]
async fn a_backup_restores_every_row_after_the_databases_are_dropped() {
    let mut phases = Phases::start();
    // The installation's keys (secrets in production) outlive its databases: the checkpoint key,
    // and healthquantum's and ai-governance's master keys, without which the restored personal
    // data does not open.
    let checkpoint_key = CheckpointSigner::generate();
    let new_master_key = || {
        base64::engine::general_purpose::STANDARD
            .encode([uuid::Uuid::new_v4().into_bytes(), uuid::Uuid::new_v4().into_bytes()].concat())
    };
    let (master_key, governance_master_key) = (new_master_key(), new_master_key());
    let app = spawn_app_with(Backend::Postgres, |config| {
        config.ai_governance.signing_key = Some(checkpoint_key.to_base64());
        config.ai_governance.master_key = Some(governance_master_key.clone());
        config.healthquantum.master_key = Some(master_key.clone());
    })
    .await;
    let drill = Drill::new(&app);
    let (tenant, key) = app.tenant_with_key().await;
    let (other_tenant, other_key) = app.tenant_with_key().await;
    let auditor_key = app.create_key(&tenant, &["governance:read"]).await;
    let patients =
        [app.create_patient(&key).await, app.create_patient(&key).await, app.create_patient(&other_key).await];
    for _ in 0..2 {
        let response =
            app.post(&format!("/v1/health/patients/{}/assessments", patients[0]), &key, &assessment_request()).await;
        assert_eq!(response.status(), 200, "assessment");
    }
    // A read of personal data: an entry in the other tenant's audit log.
    let response = app.get(&format!("/v1/health/patients/{}", patients[2]), &other_key).await;
    assert_eq!(response.status(), 200, "the other tenant reads its patient");
    // Three registrations, two assessments and the read; and the read of the first patient that
    // the refusal of the second one's first CPF, the first one's, told.
    wait_for_audit_log(&app, 7).await;
    phases.end("populate (2 tenants, 3 patients, 2 assessments, 7 audit entries)");

    let backup_id = drill.run_ok("backup.sh", &[]).trim().to_owned();
    phases.end("backup");
    let counts = drill.manifest_row_counts(&backup_id);
    let count_of = |service: &str, table: &str| counts.get(&(service.to_owned(), table.to_owned())).copied();
    assert_eq!(count_of("gateway", "public.tenants"), Some(2), "manifest: {counts:?}");
    assert_eq!(
        count_of("gateway", "public.api_keys"),
        Some(4),
        "two tenant keys, the auditor's and the admin key: {counts:?}"
    );
    assert_eq!(count_of("healthquantum", "public.patients"), Some(3), "manifest: {counts:?}");
    assert_eq!(count_of("healthquantum", "public.assessments"), Some(2), "manifest: {counts:?}");
    assert_eq!(count_of("ai_governance", "public.audit_entries"), Some(7), "manifest: {counts:?}");
    // One Merkle root per tenant, recomputed from the leaves in the dump's snapshot: the roots that
    // ai-governance signed.
    let roots = drill.manifest_audit_roots(&backup_id);
    let audited: Vec<(String, u64)> =
        roots.iter().map(|((service, tenant), (size, _))| (format!("{service}/{tenant}"), *size)).collect();
    let mut expected = vec![(format!("ai_governance/{tenant}"), 5), (format!("ai_governance/{other_tenant}"), 2)];
    expected.sort();
    assert_eq!(audited, expected, "the manifest's audit lines:\n{}", drill.manifest(&backup_id));
    for ((_, audited_tenant), (size, root)) in &roots {
        let signed = latest_checkpoint(&app.governance_database_url, audited_tenant).await;
        assert_eq!((*size, root.clone()), signed, "the root recorded for {audited_tenant} is the signed one");
    }
    let backup_dir = drill.backups_dir().join(&backup_id);
    let dump = std::fs::read(backup_dir.join("healthquantum.dump.gpg")).expect("the dump is stored");
    assert!(!dump.windows(11).any(|window| window == b"Maria Silva"), "the stored dump is encrypted");

    let (gateway_url, health_url, governance_url) =
        (app.gateway_database_url.clone(), app.health_database_url.clone(), app.governance_database_url.clone());
    app.stop().await;
    for url in [&gateway_url, &health_url, &governance_url] {
        assert!(!database_exists(database_name(url)).await, "the drill dropped {}", database_name(url));
    }
    phases.end("stop the platform and drop the databases");

    drill.run_ok("restore.sh", &[&backup_id]);
    phases.end("restore");
    let (_, log) = drill.run_ok_logging("verify.sh", &[&backup_id]);
    assert!(
        log.contains("ai_governance: audit logs of 2 tenants, sizes and Merkle roots match"),
        "verify.sh checks the audit roots: {log}"
    );
    phases.end("verify");

    execute(&health_url, "DELETE FROM assessments WHERE id = (SELECT min(id) FROM assessments)").await;
    let stderr = drill.run_failing("verify.sh", &["latest"]);
    assert!(stderr.contains("public.assessments: 2 rows in the backup, 1 now"), "verify.sh says which table: {stderr}");
    drill.run_ok("restore.sh", &["--replace", "latest"]);
    drill.run_ok("verify.sh", &["latest"]);
    phases.end("verify a lost row is found, restore --replace and verify again");

    // An audit entry rewritten in place: every row count still matches, the tenant's root does not.
    execute(
        &governance_url,
        &format!("UPDATE audit_entries SET leaf = leaf || ' ' WHERE tenant_id = '{tenant}' AND idx = 1"),
    )
    .await;
    let stderr = drill.run_failing("verify.sh", &["latest"]);
    assert!(
        stderr.contains(&format!(
            "ai_governance: tenant {tenant}: audit log: size 5, root {} in the backup; size 5, root ",
            roots[&("ai_governance".to_owned(), tenant.clone())].1
        )),
        "verify.sh names the tenant whose log changed: {stderr}"
    );
    assert!(!stderr.contains(&other_tenant), "the other tenant's log is intact: {stderr}");
    assert!(!stderr.contains("rows in the backup"), "the row counts match: {stderr}");
    drill.run_ok("restore.sh", &["--replace", "latest"]);
    drill.run_ok("verify.sh", &["latest"]);
    phases.end("verify an edited audit entry is found, restore --replace and verify again");

    let restored = spawn_app_with(Backend::Postgres, |config| {
        config.gateway.database_url = gateway_url.clone();
        config.healthquantum.database_url = health_url.clone();
        config.ai_governance.database_url = governance_url.clone();
        config.ai_governance.signing_key = Some(checkpoint_key.to_base64());
        config.ai_governance.master_key = Some(governance_master_key.clone());
        config.healthquantum.master_key = Some(master_key.clone());
    })
    .await;
    // The restored log verifies against the installation's public key, as an outside verifier would.
    let response = restored.get("/v1/governance/audit/checkpoint", &auditor_key).await;
    assert_eq!(response.status(), 200, "the auditor's key works after the restore");
    let checkpoint: Value = response.json().await.unwrap();
    let (size, root) = &roots[&("ai_governance".to_owned(), tenant.clone())];
    let served_size =
        checkpoint["treeSize"].as_str().and_then(|size| size.parse().ok()).or(checkpoint["treeSize"].as_u64());
    assert_eq!(served_size, Some(*size), "{checkpoint}");
    assert_eq!(checkpoint["rootHash"].as_str(), Some(root.as_str()), "{checkpoint}");
    let verify = VerifyArgs {
        url: restored.address.clone(),
        key: auditor_key.clone(),
        public_key: Some(checkpoint_key.public_key().to_base64()),
        entry: None,
        checkpoint: None,
        tenant: None,
    };
    assert_eq!(audit::run(&verify).await, 0, "aigronova audit verify passes the restored log");
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

    let (drill_output, log) = drill.run_ok_logging("drill.sh", &[&backup_id]);
    assert!(drill_output.is_empty(), "drill.sh logs to standard error only");
    assert!(log.contains("sizes and Merkle roots match"), "drill.sh verifies the audit roots: {log}");
    for url in [&gateway_url, &health_url, &governance_url] {
        let scratch = format!("{}_drill", database_name(url));
        assert!(!database_exists(&scratch).await, "drill.sh leaves {scratch} behind");
    }
    phases.end("drill.sh: restore into scratch databases, verify, drop");
    for url in [&gateway_url, &health_url, &governance_url] {
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
    let governance_database = database_name(&app.governance_database_url).to_owned();
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
        for database in [&gateway_database, &health_database, &governance_database] {
            assert!(!database_exists(database).await, "{case}: restore.sh created {database} anyway");
        }
    }
}
