//! The patient lifecycle through the gateway: create, get, list with pages and filters, update,
//! delete; one patient a CPF; what an update shows a key that may not read; personal fields
//! sealed in the database; row-level security on PostgreSQL; medical images.

use std::time::Duration;

use aigronova_e2e::{Backend, TestApp, assert_problem, spawn_app};
use serde_json::{Value, json};
use sqlx::{Connection, Row};

const SCOPES: &[&str] = &["health:read", "health:write", "governance:read"];

async fn create(app: &TestApp, key: &str, body: Value) -> Value {
    let response = app.post("/v1/health/patients", key, &body).await;
    assert_eq!(response.status(), 200, "patient {body}");
    response.json().await.unwrap()
}

async fn list(app: &TestApp, key: &str, query: &str) -> Value {
    let response = app.get(&format!("/v1/health/patients?{query}"), key).await;
    assert_eq!(response.status(), 200, "list {query}");
    response.json().await.unwrap()
}

fn names(page: &Value) -> Vec<String> {
    page["patients"].as_array().into_iter().flatten().map(|p| p["name"].as_str().unwrap().to_owned()).collect()
}

async fn patient_lifecycle(backend: Backend) {
    let app = spawn_app(backend).await;
    // Professional: the lifecycle's calls stay within its burst.
    let tenant = app.create_tenant_on("Clínica Ciclo", "professional").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let maria = create(
        &app,
        &key,
        json!({"name": "Maria Silva", "cpf": "529.982.247-25", "birthDate": "1980-02-29",
               "email": "maria@exemplo.com.br", "phone": "+55 11 91234-5678"}),
    )
    .await;
    assert_eq!(maria["email"], "maria@exemplo.com.br");
    let mario =
        create(&app, &key, json!({"name": "Mário Souza", "cpf": "111.444.777-35", "birthDate": "1975-06-01"})).await;
    create(&app, &key, json!({"name": "João Lima", "cpf": "12345678909", "birthDate": "1990-12-31"})).await;

    // Pages in id order, then filters.
    let first = list(&app, &key, "pageSize=2").await;
    assert_eq!(names(&first).len(), 2);
    let token = first["nextPageToken"].as_str().expect("a next page");
    let second = list(&app, &key, &format!("pageSize=2&pageToken={token}")).await;
    assert_eq!(names(&second).len(), 1);
    assert!(second["nextPageToken"].as_str().is_none_or(str::is_empty), "{second}");
    // A token goes on only with the filter it was returned for.
    let filtered = list(&app, &key, "namePrefix=m&pageSize=1").await;
    let filtered_token = filtered["nextPageToken"].as_str().expect("a next page of names with m");
    assert_eq!(names(&list(&app, &key, &format!("namePrefix=m&pageSize=1&pageToken={filtered_token}")).await).len(), 1);
    for query in [format!("pageSize=2&pageToken={filtered_token}"), format!("namePrefix=ma&pageToken={filtered_token}")]
    {
        let problem = assert_problem(app.get(&format!("/v1/health/patients?{query}"), &key).await, 400).await;
        assert_eq!(problem["field"], "pageToken", "{query}: {problem}");
    }
    // Nor from another position than its own: its digest covers the patient it goes on after.
    let (after, digest) = token.split_once('.').unwrap();
    let moved = format!("{}.{digest}", maria["id"].as_str().unwrap());
    assert_ne!(after, maria["id"].as_str().unwrap());
    let problem = assert_problem(app.get(&format!("/v1/health/patients?pageToken={moved}"), &key).await, 400).await;
    assert_eq!(problem["field"], "pageToken", "{problem}");
    let bare_id = after;
    let problem = assert_problem(app.get(&format!("/v1/health/patients?pageToken={bare_id}"), &key).await, 400).await;
    assert_eq!(problem["field"], "pageToken");
    let whole = list(&app, &key, "pageSize=3").await;
    assert_eq!(names(&whole).len(), 3);
    assert!(whole["nextPageToken"].as_str().is_none_or(str::is_empty), "a full last page has no next: {whole}");
    let matching = list(&app, &key, "namePrefix=mar&pageSize=2").await;
    assert_eq!(names(&matching).len(), 2);
    assert!(matching["nextPageToken"].as_str().is_none_or(str::is_empty), "{matching}");
    let mut by_prefix = names(&list(&app, &key, "namePrefix=mar").await);
    by_prefix.sort();
    assert_eq!(by_prefix, ["Maria Silva", "Mário Souza"], "case and accents ignored");
    assert_eq!(names(&list(&app, &key, "cpf=111.444.777-35").await), ["Mário Souza"]);
    // The same with the filter in the body, out of the URL.
    let searched = app.post("/v1/health/patients/search", &key, &json!({"cpf": "111.444.777-35"})).await;
    assert_eq!(searched.status(), 200);
    assert_eq!(names(&searched.json().await.unwrap()), ["Mário Souza"]);
    let searched = app.post("/v1/health/patients/search", &key, &json!({"namePrefix": "mar", "pageSize": 1})).await;
    let page: Value = searched.json().await.unwrap();
    assert_eq!(names(&page).len(), 1, "{page}");
    let token = page["nextPageToken"].as_str().unwrap();
    assert_eq!(names(&list(&app, &key, &format!("namePrefix=mar&pageSize=1&pageToken={token}")).await).len(), 1);
    let problem = assert_problem(app.post("/v1/health/patients/search", &key, &json!({"cpf": "123"})).await, 400).await;
    assert_eq!(problem["field"], "cpf");
    assert_eq!(names(&list(&app, &key, "namePrefix=zz").await).len(), 0);
    // A CPF that is none, blanks among them, is refused rather than dropped as a filter.
    for cpf in ["123", "%20", "%09"] {
        let problem = assert_problem(app.get(&format!("/v1/health/patients?cpf={cpf}"), &key).await, 400).await;
        assert_eq!(problem["field"], "cpf", "{cpf}");
    }
    let blank = assert_problem(app.get("/v1/health/patients?cpf=%20", &key).await, 400).await;
    assert_eq!(blank["detail"], "cpf: is blank: send the 11 digits of a CPF, or leave cpf out");
    let blank = assert_problem(app.get("/v1/health/patients?namePrefix=%20%09", &key).await, 400).await;
    assert_eq!(blank["detail"], "namePrefix: is blank: send the start of a name, or leave namePrefix out");
    assert_problem(app.get("/v1/health/patients?pageSize=1000", &key).await, 400).await;
    // A prefix no name can start with is refused rather than answered with an empty list.
    let long = "a".repeat(201);
    // So is one of only what names are searched without (an accent, a zero-width space), which
    // would otherwise select every patient.
    // A tab or a line break, at an end as much as within.
    for prefix in [
        "a%00b",
        "ana%0A",
        "%09ana",
        "ana%C2%85",
        "%E2%80%AEa",
        long.as_str(),
        "%E2%80%8B",
        "%CC%81",
        "%EF%BB%BF%C2%AD",
    ] {
        let problem =
            assert_problem(app.get(&format!("/v1/health/patients?namePrefix={prefix}"), &key).await, 400).await;
        assert_eq!(problem["field"], "namePrefix", "{prefix}");
    }
    assert_eq!(names(&list(&app, &key, &format!("namePrefix={}", "a".repeat(200))).await).len(), 0);

    // Update: only the fields sent; a bad value changes nothing.
    let id = maria["id"].as_str().unwrap();
    let path = format!("/v1/health/patients/{id}");
    let response = app.patch(&path, &key, &json!({"name": "Maria Silva Santos", "email": ""})).await;
    assert_eq!(response.status(), 200);
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["name"], "Maria Silva Santos");
    assert!(updated["email"].as_str().is_none_or(str::is_empty), "{updated}");
    assert_eq!(updated["phone"], "+55 11 91234-5678");
    assert!(updated["updateTime"].is_string());
    let problem = assert_problem(app.patch(&path, &key, &json!({"cpf": "123.456.789-00"})).await, 400).await;
    assert_eq!(problem["field"], "cpf");
    assert_problem(app.patch(&path, &key, &json!({})).await, 400).await;
    // The id in the body, if given, is the path's, alone.
    let other = "0190a3b4-c5d6-7e8f-9a0b-1c2d3e4f5a6b";
    for (body_id, said) in [
        (format!(" {id}"), "id has a blank or a line break beside it: send the id alone"),
        (format!("{id}\n"), "id has a blank or a line break beside it: send the id alone"),
        (other.to_owned(), "id is given by the path; the body names another"),
    ] {
        let problem =
            assert_problem(app.patch(&path, &key, &json!({"id": body_id, "email": "a@b.co"})).await, 400).await;
        assert_eq!((problem["field"].as_str(), problem["detail"].as_str()), (Some("id"), Some(said)), "{body_id:?}");
    }
    let fetched: Value = app.get(&path, &key).await.json().await.unwrap();
    assert_eq!((fetched["name"].as_str(), fetched["cpf"].as_str()), (Some("Maria Silva Santos"), Some("52998224725")));

    // An assessment's inputs are health data, sealed too.
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/examples/breast-cancer-assessment.json"))
            .unwrap();
    let assessed =
        app.post(&format!("{path}/assessments"), &key, &serde_json::from_str::<Value>(&example).unwrap()).await;
    assert_eq!(assessed.status(), 200);

    // The database holds no clear text: the personal fields are sealed, the CPF only hashed.
    sqlx::any::install_default_drivers();
    let mut raw = sqlx::AnyConnection::connect(&app.health_database_url).await.unwrap();
    let rows =
        sqlx::query("SELECT name, cpf, birth_date, sealed, cpf_hash FROM patients").fetch_all(&mut raw).await.unwrap();
    assert_eq!(rows.len(), 3);
    for row in &rows {
        let columns: Vec<String> = ["name", "cpf", "birth_date", "sealed", "cpf_hash"]
            .iter()
            .map(|column| row.try_get::<Option<String>, _>(*column).unwrap().unwrap_or_default())
            .collect();
        let all = columns.join("|");
        for secret in
            ["Maria", "Mário", "João", "52998224725", "11144477735", "12345678909", "1980-02-29", "maria@", "91234"]
        {
            assert!(!all.contains(secret), "{secret:?} is stored in clear: {all}");
        }
        assert!(columns[3].starts_with("v1:"), "sealed: {}", columns[3]);
        assert_eq!(columns[4].len(), 64, "a blind index");
    }
    let inputs: Vec<String> = sqlx::query_scalar("SELECT features FROM assessments").fetch_all(&mut raw).await.unwrap();
    assert_eq!(inputs.len(), 1);
    assert!(inputs[0].starts_with("v1:") && !inputs[0].contains("mean radius"), "in clear: {}", inputs[0]);
    raw.close().await.unwrap();

    // Delete: a patient without assessments goes whole, keeping nothing; a second delete finds nothing.
    let mario_path = format!("/v1/health/patients/{}", mario["id"].as_str().unwrap());
    let deleted = app.delete(&mario_path, &key).await;
    assert_eq!(deleted.status(), 200);
    assert_eq!(deleted.json::<Value>().await.unwrap(), json!({"retained": []}));
    assert_problem(app.get(&mario_path, &key).await, 404).await;
    assert_problem(app.delete(&mario_path, &key).await, 404).await;
    assert_eq!(names(&list(&app, &key, "").await).len(), 2);

    // Another tenant sees none of them.
    let other = app.create_tenant("Outra").await;
    let other_key = app.create_key(&other, SCOPES).await;
    assert_eq!(names(&list(&app, &other_key, "").await).len(), 0);
    assert_problem(app.get(&path, &other_key).await, 404).await;
    assert_problem(app.patch(&path, &other_key, &json!({"name": "X"})).await, 404).await;

    // Reads, changes and deletions of personal data are audited.
    let wanted = [
        "health.CreatePatient",
        "health.ListPatients",
        "health.SearchPatients",
        "health.UpdatePatient",
        "health.DeletePatient",
        "health.GetPatient",
    ];
    app.audit_entries_once(&key, |entries| {
        wanted.iter().all(|action| entries.iter().any(|entry| entry["action"] == *action))
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn patient_lifecycle_on_sqlite() {
    patient_lifecycle(Backend::Sqlite).await;
}

#[tokio::test]
async fn patient_lifecycle_on_postgres() {
    patient_lifecycle(Backend::Postgres).await;
}

/// A key that may change patients but not read them sees, in the answer to a change, only what it
/// sent: the rest of the record would be a read it may not make.
async fn an_update_by_a_key_that_may_not_read_shows_only_what_it_sent(backend: Backend) {
    let app = spawn_app(backend).await;
    let tenant = app.create_tenant_on("Clínica Escrita", "professional").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let writer = app.create_key(&tenant, &["health:write"]).await;
    let maria = create(
        &app,
        &key,
        json!({"name": "Maria Silva", "cpf": "529.982.247-25", "birthDate": "1980-02-29",
               "email": "maria@exemplo.com.br", "phone": "+55 11 91234-5678"}),
    )
    .await;
    let path = format!("/v1/health/patients/{}", maria["id"].as_str().unwrap());
    assert_problem(app.get(&path, &writer).await, 403).await;

    let response = app.patch(&path, &writer, &json!({"email": ""})).await;
    assert_eq!(response.status(), 200);
    let cleared: Value = response.json().await.unwrap();
    assert_eq!(cleared["id"], maria["id"]);
    assert!(cleared["updateTime"].is_string(), "{cleared}");
    for field in ["name", "cpf", "birthDate", "email", "phone"] {
        assert!(
            cleared[field].as_str().is_none_or(str::is_empty),
            "{field} shown to a key that may not read: {cleared}"
        );
    }
    let renamed: Value = app.patch(&path, &writer, &json!({"name": "Maria Souza"})).await.json().await.unwrap();
    assert_eq!(renamed["name"], "Maria Souza", "what it sent");
    for field in ["cpf", "birthDate", "email", "phone"] {
        assert!(
            renamed[field].as_str().is_none_or(str::is_empty),
            "{field} shown to a key that may not read: {renamed}"
        );
    }

    // A key that may read sees the record as changed, and that is audited as a read.
    let response = app.patch(&path, &key, &json!({"phone": "+55 11 3333-4444"})).await;
    assert_eq!(response.status(), 200);
    let shown: Value = response.json().await.unwrap();
    assert_eq!(
        [&shown["name"], &shown["cpf"], &shown["birthDate"], &shown["phone"]],
        [&json!("Maria Souza"), &json!("52998224725"), &json!("1980-02-29"), &json!("+55 11 3333-4444")]
    );
    assert!(shown["email"].as_str().is_none_or(str::is_empty), "{shown}");
    let updates = |entries: &[Value]| -> Vec<String> {
        entries
            .iter()
            .filter(|entry| entry["action"] == "health.UpdatePatient")
            .filter_map(|entry| entry["kind"].as_str().map(str::to_owned))
            .collect()
    };
    let kinds = updates(&app.audit_entries_once(&key, |entries| updates(entries).len() == 4).await);
    let reads = kinds.iter().filter(|kind| *kind == "sensitive_read").count();
    assert_eq!(reads, 1, "three changes and one read: {kinds:?}");

    // The value held, sent again: nothing is written or audited as a change, the read is.
    let again: Value = app.patch(&path, &key, &json!({"phone": "+55 11 3333-4444"})).await.json().await.unwrap();
    assert_eq!((&again["updateTime"], &again["phone"]), (&shown["updateTime"], &shown["phone"]), "{again}");
    let kinds = updates(&app.audit_entries_once(&key, |entries| updates(entries).len() >= 5).await);
    let changes = kinds.iter().filter(|kind| *kind == "personal_data_change").count();
    assert_eq!((kinds.len(), changes), (5, 3), "one more read, no change: {kinds:?}");

    // A held value sent beside a new one: the change names only the field it altered.
    let response = app.patch(&path, &key, &json!({"birthDate": "1980-02-29", "phone": "+55 11 5555-6666"})).await;
    assert_eq!(response.status(), 200);
    let entries = app.audit_entries_once(&key, |entries| updates(entries).len() >= 7).await;
    let change = entries
        .iter()
        .rev()
        .find(|entry| entry["action"] == "health.UpdatePatient" && entry["kind"] == "personal_data_change")
        .unwrap();
    let leaf: Value = serde_json::from_str(change["leaf"].as_str().unwrap()).unwrap();
    assert_eq!(leaf["details"]["fields"], json!(["phone"]), "{leaf}");
    app.stop().await;
}

#[tokio::test]
async fn an_update_by_a_key_that_may_not_read_shows_only_what_it_sent_on_sqlite() {
    an_update_by_a_key_that_may_not_read_shows_only_what_it_sent(Backend::Sqlite).await;
}

#[tokio::test]
async fn an_update_by_a_key_that_may_not_read_shows_only_what_it_sent_on_postgres() {
    an_update_by_a_key_that_may_not_read_shows_only_what_it_sent(Backend::Postgres).await;
}

/// A CPF is one person: a second patient with it, created or changed to it, is a 409 that names
/// no one, and nothing is stored.
async fn a_cpf_registered_in_the_tenant_is_a_409_and_nothing_is_stored(backend: Backend) {
    let app = spawn_app(backend).await;
    let tenant = app.create_tenant_on("Clínica Cadastro", "professional").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let registered =
        create(&app, &key, json!({"name": "Maria Silva", "cpf": "529.982.247-25", "birthDate": "1980-02-29"})).await;

    let again = json!({"name": "Maria S. Silva", "cpf": "52998224725", "birthDate": "1981-03-01"});
    let problem = assert_problem(app.post("/v1/health/patients", &key, &again).await, 409).await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("a patient with this CPF is already registered"), "{problem}");
    assert_eq!(problem["field"], "cpf", "{problem}");
    assert!(!detail.contains(registered["id"].as_str().unwrap()), "the other patient is not named: {problem}");
    assert_eq!(app.count_health_rows("patients").await, 1);

    // A change to another patient's CPF: refused, and the patient left as it was.
    let joao =
        create(&app, &key, json!({"name": "João Lima", "cpf": "111.444.777-35", "birthDate": "1990-12-31"})).await;
    let path = format!("/v1/health/patients/{}", joao["id"].as_str().unwrap());
    let taking = json!({"name": "João Lima Neto", "cpf": "529.982.247-25"});
    let problem = assert_problem(app.patch(&path, &key, &taking).await, 409).await;
    assert!(problem["detail"].as_str().unwrap().contains("already registered"), "{problem}");
    let unchanged: Value = app.get(&path, &key).await.json().await.unwrap();
    assert_eq!((unchanged["name"].as_str(), unchanged["cpf"].as_str()), (Some("João Lima"), Some("11144477735")));

    // Each refusal told the caller that the person with this CPF is a patient: a read of the
    // registered patient, audited as such.
    let subject = format!("patient:{}", registered["id"].as_str().unwrap());
    let disclosed = app
        .audited(&key, 2, |entry| {
            entry["kind"] == "sensitive_read"
                && entry["leaf"].as_str().is_some_and(|leaf| leaf.contains(&subject) && leaf.contains("refused"))
        })
        .await;
    let actions: Vec<&Value> = disclosed.iter().map(|entry| &entry["action"]).collect();
    assert_eq!(actions, [&json!("health.CreatePatient"), &json!("health.UpdatePatient")]);

    // Two registrations of one CPF at once: one is stored.
    let ana = json!({"name": "Ana Souza", "cpf": "123.456.789-09", "birthDate": "1985-05-05"});
    let (first, second) =
        tokio::join!(app.post("/v1/health/patients", &key, &ana), app.post("/v1/health/patients", &key, &ana));
    let mut statuses = [first.status().as_u16(), second.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409]);
    assert_eq!(app.count_health_rows("patients").await, 3);
    app.stop().await;
}

#[tokio::test]
async fn a_cpf_registered_in_the_tenant_is_a_409_and_nothing_is_stored_on_sqlite() {
    a_cpf_registered_in_the_tenant_is_a_409_and_nothing_is_stored(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_cpf_registered_in_the_tenant_is_a_409_and_nothing_is_stored_on_postgres() {
    a_cpf_registered_in_the_tenant_is_a_409_and_nothing_is_stored(Backend::Postgres).await;
}

#[tokio::test]
async fn row_level_security_hides_other_tenants_from_a_query_without_its_filter() {
    let app = spawn_app(Backend::Postgres).await;
    let first = app.create_tenant("Primeira").await;
    let first_key = app.create_key(&first, SCOPES).await;
    let second = app.create_tenant("Segunda").await;
    let second_key = app.create_key(&second, SCOPES).await;
    create(&app, &first_key, json!({"name": "Ana", "cpf": "529.982.247-25", "birthDate": "1980-01-01"})).await;
    for cpf in ["111.444.777-35", "12345678909"] {
        create(&app, &second_key, json!({"name": "Bia", "cpf": cpf, "birthDate": "1981-01-01"})).await;
    }

    let mut connection = sqlx::PgConnection::connect(&app.health_database_url).await.unwrap();
    let total: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM patients").fetch_one(&mut connection).await.unwrap().get("n");
    assert_eq!(total, 3, "the service's own role sees every row");
    for (tenant, expected) in [(&first, 1i64), (&second, 2)] {
        let mut transaction = aigronova_e2e::acting_for(&mut connection, tenant).await;
        // No tenant filter: the policy is the only thing between this query and the other tenant.
        let seen: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM patients").fetch_one(&mut *transaction).await.unwrap().get("n");
        assert_eq!(seen, expected, "tenant {tenant}");
        let foreign = sqlx::query("UPDATE patients SET updated_at = 'x' WHERE tenant_id <> $1")
            .bind(tenant)
            .execute(&mut *transaction)
            .await
            .unwrap();
        assert_eq!(foreign.rows_affected(), 0, "no write reaches another tenant's rows");
        transaction.rollback().await.unwrap();
    }
    connection.close().await.unwrap();
    app.stop().await;
}

async fn an_assessment_report_is_a_pdf_kept_in_the_object_store(backend: Backend) {
    let app = spawn_app(backend).await;
    let tenant = app.create_tenant("Clínica Relatório").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let patient =
        create(&app, &key, json!({"name": "Maria Silva", "cpf": "529.982.247-25", "birthDate": "1980-02-29"})).await;
    let patient = patient["id"].as_str().unwrap().to_owned();
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(aigronova_e2e::models_dir().join("diabetes-progression/1/reference.json")).unwrap(),
    )
    .unwrap();
    let body = json!({"model": "diabetes-progression", "features": reference["rows"][0]["features"]});
    let assessment: Value =
        app.post(&format!("/v1/health/patients/{patient}/assessments"), &key, &body).await.json().await.unwrap();
    let id = assessment["id"].as_str().unwrap();
    let path = format!("/v1/health/patients/{patient}/assessments/{id}/report");

    let response = app.get(&path, &key).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/pdf");
    // Shown in place, named for saving.
    assert_eq!(response.headers()["content-disposition"], format!("inline; filename=\"{id}-report.pdf\"").as_str());
    let pdf = response.bytes().await.unwrap();
    let text = aigronova_e2e::pdf_text(&pdf);
    for expected in [
        "Maria Silva",
        "***.***.***-25",
        "diabetes-progression v1",
        &format!("{:.4}", assessment["value"].as_f64().unwrap()),
        assessment["riskBand"].as_str().unwrap(),
        assessment["topFeatures"][0]["feature"].as_str().unwrap(),
        "não o substitui",
        "does not replace it",
        "load_diabetes",
        "training_rows 331",
        "heldout_r2 0.4551",
    ] {
        assert!(text.contains(expected), "the report lacks {expected:?}:\n{text}");
    }
    assert!(!text.contains("52998224725"), "the CPF is masked");
    assert!(!text.contains("111.0000"), "counts are whole numbers: {text}");
    // The inputs in scikit-learn's order, as the model card lists them.
    let inputs = &text[text.find("Dados de entrada").unwrap()..text.find("Modelo / Model card").unwrap()];
    let places: Vec<usize> =
        ["age", "sex", "bmi", "bp", "s1", "s6"].iter().map(|name| inputs.find(&format!("{name}:")).unwrap()).collect();
    assert!(places.is_sorted(), "{inputs}");
    let stored = app.data_dir().join(format!("healthquantum-objects/reports/{tenant}/{id}.pdf"));
    // Kept sealed with the tenant's data key: the name and birth date it prints are not on disk.
    let kept = std::fs::read(&stored).expect("the report is kept");
    assert!(kept.starts_with(aigronova_platform::crypto::SEALED_OBJECT), "the report is kept in clear");
    assert!(!kept.windows(4).any(|window| window == b"%PDF"), "the report is kept in clear");
    let again = app.get(&path, &key).await.bytes().await.unwrap();
    assert_eq!(again, pdf, "served from the store");

    // Another tenant's key, an unknown assessment, a malformed id: refused, nothing stored.
    let other = app.create_tenant("Outra").await;
    let other_key = app.create_key(&other, SCOPES).await;
    assert_problem(app.get(&path, &other_key).await, 404).await;
    let unknown = format!("/v1/health/patients/{patient}/assessments/0190a3b4-c5d6-7e8f-9a0b-1c2d3e4f5a6b/report");
    assert_problem(app.get(&unknown, &key).await, 404).await;
    assert_problem(app.get(&format!("/v1/health/patients/{patient}/assessments/nope/report"), &key).await, 400).await;
    let reports = app.data_dir().join("healthquantum-objects/reports");
    let kept: Vec<_> = walk(&reports);
    assert_eq!(kept.len(), 1, "{kept:?}");

    // A corrected name is in the next report: the kept one went with the change.
    let before = std::fs::read(&stored).unwrap();
    let renamed = app.patch(&format!("/v1/health/patients/{patient}"), &key, &json!({"name": "Maria Souza"})).await;
    assert_eq!(renamed.status(), 200);
    assert!(!stored.exists(), "the report went with the change");
    // One kept after the change by a request that read the patient before it does not serve.
    std::fs::write(&stored, &before).unwrap();
    let text = aigronova_e2e::pdf_text(&app.get(&path, &key).await.bytes().await.unwrap());
    assert!(text.contains("Maria Souza") && !text.contains("Maria Silva"), "{text}");
    let remade = aigronova_e2e::pdf_text(&app.get(&path, &key).await.bytes().await.unwrap());
    assert!(remade.contains("Maria Souza"), "{remade}");

    // Made by a version this deployment no longer serves: its report does not show the card of
    // the version served now, but says where that version's card is.
    sqlx::any::install_default_drivers();
    let mut raw = sqlx::AnyConnection::connect(&app.health_database_url).await.unwrap();
    sqlx::query("UPDATE assessments SET model_version = '0' WHERE id = $1").bind(id).execute(&mut raw).await.unwrap();
    std::fs::remove_file(&stored).unwrap();
    let older = aigronova_e2e::pdf_text(&app.get(&path, &key).await.bytes().await.unwrap());
    for expected in ["diabetes-progression v0", "models/diabetes-progression/0/manifest.json", "does not replace it"] {
        assert!(older.contains(expected), "the report lacks {expected:?}:\n{older}");
    }
    assert!(!older.contains("load_diabetes") && !older.contains("heldout_r2"), "{older}");
    sqlx::query("UPDATE assessments SET model_version = '1' WHERE id = $1").bind(id).execute(&mut raw).await.unwrap();

    // Deleting the patient deletes the report, which names them, and keeps the assessment, a
    // clinical record, no longer linked to a person.
    let cpf_hash: String = sqlx::query_scalar("SELECT cpf_hash FROM patients WHERE id = $1")
        .bind(&patient)
        .fetch_one(&mut raw)
        .await
        .unwrap();
    let deleted = app.delete(&format!("/v1/health/patients/{patient}"), &key).await;
    assert_eq!(deleted.status(), 200);
    let deleted: Value = deleted.json().await.unwrap();
    assert_eq!(deleted["retained"][0]["kind"], "assessments", "{deleted}");
    assert!(deleted["retained"][0]["reason"].as_str().unwrap().contains("Lei 13.787/2018"), "{deleted}");
    assert!(!stored.exists(), "the report went with the patient");
    assert_problem(app.get(&format!("/v1/health/patients/{patient}"), &key).await, 404).await;
    assert_problem(app.get(&path, &key).await, 404).await;
    let kept: Vec<String> = sqlx::query_scalar("SELECT patient_id FROM assessments").fetch_all(&mut raw).await.unwrap();
    assert_eq!(kept, [patient.as_str()]);
    let row = sqlx::query("SELECT name, cpf, birth_date, sealed, cpf_hash FROM patients WHERE id = $1")
        .bind(&patient)
        .fetch_one(&mut raw)
        .await
        .unwrap();
    for column in ["name", "cpf", "birth_date", "sealed", "cpf_hash"] {
        let value: Option<String> = row.try_get(column).unwrap();
        assert!(value.unwrap_or_default().is_empty(), "{column} is kept");
    }
    raw.close().await.unwrap();
    // Nor is the CPF's hash, which would tie the kept assessments to it, left in the embedded
    // database's free pages or its write-ahead log.
    aigronova_e2e::until_gone_from_disk(&app.health_database_url, &[cpf_hash.as_bytes()]).await;
    app.stop().await;
}

async fn a_patients_assessments_are_listed_and_read_back(backend: Backend) {
    let app = spawn_app(backend).await;
    let tenant = app.create_tenant_on("Clínica Histórico", "enterprise").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let patient =
        create(&app, &key, json!({"name": "Ana Lima", "cpf": "529.982.247-25", "birthDate": "1975-06-01"})).await;
    let patient = patient["id"].as_str().unwrap().to_owned();
    let base = format!("/v1/health/patients/{patient}/assessments");
    let empty: Value = app.get(&base, &key).await.json().await.unwrap();
    assert_eq!(empty, json!({"assessments": [], "nextPageToken": ""}));

    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(aigronova_e2e::models_dir().join("diabetes-progression/1/reference.json")).unwrap(),
    )
    .unwrap();
    let breast: Value = serde_json::from_str(
        &std::fs::read_to_string(aigronova_e2e::models_dir().join("breast-cancer/1/reference.json")).unwrap(),
    )
    .unwrap();
    let mut answers = Vec::new();
    let rows = reference["rows"].as_array().unwrap().iter().take(2).map(|row| ("diabetes-progression", row));
    for (model, row) in rows.chain([("breast-cancer", &breast["rows"][0])]) {
        let body = json!({"model": model, "features": row["features"]});
        let response = app.post(&base, &key, &body).await;
        assert_eq!(response.status(), 200);
        answers.push(response.text().await.unwrap());
    }

    // Read back as they were answered, oldest first, two to a page.
    let first: Value = app.get(&format!("{base}?pageSize=2"), &key).await.json().await.unwrap();
    let made: Vec<Value> = answers.iter().map(|text| serde_json::from_str(text).unwrap()).collect();
    assert_eq!(first["assessments"], json!(made[..2]));
    let token = first["nextPageToken"].as_str().unwrap();
    assert!(!token.is_empty());
    let second: Value = app.get(&format!("{base}?pageSize=2&pageToken={token}"), &key).await.json().await.unwrap();
    assert_eq!(second, json!({"assessments": [made[2]], "nextPageToken": ""}));
    let whole: Value = app.get(&format!("{base}?pageSize=3"), &key).await.json().await.unwrap();
    assert_eq!(whole["nextPageToken"], "", "a full last page has no token");
    let id = made[1]["id"].as_str().unwrap();
    let one: Value = app.get(&format!("{base}/{id}"), &key).await.json().await.unwrap();
    assert_eq!(one, made[1]);
    // Read back as answered to the last bit: the classifier's probability and contributions too.
    let breast_id = made[2]["id"].as_str().unwrap();
    let read_back = app.get(&format!("{base}/{breast_id}"), &key).await.text().await.unwrap();
    assert_eq!(read_back, answers[2]);

    // Refused: bad sizes and tokens, an unknown or malformed id, another tenant, another patient.
    for query in ["pageSize=101", "pageSize=-1", "pageToken=nope", "pageToken=0190a3b4-c5d6-7e8f-9a0b-1c2d3e4f5a6b.00"]
    {
        let problem = assert_problem(app.get(&format!("{base}?{query}"), &key).await, 400).await;
        assert!(problem["field"] == "pageSize" || problem["field"] == "pageToken", "{query}: {problem}");
    }
    assert_problem(app.get(&format!("{base}/0190a3b4-c5d6-7e8f-9a0b-1c2d3e4f5a6b"), &key).await, 404).await;
    assert_problem(app.get(&format!("{base}/nope"), &key).await, 400).await;
    let other = app.create_tenant("Outra").await;
    let other_key = app.create_key(&other, SCOPES).await;
    assert_problem(app.get(&base, &other_key).await, 404).await;
    assert_problem(app.get(&format!("{base}/{id}"), &other_key).await, 404).await;
    let stranger =
        create(&app, &key, json!({"name": "Bia Reis", "cpf": "111.444.777-35", "birthDate": "1990-01-01"})).await;
    let stranger = stranger["id"].as_str().unwrap();
    assert_problem(app.get(&format!("/v1/health/patients/{stranger}/assessments/{id}"), &key).await, 404).await;
    let token_of_another = format!("/v1/health/patients/{stranger}/assessments?pageToken={token}");
    assert_problem(app.get(&token_of_another, &key).await, 400).await;
    let write_only = app.create_key(&tenant, &["health:write"]).await;
    assert_problem(app.get(&base, &write_only).await, 403).await;

    // Each read is audited, naming the assessments it showed.
    let entries = app
        .audit_entries_once(&key, |entries| {
            let count = |action: &str| entries.iter().filter(|entry| entry["action"] == action).count();
            count("health.ListAssessments") >= 3 && count("health.GetAssessment") >= 1
        })
        .await;
    let read = entries.iter().find(|entry| entry["action"] == "health.GetAssessment").unwrap();
    assert_eq!(read["kind"], "sensitive_read", "{read}");
    let leaf: Value = serde_json::from_str(read["leaf"].as_str().unwrap()).unwrap();
    assert_eq!(leaf["subject"], format!("patient:{patient}"), "{leaf}");
    assert_eq!(leaf["details"]["assessmentId"], id, "{leaf}");
    let listed = entries.iter().filter(|entry| entry["action"] == "health.ListAssessments");
    let listed: Vec<Value> =
        listed.map(|entry| serde_json::from_str(entry["leaf"].as_str().unwrap()).unwrap()).collect();
    assert_eq!(listed.len(), 3, "an empty page shows nothing and is not audited: {listed:?}");

    // An erased patient's assessments, kept for what the law requires, are no longer shown.
    let governance = app.create_key(&tenant, &["governance:write", "governance:read"]).await;
    let erasure = crate::subjects::open(&app, &governance, json!({"cpf": "52998224725", "kind": "erasure"})).await;
    assert_eq!(erasure["status"], "completed", "{erasure}");
    assert_problem(app.get(&base, &key).await, 404).await;
    assert_problem(app.get(&format!("{base}/{id}"), &key).await, 404).await;
    app.stop().await;
}

#[tokio::test]
async fn a_patients_assessments_are_listed_and_read_back_on_sqlite() {
    a_patients_assessments_are_listed_and_read_back(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_patients_assessments_are_listed_and_read_back_on_postgres() {
    a_patients_assessments_are_listed_and_read_back(Backend::Postgres).await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}

/// A patient and an assessment's inputs as a release before sealing stored them: sealed at the
/// next start, and read as before; inputs put in clear after that are refused, not served.
async fn rows_stored_in_clear_are_sealed_at_start(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let tenant = app.create_tenant("Clínica Antiga").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let patient = app.create_patient(&key).await;
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/examples/breast-cancer-assessment.json"))
            .unwrap();
    let example: Value = serde_json::from_str(&example).unwrap();
    let path = format!("/v1/health/patients/{patient}");
    let assessed: Value = app.post(&format!("{path}/assessments"), &key, &example).await.json().await.unwrap();
    let assessment = format!("{path}/assessments/{}", assessed["id"].as_str().unwrap());
    let shown: Value = app.get(&path, &key).await.json().await.unwrap();
    let inputs = serde_json::to_string(&assessed["features"]).unwrap();

    sqlx::any::install_default_drivers();
    let mut raw = sqlx::AnyConnection::connect(&app.health_database_url).await.unwrap();
    let clear = format!(
        "UPDATE patients SET name = '{}', cpf = '{}', birth_date = '{}', sealed = NULL, cpf_hash = NULL",
        shown["name"].as_str().unwrap(),
        shown["cpf"].as_str().unwrap(),
        shown["birthDate"].as_str().unwrap()
    );
    sqlx::query(sqlx::AssertSqlSafe(clear)).execute(&mut raw).await.unwrap();
    sqlx::query("UPDATE assessments SET features = $1").bind(&inputs).execute(&mut raw).await.unwrap();
    app.restart().await;

    let row = sqlx::query("SELECT name, sealed FROM patients").fetch_one(&mut raw).await.unwrap();
    assert_eq!(row.try_get::<String, _>("name").unwrap(), "");
    assert!(row.try_get::<String, _>("sealed").unwrap().starts_with("v1:"));
    let stored: String = sqlx::query_scalar("SELECT features FROM assessments").fetch_one(&mut raw).await.unwrap();
    assert!(stored.starts_with("v1:") && !stored.contains("mean radius"), "in clear: {stored}");
    let read: Value = app.get(&path, &key).await.json().await.unwrap();
    assert_eq!(read["name"], shown["name"]);
    assert_eq!(read["cpf"], shown["cpf"]);
    let read: Value = app.get(&assessment, &key).await.json().await.unwrap();
    assert_eq!(read["features"], assessed["features"]);

    // Planted in clear once sealing is done: an error, never served as the assessment's inputs.
    let planted = inputs.replace("mean radius", "mean  radius");
    sqlx::query("UPDATE assessments SET features = $1").bind(&planted).execute(&mut raw).await.unwrap();
    assert_problem(app.get(&assessment, &key).await, 500).await;
    raw.close().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn rows_stored_in_clear_are_sealed_at_start_on_sqlite() {
    rows_stored_in_clear_are_sealed_at_start(Backend::Sqlite).await;
}

#[tokio::test]
async fn rows_stored_in_clear_are_sealed_at_start_on_postgres() {
    rows_stored_in_clear_are_sealed_at_start(Backend::Postgres).await;
}

#[tokio::test]
async fn an_assessment_report_is_a_pdf_kept_in_the_object_store_on_sqlite() {
    an_assessment_report_is_a_pdf_kept_in_the_object_store(Backend::Sqlite).await;
}

#[tokio::test]
async fn an_assessment_report_is_a_pdf_kept_in_the_object_store_on_postgres() {
    an_assessment_report_is_a_pdf_kept_in_the_object_store(Backend::Postgres).await;
}

pub(crate) fn png(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90]))
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .unwrap();
    bytes
}

/// A PNG of random pixels from `seed`, which does not compress: about 3 bytes a pixel.
fn noise_png(width: u32, height: u32, seed: u32) -> Vec<u8> {
    let mut state = seed;
    let noise = image::RgbImage::from_fn(width, height, |_, _| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let [r, g, b, _] = state.to_le_bytes();
        image::Rgb([r, g, b])
    });
    let mut bytes = Vec::new();
    noise.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
    bytes
}

pub(crate) async fn upload(
    app: &TestApp,
    key: &str,
    patient: &str,
    content_type: &str,
    bytes: Vec<u8>,
) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/health/patients/{patient}/images")))
        .bearer_auth(key)
        .header("content-type", content_type)
        .body(bytes)
        .send()
        .await
        .unwrap()
}

async fn medical_images(backend: Backend) {
    let app = aigronova_e2e::spawn_app_with(backend, |config| {
        let starter = &mut config.gateway.plans.starter;
        starter.max_body_bytes = 256 * 1024;
        // Room for every call here within the rate limits.
        starter.burst = 100;
    })
    .await;
    let tenant = app.create_tenant("Clínica Imagem").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let patient =
        create(&app, &key, json!({"name": "Maria Silva", "cpf": "529.982.247-25", "birthDate": "1980-02-29"})).await;
    let patient = patient["id"].as_str().unwrap().to_owned();
    let objects = app.data_dir().join("healthquantum-objects/images");

    // A PNG, recognised by its content whatever the declared type.
    let picture = png(600, 300);
    let response = upload(&app, &key, &patient, "application/octet-stream", picture.clone()).await;
    assert_eq!(response.status(), 200);
    let image: Value = response.json().await.unwrap();
    assert_eq!(
        (image["mediaType"].as_str(), image["width"].as_i64(), image["height"].as_i64()),
        (Some("image/png"), Some(600), Some(300))
    );
    assert_eq!(image["hasThumbnail"], true);
    let id = image["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/health/patients/{patient}/images/{id}");
    let response = app.get(&path, &key).await;
    assert_eq!(response.headers()["content-type"], "image/png");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff", "a browser takes it for what it says");
    assert_eq!(response.headers()["content-disposition"], format!("inline; filename=\"images-{id}.png\"").as_str());
    assert_eq!(response.bytes().await.unwrap().to_vec(), picture);
    let thumbnail = app.get(&format!("{path}/thumbnail"), &key).await;
    assert_eq!(thumbnail.headers()["content-disposition"], format!("inline; filename=\"{id}-thumbnail.png\"").as_str());
    let thumbnail = thumbnail.bytes().await.unwrap();
    let thumbnail = image::load_from_memory(&thumbnail).expect("the thumbnail is a PNG");
    assert_eq!((thumbnail.width(), thumbnail.height()), (256, 128));

    // A DICOM file: kept, no thumbnail.
    let dicom = include_bytes!("../../fixtures/minimal.dcm").to_vec();
    let response = upload(&app, &key, &patient, "application/dicom", dicom).await;
    assert_eq!(response.status(), 200);
    let scan: Value = response.json().await.unwrap();
    assert_eq!((scan["mediaType"].as_str(), &scan["hasThumbnail"]), (Some("application/dicom"), &json!(false)));
    assert_eq!((scan["width"].as_i64(), scan["height"].as_i64()), (Some(1), Some(1)), "its Columns and Rows");
    let scan_path = format!("/v1/health/patients/{patient}/images/{}", scan["id"].as_str().unwrap());
    assert_problem(app.get(&format!("{scan_path}/thumbnail"), &key).await, 404).await;

    // Refused, and nothing stored: an executable named as a PNG, an image past the plan's limit,
    // a truncated PNG, an executable that is a DICOM file too, another tenant's patient.
    let stored = walk(&objects).len();
    let problem = assert_problem(
        upload(&app, &key, &patient, "image/png", b"\x7fELF\x02\x01\x01\x00payload".to_vec()).await,
        400,
    )
    .await;
    assert_eq!(problem["field"], "body");
    assert_problem(
        upload(&app, &key, &patient, "image/png", png(400, 400).into_iter().chain(vec![0; 300_000]).collect()).await,
        413,
    )
    .await;
    assert_problem(upload(&app, &key, &patient, "image/png", picture[..100].to_vec()).await, 400).await;
    // A Windows executable whose header fills a DICOM preamble (a DICOM and PE polyglot).
    let mut polyglot = include_bytes!("../../fixtures/minimal.dcm").to_vec();
    polyglot[..4].copy_from_slice(b"MZ\x90\x00");
    let problem = assert_problem(upload(&app, &key, &patient, "application/dicom", polyglot).await, 400).await;
    assert_eq!(problem["field"], "body");
    // An executable after a DICOM file's data set.
    let trailed = [&include_bytes!("../../fixtures/minimal.dcm")[..], b"\x7fELF\x02\x01\x01\x00payload"].concat();
    let problem = assert_problem(upload(&app, &key, &patient, "application/dicom", trailed).await, 400).await;
    assert!(problem["detail"].as_str().unwrap().contains("other data follows its data set"), "{problem}");
    let other = app.create_tenant("Outra").await;
    let other_key = app.create_key(&other, SCOPES).await;
    let problem = assert_problem(upload(&app, &other_key, &patient, "image/png", picture.clone()).await, 404).await;
    assert_eq!(problem["detail"], "patient not found");
    // The image of another tenant's patient: the patient is not found, as on every route under it.
    for path in [path.clone(), format!("{path}/thumbnail")] {
        let problem = assert_problem(app.get(&path, &other_key).await, 404).await;
        assert_eq!(problem["detail"], "patient not found", "{path}");
    }
    let unknown = format!("/v1/health/patients/{patient}/images/{}", uuid::Uuid::now_v7());
    assert_eq!(assert_problem(app.get(&unknown, &key).await, 404).await["detail"], "image not found");
    assert_eq!(walk(&objects).len(), stored, "nothing stored by a refused upload");
    for file in walk(&objects) {
        let kept = std::fs::read(&file).unwrap();
        assert!(kept.starts_with(aigronova_platform::crypto::SEALED_OBJECT), "{} is kept in clear", file.display());
        assert!(!kept.windows(4).any(|window| window == b"\x89PNG"), "{} is kept in clear", file.display());
    }
    let listed: Value = app.get(&format!("/v1/health/patients/{patient}/images"), &key).await.json().await.unwrap();
    assert_eq!(listed["images"].as_array().unwrap().len(), 2);
    assert_eq!(listed["nextPageToken"], "", "one page holds both");
    // A page at a time, oldest first; a token goes on only with its patient's list.
    let images = format!("/v1/health/patients/{patient}/images");
    let first: Value = app.get(&format!("{images}?pageSize=1"), &key).await.json().await.unwrap();
    assert_eq!(first["images"][0]["id"], listed["images"][0]["id"]);
    let token = first["nextPageToken"].as_str().unwrap().to_owned();
    let second: Value = app.get(&format!("{images}?pageSize=1&pageToken={token}"), &key).await.json().await.unwrap();
    assert_eq!(second["images"][0]["id"], listed["images"][1]["id"]);
    assert_eq!(second["nextPageToken"], "", "the last page has no token");
    let elsewhere = app.create_patient(&key).await;
    let refused = app.get(&format!("/v1/health/patients/{elsewhere}/images?pageToken={token}"), &key).await;
    assert_eq!(assert_problem(refused, 400).await["field"], "pageToken");

    // Delete one, four times at once: one deletion, and one audit event; then the patient takes the
    // other with them.
    let deletions = futures_util::future::join_all((0..4).map(|_| app.delete(&path, &key))).await;
    let mut statuses: Vec<u16> = deletions.iter().map(|response| response.status().as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 404, 404, 404]);
    assert_problem(app.get(&path, &key).await, 404).await;
    assert_eq!(walk(&objects).len(), 1, "the image and its thumbnail are gone");
    assert_eq!(app.delete(&format!("/v1/health/patients/{patient}"), &key).await.status(), 200);
    assert_eq!(walk(&objects).len(), 0);

    // Reads that showed something are audited; the DICOM file's missing thumbnail showed nothing.
    let entries = app
        .audit_entries_once(&key, |entries| entries.iter().any(|entry| entry["action"] == "health.DeletePatient"))
        .await;
    let actions: Vec<&str> = entries.iter().filter_map(|entry| entry["action"].as_str()).collect();
    let count = |wanted: &str| actions.iter().filter(|action| **action == wanted).count();
    assert_eq!((count("health.GetImage"), count("health.GetImageThumbnail")), (1, 1), "{actions:?}");
    assert_eq!(count("health.DeleteImage"), 1, "{actions:?}");
    // So is the list, which showed the two images.
    let listed = entries.iter().find(|entry| entry["action"] == "health.ListImages").unwrap();
    let leaf: Value = serde_json::from_str(listed["leaf"].as_str().unwrap()).unwrap();
    assert_eq!((count("health.ListImages"), leaf["details"]["imageIds"].as_array().unwrap().len()), (3, 2), "{leaf}");
    assert_eq!(listed["kind"], "sensitive_read");
    app.stop().await;
}

fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    image::RgbImage::from_fn(width, height, |x, y| image::Rgb([90, (x % 256) as u8, (y % 256) as u8]))
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Jpeg)
        .unwrap();
    bytes
}

/// `bytes` with a ZIP archive appended, as `cat image.png archive.zip` leaves it: a central
/// directory and the record at the end that points to it.
fn with_zip(bytes: &[u8]) -> Vec<u8> {
    let directory = [b"PK\x01\x02".as_slice(), &[0; 42]].concat();
    let mut zipped = bytes.to_vec();
    zipped.extend_from_slice(&directory);
    zipped.extend_from_slice(b"PK\x05\x06\0\0\0\0\x01\0\x01\0");
    zipped.extend_from_slice(&u32::try_from(directory.len()).unwrap().to_le_bytes());
    zipped.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    zipped
}

/// An upload is kept as what its bytes are, which must be what its `Content-Type` says (or
/// `application/octet-stream`, which leaves it to the bytes); an image that ends with a ZIP
/// archive is refused, as a DICOM file is. Nothing refused is stored.
async fn uploads_of_another_type_than_declared_or_ending_with_an_archive_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let tenant = app.create_tenant_on("Clínica Tipos", "professional").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let patient =
        create(&app, &key, json!({"name": "Maria Silva", "cpf": "529.982.247-25", "birthDate": "1980-02-29"})).await;
    let patient = patient["id"].as_str().unwrap().to_owned();
    let objects = app.data_dir().join("healthquantum-objects/images");
    let (picture, photo) = (png(60, 40), jpeg(60, 40));
    let dicom = include_bytes!("../../fixtures/minimal.dcm").to_vec();

    let kept = [
        ("image/png", picture.clone(), "image/png"),
        ("IMAGE/JPEG", photo.clone(), "image/jpeg"),
        ("application/octet-stream", photo.clone(), "image/jpeg"),
        ("image/jpg", photo.clone(), "image/jpeg"),
        ("application/dicom", dicom.clone(), "application/dicom"),
    ];
    for (content_type, bytes, media_type) in kept {
        let response = upload(&app, &key, &patient, content_type, bytes).await;
        assert_eq!(response.status(), 200, "{content_type}");
        let image: Value = response.json().await.unwrap();
        assert_eq!(image["mediaType"], media_type, "{content_type}: {image}");
    }

    let stored = walk(&objects).len();
    let refused = [
        ("image/jpeg", picture.clone(), "Content-Type", "the body is a PNG image, not a JPEG image as it says"),
        ("image/jpg", picture.clone(), "Content-Type", "the body is a PNG image, not a JPEG image as it says"),
        ("application/dicom", picture.clone(), "Content-Type", "the body is a PNG image, not a DICOM file as it says"),
        ("image/png", dicom, "Content-Type", "the body is a DICOM file, not a PNG image as it says"),
        ("image/png", with_zip(&picture), "body", "starts as image/png but it ends with a ZIP archive"),
        ("image/jpeg", with_zip(&photo), "body", "starts as image/jpeg but it ends with a ZIP archive"),
        ("application/octet-stream", with_zip(&picture), "body", "ends with a ZIP archive"),
    ];
    for (content_type, bytes, field, detail) in refused {
        let problem = assert_problem(upload(&app, &key, &patient, content_type, bytes).await, 400).await;
        assert_eq!(problem["field"], field, "{content_type}: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains(detail), "{content_type}: {problem}");
    }
    // A type the route does not read is 415, as on JSON routes, and names the types it reads; so
    // is no type at all.
    for content_type in ["text/plain", "application/json", "multipart/form-data; boundary=x", "image/*", ""] {
        let problem = assert_problem(upload(&app, &key, &patient, content_type, picture.clone()).await, 415).await;
        assert_eq!(problem["field"], "Content-Type", "{content_type}: {problem}");
        let detail = problem["detail"].as_str().unwrap();
        let named = if content_type.is_empty() {
            "send the body's media type in Content-Type: image/png"
        } else {
            "is not a media type this route reads; send image/png"
        };
        assert!(detail.contains(named), "{detail}");
    }
    // Told before the body is read: an upload of another type is refused at its head.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let address = app.address.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let head = format!(
            "POST /v1/health/patients/{patient}/images HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer \
             {key}\r\nContent-Type: text/plain\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0; 1024];
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut answer))
            .await
            .expect("answered without the body")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..read]);
        assert!(answer.starts_with("HTTP/1.1 415"), "{answer}");
    }
    assert_eq!(walk(&objects).len(), stored, "nothing stored by a refused upload");
    let listed: Value = app.get(&format!("/v1/health/patients/{patient}/images"), &key).await.json().await.unwrap();
    assert_eq!(listed["images"].as_array().unwrap().len(), 5);
    app.stop().await;
}

#[tokio::test]
async fn uploads_of_another_type_than_declared_or_ending_with_an_archive_are_refused_on_sqlite() {
    uploads_of_another_type_than_declared_or_ending_with_an_archive_are_refused(Backend::Sqlite).await;
}

#[tokio::test]
async fn uploads_of_another_type_than_declared_or_ending_with_an_archive_are_refused_on_postgres() {
    uploads_of_another_type_than_declared_or_ending_with_an_archive_are_refused(Backend::Postgres).await;
}

/// An image larger than a gRPC message's usual 4 MiB, within the Enterprise plan's 50 MiB, goes
/// through the gateway to the service and back unchanged.
#[tokio::test]
async fn an_image_as_large_as_the_plan_allows_goes_up_and_comes_back() {
    let app = aigronova_e2e::spawn_app(Backend::Sqlite).await;
    let tenant = app.create_tenant_on("Hospital", "enterprise").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let patient = app.create_patient(&key).await;
    // 1,400 × 1,400 pixels of noise make a PNG of about 6 MB.
    let picture = noise_png(1_400, 1_400, 0x2545_f491);
    assert!(picture.len() > 5 * 1024 * 1024, "{} bytes", picture.len());

    let response = upload(&app, &key, &patient, "image/png", picture.clone()).await;
    assert_eq!(response.status(), 200);
    let image: Value = response.json().await.unwrap();
    assert_eq!(image["sizeBytes"], picture.len().to_string());
    let path = format!("/v1/health/patients/{patient}/images/{}", image["id"].as_str().unwrap());
    let response = app.get(&path, &key).await;
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.unwrap() == picture, "the image comes back unchanged");
    app.stop().await;
}

/// Reads of an image racing its deletion each show the image or answer 404, never a 500, and only
/// the reads that showed it are audited.
#[tokio::test]
async fn reads_racing_an_images_deletion_show_it_or_404_and_audit_only_what_they_showed() {
    let app = aigronova_e2e::spawn_app(Backend::Sqlite).await;
    let tenant = app.create_tenant_on("Hospital Concorrido", "enterprise").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let patient = app.create_patient(&key).await;
    // A PNG of about 2 MB takes a while to read back: a wide window.
    let picture = noise_png(800, 800, 0x9e37_79b9);
    let (mut shown, mut thumbnails_shown) = (0, 0);
    for round in 0..6 {
        let response = upload(&app, &key, &patient, "image/png", picture.clone()).await;
        assert_eq!(response.status(), 200);
        let image: Value = response.json().await.unwrap();
        let path = format!("/v1/health/patients/{patient}/images/{}", image["id"].as_str().unwrap());
        let thumbnail = format!("{path}/thumbnail");
        // The image and its thumbnail, in turn.
        let (app, key) = (&app, &key);
        let reads = futures_util::future::join_all((0..32).map(|i| {
            let path = if i % 2 == 0 { &path } else { &thumbnail };
            async move {
                let response = app.get(path, key).await;
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                (i % 2 == 1, status, text)
            }
        }));
        let deletion = async {
            tokio::time::sleep(Duration::from_millis(3 * round)).await;
            app.delete(&path, key).await.status()
        };
        let (reads, deleted) = tokio::join!(reads, deletion);
        assert_eq!(deleted, 200);
        for (_, status, text) in &reads {
            assert!(matches!(status, 200 | 404), "{status} {text}");
        }
        shown += reads.iter().filter(|(thumbnail, status, _)| !thumbnail && *status == 200).count();
        thumbnails_shown += reads.iter().filter(|(thumbnail, status, _)| *thumbnail && *status == 200).count();
    }
    let count = |entries: &[Value], action: &str| entries.iter().filter(|entry| entry["action"] == action).count();
    app.audit_entries_once(&key, |entries| {
        count(entries, "health.DeleteImage") == 6
            && count(entries, "health.GetImage") >= shown
            && count(entries, "health.GetImageThumbnail") >= thumbnails_shown
    })
    .await;
    // Time for any event still on its way to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let entries = app.audit_entries_once(&key, |_| true).await;
    assert_eq!(count(&entries, "health.GetImage"), shown, "one event for each read that showed the image");
    assert_eq!(count(&entries, "health.GetImageThumbnail"), thumbnails_shown, "and for each thumbnail shown");
    app.stop().await;
}

#[tokio::test]
async fn medical_images_on_sqlite() {
    medical_images(Backend::Sqlite).await;
}

#[tokio::test]
async fn medical_images_on_postgres() {
    medical_images(Backend::Postgres).await;
}

/// An upload whose caller stops waiting while the service stores it is stored whole (the bytes
/// and their record), never left as bytes without a record that a deletion or an erasure would
/// find.
#[tokio::test]
async fn an_upload_the_caller_stops_waiting_for_is_stored_whole() {
    let app = spawn_app(Backend::Sqlite).await;
    let tenant = app.create_tenant_on("Clínica Paciente", "professional").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let patient = app.create_patient(&key).await;
    let picture = png(400, 200);
    let path = format!("/v1/health/patients/{patient}/images");
    let mut lock = app.hold_health_writes().await;
    let response = app
        .client
        .post(app.url(&path))
        .bearer_auth(&key)
        .header("content-type", "image/png")
        .header("grpc-timeout", "300m")
        .body(picture.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504, "the service waits for its database");
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    drop(lock);
    let mut images = Vec::new();
    for _ in 0..100 {
        let listed: Value = app.get(&path, &key).await.json().await.unwrap();
        images = listed["images"].as_array().cloned().unwrap_or_default();
        if !images.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(images.len(), 1, "the upload finished after its caller left");
    let id = images[0]["id"].as_str().unwrap();
    let stored = app.get(&format!("{path}/{id}"), &key).await;
    assert_eq!(stored.status(), 200);
    assert_eq!(stored.bytes().await.unwrap().to_vec(), picture);
    assert_eq!(app.get(&format!("{path}/{id}/thumbnail"), &key).await.status(), 200);
    app.stop().await;
}

/// An image uploaded while its patient is being erased is refused and leaves nothing: on
/// PostgreSQL the upload waits for the patient's row, which the erasure holds, and then finds the
/// patient erased (the erasure's deletion of the images could not see the image it was storing).
#[tokio::test]
async fn an_image_stored_while_its_patient_is_erased_is_refused_on_postgres() {
    let app = spawn_app(Backend::Postgres).await;
    let tenant = app.create_tenant("Clínica Apagada").await;
    let key = app.create_key(&tenant, SCOPES).await;
    let patient = app.create_patient(&key).await;
    sqlx::any::install_default_drivers();
    let mut eraser = sqlx::AnyConnection::connect(&app.health_database_url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut eraser).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT 1 FROM patients WHERE id = '{patient}' FOR UPDATE")))
        .fetch_one(&mut eraser)
        .await
        .unwrap();
    let uploading = {
        let (client, url, key) =
            (app.client.clone(), app.url(&format!("/v1/health/patients/{patient}/images")), key.clone());
        let picture = png(30, 20);
        tokio::spawn(async move {
            client.post(url).bearer_auth(key).header("content-type", "image/png").body(picture).send().await.unwrap()
        })
    };
    aigronova_e2e::until_a_session_waits_for_a_lock(&mut eraser, "the upload").await;
    let erased = format!(
        "UPDATE patients SET name = '', cpf = '', birth_date = '', sealed = NULL, cpf_hash = NULL, \
         erased_at = '2026-01-01T00:00:00.000000Z' WHERE id = '{patient}'"
    );
    sqlx::query(sqlx::AssertSqlSafe(erased)).execute(&mut eraser).await.unwrap();
    sqlx::query("COMMIT").execute(&mut eraser).await.unwrap();
    assert_problem(uploading.await.unwrap(), 404).await;
    assert_eq!(app.count_health_rows("images").await, 0);
    let objects = app.data_dir().join(format!("healthquantum-objects/images/{tenant}"));
    assert_eq!(std::fs::read_dir(objects).map_or(0, |entries| entries.count()), 0, "the upload's objects are deleted");
    app.stop().await;
}
