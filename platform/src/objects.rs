//! Objects (reports, images): one interface over a local directory when embedded and S3 (or an
//! S3-compatible store) in production, through the `object_store` crate, chosen by URL:
//! `file://<directory>` or `s3://<bucket>[/<prefix>]` (credentials and region from the standard
//! `AWS_*` variables, e.g. the pod's IRSA role; `AWS_ENDPOINT` for an S3-compatible store).

use std::sync::Arc;

use object_store::{
    ObjectStore, ObjectStoreExt, PutPayload, aws::AmazonS3Builder, local::LocalFileSystem, path::Path,
    prefix::PrefixStore,
};
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    #[error("objects URL must be file://<directory> or s3://<bucket>[/<prefix>], got {0:?}")]
    UnsupportedUrl(String),
    #[error("cannot create the objects folder: {0}")]
    Folder(#[from] std::io::Error),
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
}

impl From<ObjectsError> for Status {
    fn from(error: ObjectsError) -> Self {
        tracing::error!(%error, "object store failed");
        Status::unavailable("the object store is unavailable, retry later")
    }
}

/// One level of a store's keys, from [`Objects::list_level`].
#[derive(Debug, Default)]
pub struct Listing {
    pub prefixes: Vec<String>,
    pub objects: Vec<(String, chrono::DateTime<chrono::Utc>)>,
}

/// A store of objects by key (`reports/<tenant>/<id>.pdf`).
#[derive(Clone, Debug)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
}

impl Objects {
    pub fn open(url: &str) -> Result<Self, ObjectsError> {
        let store: Arc<dyn ObjectStore> = if let Some(directory) = url.strip_prefix("file://") {
            if directory.is_empty() {
                return Err(ObjectsError::UnsupportedUrl(crate::config::redacted(url)));
            }
            std::fs::create_dir_all(directory)?;
            Arc::new(LocalFileSystem::new_with_prefix(directory)?)
        } else if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(ObjectsError::UnsupportedUrl(crate::config::redacted(url)));
            }
            // HTTPS to S3 goes through rustls, with the process's crypto provider.
            if rustls::crypto::CryptoProvider::get_default().is_none() {
                let _ = rustls::crypto::ring::default_provider().install_default();
            }
            let s3 = AmazonS3Builder::from_env().with_bucket_name(bucket).build()?;
            if prefix.trim_matches('/').is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(PrefixStore::new(s3, prefix.trim_matches('/')))
            }
        } else {
            return Err(ObjectsError::UnsupportedUrl(crate::config::redacted(url)));
        };
        Ok(Self { store })
    }

    /// Checks a URL without opening anything (configuration validation).
    pub fn check_url(url: &str) -> Result<(), ObjectsError> {
        let valid = url.strip_prefix("file://").is_some_and(|dir| !dir.is_empty())
            || url.strip_prefix("s3://").is_some_and(|rest| !rest.split('/').next().unwrap_or_default().is_empty());
        if valid { Ok(()) } else { Err(ObjectsError::UnsupportedUrl(crate::config::redacted(url))) }
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), ObjectsError> {
        self.store.put(&Path::from(key), PutPayload::from(bytes)).await?;
        Ok(())
    }

    /// The object at `key`, or `None` when there is none.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ObjectsError> {
        match self.store.get(&Path::from(key)).await {
            Ok(object) => Ok(Some(object.bytes().await?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// What lies one level under `prefix` (`images/<tenant>`): the objects, each with when it was
    /// last written, and the prefixes below (`images` lists the tenants' prefixes).
    pub async fn list_level(&self, prefix: &str) -> Result<Listing, ObjectsError> {
        let listed = self.store.list_with_delimiter(Some(&Path::from(prefix))).await?;
        let mut listing = Listing {
            prefixes: listed.common_prefixes.iter().map(ToString::to_string).collect(),
            objects: listed.objects.into_iter().map(|meta| (meta.location.to_string(), meta.last_modified)).collect(),
        };
        listing.prefixes.sort();
        listing.objects.sort();
        Ok(listing)
    }

    /// Deletes the object at `key`; a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), ObjectsError> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_store_keeps_gets_and_deletes_objects() {
        let dir = tempfile::tempdir().unwrap();
        let objects = Objects::open(&format!("file://{}", dir.path().join("objects").display())).unwrap();
        assert_eq!(objects.get("reports/t1/a.pdf").await.unwrap(), None);
        objects.put("reports/t1/a.pdf", b"%PDF-1.4".to_vec()).await.unwrap();
        assert_eq!(objects.get("reports/t1/a.pdf").await.unwrap().as_deref(), Some(&b"%PDF-1.4"[..]));
        assert!(dir.path().join("objects/reports/t1/a.pdf").is_file());
        objects.put("reports/t2/b.pdf", b"%PDF-1.4".to_vec()).await.unwrap();
        let tenants = objects.list_level("reports").await.unwrap();
        assert_eq!(tenants.prefixes, ["reports/t1", "reports/t2"]);
        let listed = objects.list_level("reports/t1").await.unwrap();
        assert_eq!(listed.objects.iter().map(|(key, _)| key.as_str()).collect::<Vec<_>>(), ["reports/t1/a.pdf"]);
        assert!(listed.objects[0].1 <= chrono::Utc::now());
        assert!(objects.list_level("images").await.unwrap().prefixes.is_empty());
        objects.delete("reports/t1/a.pdf").await.unwrap();
        objects.delete("reports/t1/a.pdf").await.unwrap();
        assert_eq!(objects.get("reports/t1/a.pdf").await.unwrap(), None);
    }

    #[test]
    fn urls_are_checked() {
        assert!(Objects::check_url("file://data/objects").is_ok());
        assert!(Objects::check_url("s3://bucket/prefix").is_ok());
        for bad in ["", "file://", "s3://", "/data", "gs://bucket"] {
            assert!(Objects::check_url(bad).is_err(), "{bad:?}");
        }
    }
}
