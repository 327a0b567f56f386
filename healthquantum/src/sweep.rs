//! Objects that no record wants any more: those a deletion or an erasure recorded, in the
//! transaction that removed their records, and could not delete then (the object store failing),
//! which are deleted at the next sweep whatever the rest of this says; the bytes of an upload cut
//! short between its objects and its record (a crash of the process, say); and objects whose
//! deletion failed after their records were deleted before such deletions were recorded. They are
//! swept when the service starts and every [`EVERY`] after; an object younger than [`SETTLE`] is
//! left alone, as an upload writes its objects before its record.
//!
//! Only what this database provably made is deleted, so that a database that is not the store's
//! (a new one, another deployment's, pointed at the same bucket) deletes nothing: a tenant without
//! a data key here is passed over, an image is deleted only when it opens with the tenant's key,
//! and a report only when its assessment is here and its patient erased or gone (a report whose
//! assessment went with its patient's deletion, after a failed delete of the object, stays).
//! An image is deleted only when written before the tenant's last write to this database (a
//! patient, an assessment, another image): after the database is restored to an earlier time, the
//! images uploaded since are unknown to it and newer than all it holds, and stay. An upload cut
//! short is swept once the tenant writes again.

use std::time::Duration;

use aigronova_platform::{Shutdown, objects::Objects};
use chrono::Utc;

use crate::store::Store;

/// How long an object may wait for its record.
pub(crate) const SETTLE: Duration = Duration::from_secs(15 * 60);

/// How often the objects are swept after the first time.
const EVERY: Duration = Duration::from_secs(30 * 60);

/// Sweeps now and every [`EVERY`] until `shutdown`.
pub(crate) async fn run(store: Store, objects: Objects, shutdown: Shutdown) {
    loop {
        // A sweep of a large store takes a while: a shutdown does not wait for it.
        let swept = tokio::select! {
            swept = sweep(&store, &objects, SETTLE) => swept,
            () = shutdown.clone().wait() => return,
        };
        match swept {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(objects = deleted, "objects that no record wants were deleted"),
            Err(error) => tracing::warn!(error = format!("{error:#}"), "objects not swept; tried again later"),
        }
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = shutdown.clone().wait() => return,
        }
    }
}

/// Deletes the objects `keys` of `tenant_id` and forgets their recorded deletions; how many it
/// deleted. A failure is logged, and its deletion stays recorded for the next sweep.
pub(crate) async fn delete_objects(store: &Store, objects: &Objects, tenant_id: &str, keys: &[String]) -> usize {
    let mut deleted = Vec::with_capacity(keys.len());
    for key in keys {
        match objects.delete(key).await {
            Ok(()) => deleted.push(key.clone()),
            Err(error) => tracing::warn!(%error, tenant_id, key, "object not deleted"),
        }
    }
    if let Err(error) = store.deletions_done(tenant_id, &deleted).await {
        tracing::warn!(%error, "deleted objects not marked as deleted; they are deleted again later");
    }
    deleted.len()
}

/// Deletes the objects a deletion or an erasure recorded and could not delete then; the images
/// (and thumbnails) older than `settle` whose record is gone; and the reports whose patient was
/// erased or deleted while the assessment stays. Returns how many objects it deleted.
pub(crate) async fn sweep(store: &Store, objects: &Objects, settle: Duration) -> anyhow::Result<usize> {
    let written_before = Utc::now() - settle;
    let mut deleted = 0;
    // A tenant's failure is logged and tried again at the next sweep; the other tenants go on.
    match store.tenants_with_pending_deletions().await {
        Ok(tenants) => {
            for tenant_id in tenants {
                match store.pending_deletions(&tenant_id).await {
                    Ok(pending) => deleted += delete_objects(store, objects, &tenant_id, &pending).await,
                    Err(error) => tracing::warn!(%error, tenant_id, "recorded deletions not read; tried again later"),
                }
            }
        }
        Err(error) => tracing::warn!(%error, "recorded deletions not read; tried again later"),
    }
    for top in ["images", "reports"] {
        for tenant_prefix in objects.list_level(top).await?.prefixes {
            let Some(tenant_id) = tenant_prefix.rsplit('/').next().filter(|tenant| !tenant.is_empty()) else {
                continue;
            };
            if !store.holds_data_key(tenant_id).await? {
                continue;
            }
            // Images written after the tenant's last write here are not this database's to judge.
            let images_before = match store.newest_write(tenant_id).await? {
                Some(newest) => newest.min(written_before),
                None if top == "images" => continue,
                None => written_before,
            };
            for (key, written) in objects.list_level(&tenant_prefix).await?.objects {
                let name = key.rsplit('/').next().unwrap_or_default();
                if written > written_before || (top == "images" && written >= images_before) {
                    continue;
                }
                let wanted = if top == "images" {
                    store.image_recorded(tenant_id, name.strip_suffix(".thumbnail.png").unwrap_or(name)).await?
                } else {
                    match name.strip_suffix(".pdf") {
                        Some(assessment_id) => !store.report_outlived_patient(tenant_id, assessment_id).await?,
                        None => true,
                    }
                };
                if wanted {
                    continue;
                }
                if top == "images" {
                    let Some(stored) = objects.get(&key).await? else { continue };
                    if !store.cipher(tenant_id).await?.sealed_here(&key, &stored) {
                        continue;
                    }
                }
                objects.delete(&key).await?;
                deleted += 1;
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        patient::{BirthDate, Cpf, NewPatient, Patient, PatientName},
        store::{
            ImageRecord,
            testing::{self, event},
        },
    };

    const TENANT: &str = "tenant-a";

    /// A patient of [`TENANT`] with the image record `image_id` (with a thumbnail).
    async fn patient_with_image(store: &Store, image_id: &str) -> Patient {
        let patient = Patient::register(NewPatient {
            name: PatientName::parse("Maria Silva").unwrap(),
            cpf: Cpf::parse("52998224725").unwrap(),
            birth_date: BirthDate::parse("1980-02-29").unwrap(),
            email: None,
            phone: None,
        });
        store.create_patient(TENANT, &patient, &event()).await.unwrap();
        let image = ImageRecord {
            id: image_id.into(),
            patient_id: patient.id.to_string(),
            media_type: "image/png".into(),
            size_bytes: 8,
            sha256: "00".repeat(32),
            width: 1,
            height: 1,
            has_thumbnail: true,
            created_at: aigronova_platform::time::stored(Utc::now()),
        };
        store.insert_image(TENANT, &image, &event()).await.unwrap();
        patient
    }

    /// A tenant deletes its only patient, who had an image, while the object store fails: the
    /// deletion recorded with the records' is done by a later sweep, although the tenant has no
    /// row left by which to judge its objects.
    #[tokio::test]
    async fn deletions_the_object_store_failed_are_done_by_a_later_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _database) = testing::store(dir.path()).await;
        let root = dir.path().join("objects");
        let objects = Objects::open(&format!("file://{}", root.display())).unwrap();
        let patient = patient_with_image(&store, "gone").await;
        let (image_key, thumbnail_key) = ("images/tenant-a/gone", "images/tenant-a/gone.thumbnail.png");
        objects.put(thumbnail_key, b"thumbnail".to_vec()).await.unwrap();
        // A directory where the image's object is: its deletion fails, as a store that is down does.
        std::fs::create_dir_all(root.join(image_key)).unwrap();
        std::fs::write(root.join(image_key).join("in-the-way"), b"x").unwrap();

        let deleted = store.delete_patient(TENANT, &patient.id, |_| event()).await.unwrap();
        assert_eq!(deleted.images, ["gone"]);
        let mut pending = store.pending_deletions(TENANT).await.unwrap();
        pending.sort();
        assert_eq!(pending, [image_key, thumbnail_key]);
        assert_eq!(delete_objects(&store, &objects, TENANT, &pending).await, 1, "the thumbnail");
        assert_eq!(store.pending_deletions(TENANT).await.unwrap(), [image_key]);
        assert_eq!(sweep(&store, &objects, SETTLE).await.unwrap(), 0, "still failing");

        std::fs::remove_dir_all(root.join(image_key)).unwrap();
        objects.put(image_key, b"\x89PNG image".to_vec()).await.unwrap();
        assert_eq!(sweep(&store, &objects, SETTLE).await.unwrap(), 1, "younger than the settling time, yet recorded");
        assert!(objects.get(image_key).await.unwrap().is_none());
        assert!(store.pending_deletions(TENANT).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn objects_that_no_record_wants_are_deleted_once_settled_and_the_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (store, database) = testing::store(dir.path()).await;
        let objects = Objects::open(&format!("file://{}", dir.path().join("objects").display())).unwrap();

        let patient = patient_with_image(&store, "kept").await;
        let cipher = store.cipher(TENANT).await.unwrap();
        let other_key = store.cipher("tenant-b").await.unwrap();
        let sealed = |key: &str| cipher.seal_bytes(key, b"\x89PNG image");
        // Kept: what records want; what this database cannot be shown to have made (an image in
        // clear, one sealed with another key, a tenant without a data key here); other prefixes.
        let kept = [
            ("images/tenant-a/kept", sealed("images/tenant-a/kept")),
            ("images/tenant-a/kept.thumbnail.png", sealed("images/tenant-a/kept.thumbnail.png")),
            ("images/tenant-a/in-clear", b"\x89PNG image".to_vec()),
            ("images/tenant-a/other-key", other_key.seal_bytes("images/tenant-a/other-key", b"\x89PNG image")),
            ("images/tenant-z/orphan", sealed("images/tenant-z/orphan")),
            ("reports/tenant-z/no-assessment.pdf", b"%PDF".to_vec()),
            // No assessment here: nothing shows this database made it.
            ("reports/tenant-a/no-assessment.pdf", b"%PDF".to_vec()),
            ("reports/tenant-a/current.pdf", b"%PDF".to_vec()),
            ("reports/tenant-a/notes.txt", b"notes".to_vec()),
            ("other/tenant-a/orphan", b"x".to_vec()),
        ];
        let orphans = [
            ("images/tenant-a/orphan", sealed("images/tenant-a/orphan")),
            ("images/tenant-a/orphan.thumbnail.png", sealed("images/tenant-a/orphan.thumbnail.png")),
            ("reports/tenant-a/erased.pdf", b"%PDF".to_vec()),
        ];
        // An assessment of a live patient, and one of a patient erased since.
        let erased = Patient::register(NewPatient {
            name: PatientName::parse("Joana Souza").unwrap(),
            cpf: Cpf::parse("11144477735").unwrap(),
            birth_date: BirthDate::parse("1975-01-31").unwrap(),
            email: None,
            phone: None,
        });
        store.create_patient(TENANT, &erased, &event()).await.unwrap();
        for (id, patient) in [("current", &patient), ("erased", &erased)] {
            sqlx::query(
                "INSERT INTO assessments (tenant_id, id, patient_id, model, model_version, features, probability, \
                 risk_band, created_at) VALUES ($1, $2, $3, 'breast-cancer', '1', '{}', 0.5, 'moderate', $4)",
            )
            .bind(TENANT)
            .bind(id)
            .bind(patient.id.to_string())
            .bind(aigronova_platform::time::stored(Utc::now()))
            .execute(database.pool())
            .await
            .unwrap();
        }
        sqlx::query("UPDATE patients SET erased_at = $1 WHERE id = $2")
            .bind(aigronova_platform::time::stored(Utc::now()))
            .bind(erased.id.to_string())
            .execute(database.pool())
            .await
            .unwrap();
        for (key, bytes) in kept.iter().chain(&orphans) {
            objects.put(key, bytes.clone()).await.unwrap();
        }
        // Until the tenant writes again, every image object is newer than all the database holds,
        // as after a restore to an earlier time: none is judged.
        assert_eq!(sweep(&store, &objects, Duration::ZERO).await.unwrap(), 1, "the erased patient's report alone");
        tokio::time::sleep(Duration::from_millis(20)).await;
        sqlx::query("UPDATE patients SET updated_at = $1 WHERE id = $2")
            .bind(aigronova_platform::time::stored(Utc::now()))
            .bind(patient.id.to_string())
            .execute(database.pool())
            .await
            .unwrap();

        // Younger than the settling time, an orphan may be an upload whose record is on its way.
        assert_eq!(sweep(&store, &objects, SETTLE).await.unwrap(), 0);
        assert_eq!(sweep(&store, &objects, Duration::ZERO).await.unwrap(), orphans.len() - 1);
        for (key, _) in orphans {
            assert_eq!(objects.get(key).await.unwrap(), None, "{key}");
        }
        for (key, _) in kept {
            assert!(objects.get(key).await.unwrap().is_some(), "{key}");
        }
        assert_eq!(sweep(&store, &objects, Duration::ZERO).await.unwrap(), 0);
    }
}
