//! The cost of a verifiable audit log: events appended per second to ai-governance's log (RFC 6962
//! tree, idempotency check, a signed checkpoint per batch, all in one transaction) side by side
//! with plain inserts of the same rows into an append-only table, on the embedded SQLite; then
//! inclusion-proof time once the log holds 1,000,000 entries.
//!
//! `make bench` runs it; BENCHMARKS.md records the results.

use std::time::{Duration, Instant};

use aigronova_ai_governance::{
    MIGRATOR,
    checkpoint::CheckpointSigner,
    log::{Leaf, LogStore},
    merkle,
};
use aigronova_platform::storage::Database;

const BATCH: usize = 1000;
const COMPARED: usize = 200_000;
const TOTAL: usize = 1_000_000;
const PROOFS: usize = 10_000;

fn leaf(n: usize) -> Leaf {
    Leaf {
        event_id: uuid::Uuid::now_v7().to_string(),
        tenant_id: "bench-tenant".into(),
        service: "healthquantum".into(),
        kind: "decision".into(),
        action: "health.AssessRisk".into(),
        actor: "key-0192b0c4".into(),
        subject: format!("patient:{}", uuid::Uuid::now_v7()),
        details: serde_json::json!({
            "assessmentId": uuid::Uuid::now_v7().to_string(),
            "model": "breast-cancer",
            "modelVersion": "1",
            "inputDigest": format!("sha256:{:064x}", n),
            "output": {"probability": 0.1234567, "riskBand": "low"},
            "latencyMs": 0.42,
        }),
        occurred_at: "2026-11-29T10:00:00.000000Z".into(),
    }
}

/// Plain inserts of the same rows, batch by batch, into a table with the same keys.
async fn plain_inserts(database: &Database, leaves: &[Leaf]) -> Duration {
    sqlx::query(
        "CREATE TABLE plain_events (tenant_id TEXT NOT NULL, idx BIGINT NOT NULL, event_id TEXT NOT NULL, \
         leaf TEXT NOT NULL, PRIMARY KEY (tenant_id, idx))",
    )
    .execute(database.pool())
    .await
    .unwrap();
    sqlx::query("CREATE UNIQUE INDEX plain_events_by_event ON plain_events (tenant_id, event_id)")
        .execute(database.pool())
        .await
        .unwrap();
    let started = Instant::now();
    for (batch_number, batch) in leaves.chunks(BATCH).enumerate() {
        let mut transaction = database.begin_write().await.unwrap();
        for (chunk_number, chunk) in batch.chunks(100).enumerate() {
            let values: Vec<String> = (0..chunk.len())
                .map(|row| format!("(${}, ${}, ${}, ${})", row * 4 + 1, row * 4 + 2, row * 4 + 3, row * 4 + 4))
                .collect();
            let sql = format!("INSERT INTO plain_events (tenant_id, idx, event_id, leaf) VALUES {}", values.join(", "));
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (offset, leaf) in chunk.iter().enumerate() {
                let index = (batch_number * BATCH + chunk_number * 100 + offset) as i64;
                query = query.bind(&leaf.tenant_id).bind(index).bind(&leaf.event_id).bind(leaf.to_text());
            }
            query.execute(&mut *transaction).await.unwrap();
        }
        transaction.commit().await.unwrap();
    }
    started.elapsed()
}

fn percentile(sorted: &[Duration], quantile: f64) -> Duration {
    sorted[((sorted.len() as f64 * quantile) as usize).min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str| format!("sqlite://{}", dir.path().join(name).display());
    let log_db = Database::connect(&open("governance.db"), &MIGRATOR).await.unwrap();
    let plain_db = Database::connect(&open("plain.db"), &MIGRATOR).await.unwrap();
    let log = LogStore::new(log_db, CheckpointSigner::generate());

    eprintln!("preparing {TOTAL} events");
    let leaves: Vec<Leaf> = (0..TOTAL).map(leaf).collect();

    eprintln!("plain inserts: {COMPARED} events in batches of {BATCH}");
    let plain = plain_inserts(&plain_db, &leaves[..COMPARED]).await;

    eprintln!("verifiable log: {TOTAL} events in batches of {BATCH}");
    let started = Instant::now();
    let mut compared = Duration::ZERO;
    for (number, batch) in leaves.chunks(BATCH).enumerate() {
        log.append(batch.to_vec()).await.unwrap();
        if (number + 1) * BATCH == COMPARED {
            compared = started.elapsed();
        }
        if (number + 1) % 100 == 0 {
            eprintln!(
                "  {} entries, {:.0} events/s",
                (number + 1) * BATCH,
                ((number + 1) * BATCH) as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    let whole = started.elapsed();
    let checkpoint = log.latest_checkpoint("bench-tenant").await.unwrap();
    assert_eq!(checkpoint.body.tree_size, TOTAL as u64);

    // Inclusion proofs at 1,000,000 entries: the tree's own time, and the whole read (entry from
    // the database, proof, checkpoint) that GET /v1/governance/audit/entries/{index} makes.
    let tree = merkle::Tree::from_leaf_hashes(leaves.iter().map(|leaf| merkle::leaf_hash(leaf.to_text().as_bytes())));
    assert_eq!(tree.root(), checkpoint.body.root_hash);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next_index = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % TOTAL as u64
    };
    let mut tree_times = Vec::with_capacity(PROOFS);
    for _ in 0..PROOFS {
        let index = next_index();
        let started = Instant::now();
        let proof = tree.inclusion_proof(index, TOTAL as u64).unwrap();
        tree_times.push(started.elapsed());
        std::hint::black_box(proof);
    }
    let mut read_times = Vec::with_capacity(PROOFS / 10);
    for _ in 0..PROOFS / 10 {
        let index = next_index();
        let started = Instant::now();
        let (entry, signed, proof) = log.entry_with_proof("bench-tenant", index).await.unwrap();
        read_times.push(started.elapsed());
        merkle::verify_inclusion(
            &merkle::leaf_hash(entry.leaf.as_bytes()),
            index,
            signed.body.tree_size,
            &proof,
            &signed.body.root_hash,
        )
        .unwrap();
    }
    tree_times.sort();
    read_times.sort();

    let plain_rate = COMPARED as f64 / plain.as_secs_f64();
    let log_rate = COMPARED as f64 / compared.as_secs_f64();
    println!("| path | events | events/s |");
    println!("|---|---:|---:|");
    println!("| plain append-only table (SQLite) | {COMPARED} | {plain_rate:.0} |");
    println!("| verifiable log (SQLite), first {COMPARED} | {COMPARED} | {log_rate:.0} |");
    println!("| verifiable log (SQLite), up to {TOTAL} | {TOTAL} | {:.0} |", TOTAL as f64 / whole.as_secs_f64());
    println!();
    println!("| inclusion proof at {TOTAL} entries | p50 | p99 |");
    println!("|---|---:|---:|");
    println!(
        "| tree only ({PROOFS} random entries) | {:.1} µs | {:.1} µs |",
        micros(percentile(&tree_times, 0.5)),
        micros(percentile(&tree_times, 0.99))
    );
    println!(
        "| entry, proof and checkpoint ({} random entries) | {:.1} µs | {:.1} µs |",
        PROOFS / 10,
        micros(percentile(&read_times, 0.5)),
        micros(percentile(&read_times, 0.99))
    );
    println!();
    println!(
        "verifiable appends keep {:.0}% of the plain inserts' rate (batches of {BATCH}, one signed checkpoint each)",
        log_rate / plain_rate * 100.0
    );
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}
