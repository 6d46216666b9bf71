//! The S3 store (any S3-compatible service) through `aws-sdk-s3`.
//!
//! Objects larger than one part go up as multipart uploads, so a multi-GB master never
//! sits in memory; S3 makes each PUT or CompleteMultipartUpload atomic. Reads are ranged
//! GetObject calls made conditional on the ETag seen at open, so a replaced object is
//! reported as [`Error::Changed`] rather than mixed into one response.

use std::ops::Range;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde::Deserialize;

use super::{ByteStream, ObjectMeta, ObjectReader, ObjectStore};
use crate::conditional::Validators;
use crate::config::{ensure, FieldError};
use crate::error::{Error, Result};
use crate::key::ObjectKey;

/// S3 connection settings, the `[s3]` table of a role's config. Credentials left empty
/// are read from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Settings {
    /// Endpoint URL of an S3-compatible service; empty means AWS for `region`.
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Path-style addressing (`endpoint/bucket/key`), which most non-AWS services need.
    pub force_path_style: bool,
    /// Multipart part size in MiB (S3 requires at least 5).
    pub part_size_mb: u64,
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            endpoint: String::new(),
            region: "us-east-1".into(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            force_path_style: true,
            part_size_mb: 8,
        }
    }
}

impl S3Settings {
    pub fn validate(&self) -> std::result::Result<(), FieldError> {
        ensure((5..=5 * 1024).contains(&self.part_size_mb), "s3.part_size_mb", "must be 5-5120 (S3 part limits)")?;
        ensure(!self.region.is_empty(), "s3.region", "must not be empty")?;
        ensure(
            self.endpoint.is_empty() || self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://"),
            "s3.endpoint",
            "must be an http:// or https:// URL",
        )
    }
}

pub struct S3Store {
    client: Client,
    bucket: String,
    /// Key prefix inside the bucket, empty or ending in '/'.
    prefix: String,
    part_size: usize,
}

impl S3Store {
    pub fn new(bucket: &str, prefix: &str, settings: &S3Settings) -> Result<Self> {
        if bucket.is_empty() {
            return Err(Error::invalid("s3 location", "bucket name is empty (expected s3://bucket/prefix)"));
        }
        let env = |name: &str| std::env::var(name).unwrap_or_default();
        let ak =
            if settings.access_key_id.is_empty() { env("AWS_ACCESS_KEY_ID") } else { settings.access_key_id.clone() };
        let sk = if settings.secret_access_key.is_empty() {
            env("AWS_SECRET_ACCESS_KEY")
        } else {
            settings.secret_access_key.clone()
        };
        let mut cfg = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .credentials_provider(Credentials::new(ak, sk, None, None, "segue-config"))
            .force_path_style(settings.force_path_style)
            // Checksums only where S3 requires them: many S3-compatible services reject
            // the newer default trailers.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
        if !settings.endpoint.is_empty() {
            cfg = cfg.endpoint_url(settings.endpoint.clone());
        }
        let prefix = prefix.trim_matches('/');
        Ok(S3Store {
            client: Client::from_conf(cfg.build()),
            bucket: bucket.to_owned(),
            prefix: if prefix.is_empty() { String::new() } else { format!("{prefix}/") },
            part_size: (settings.part_size_mb.max(5) as usize) << 20,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn s3_key(&self, key: &ObjectKey) -> String {
        format!("{}{}", self.prefix, key.as_str())
    }

    async fn put_single(&self, key: &ObjectKey, data: Bytes) -> Result<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.s3_key(key))
            .body(data.into())
            .send()
            .await
            .map_err(|e| s3_error(key, e))?;
        Ok(())
    }

    async fn put_multipart(&self, key: &ObjectKey, first: Bytes, body: &mut ByteStream) -> Result<()> {
        let s3_key = self.s3_key(key);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&s3_key)
            .send()
            .await
            .map_err(|e| s3_error(key, e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| Error::Store {
                message: "CreateMultipartUpload returned no upload id".into(),
                retryable: true,
            })?
            .to_owned();
        let result = async {
            let mut parts = Vec::new();
            let mut pending = Some(first);
            let mut buf = BytesMut::with_capacity(self.part_size);
            loop {
                let part = match pending.take() {
                    Some(p) => p,
                    None => {
                        while buf.len() < self.part_size {
                            match body.next().await {
                                Some(chunk) => buf.extend_from_slice(&chunk?),
                                None => break,
                            }
                        }
                        if buf.is_empty() {
                            break;
                        }
                        buf.split().freeze()
                    }
                };
                let number = parts.len() as i32 + 1;
                let out = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(&s3_key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(part.into())
                    .send()
                    .await
                    .map_err(|e| s3_error(key, e))?;
                parts.push(
                    CompletedPart::builder().part_number(number).set_e_tag(out.e_tag().map(str::to_owned)).build(),
                );
            }
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(&s3_key)
                .upload_id(&upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .send()
                .await
                .map_err(|e| s3_error(key, e))?;
            Ok::<(), Error>(())
        }
        .await;
        if result.is_err() {
            // Best effort: an abandoned upload costs storage until a lifecycle rule removes it.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&s3_key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }
}

fn s3_error<E>(key: &ObjectKey, e: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = e.as_service_error().and_then(|s| s.code()).unwrap_or("");
    match code {
        "NoSuchKey" | "NotFound" => return Error::NotFound(key.to_string()),
        "PreconditionFailed" => return Error::Changed(key.to_string()),
        _ => {}
    }
    let retryable = match &e {
        SdkError::ServiceError(s) => {
            s.raw().status().is_server_error() || matches!(code, "SlowDown" | "InternalError" | "RequestTimeout")
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        _ => false,
    };
    Error::Store { message: format!("{key}: {}", DisplayErrorContext(&e)), retryable }
}

fn to_system_time(t: Option<&aws_sdk_s3::primitives::DateTime>) -> SystemTime {
    t.and_then(|d| SystemTime::try_from(*d).ok()).unwrap_or(UNIX_EPOCH)
}

fn clean_etag(e: Option<&str>) -> String {
    e.unwrap_or("").trim_matches('"').to_owned()
}

struct S3Reader {
    client: Client,
    bucket: String,
    s3_key: String,
    meta: ObjectMeta,
}

#[async_trait]
impl ObjectReader for S3Reader {
    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }

    async fn read(&self, range: Range<u64>) -> Result<ByteStream> {
        super::check_range(&self.meta, &range)?;
        if range.is_empty() {
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        let key = self.meta.key.clone();
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&self.s3_key)
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .set_if_match(self.meta.validators.etag_header())
            .send()
            .await
            .map_err(|e| s3_error(&key, e))?;
        let body = out.body;
        Ok(Box::pin(futures_util::stream::unfold((body, key), |(mut body, key)| async move {
            match body.next().await {
                None => None,
                Some(Ok(b)) => Some((Ok(b), (body, key))),
                Some(Err(e)) => {
                    Some((Err(Error::Store { message: format!("{key}: body: {e}"), retryable: true }), (body, key)))
                }
            }
        })))
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn open(&self, key: &ObjectKey) -> Result<Box<dyn ObjectReader>> {
        let s3_key = self.s3_key(key);
        let out =
            self.client.head_object().bucket(&self.bucket).key(&s3_key).send().await.map_err(|e| s3_error(key, e))?;
        let meta = ObjectMeta {
            key: key.clone(),
            len: out.content_length().unwrap_or(0).max(0) as u64,
            validators: Validators::strong(clean_etag(out.e_tag()), to_system_time(out.last_modified())),
        };
        Ok(Box::new(S3Reader { client: self.client.clone(), bucket: self.bucket.clone(), s3_key, meta }))
    }

    async fn put(&self, key: &ObjectKey, mut body: ByteStream) -> Result<ObjectMeta> {
        // Buffer up to one part: small objects go up in a single PUT.
        let mut buf = BytesMut::new();
        while buf.len() < self.part_size {
            match body.next().await {
                Some(chunk) => buf.extend_from_slice(&chunk?),
                None => {
                    self.put_single(key, buf.freeze()).await?;
                    return self.head(key).await;
                }
            }
        }
        self.put_multipart(key, buf.freeze(), &mut body).await?;
        self.head(key).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.s3_key(key))
            .send()
            .await
            .map_err(|e| s3_error(key, e))?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{}{prefix}", self.prefix))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Error::Store {
                message: format!("list {prefix}: {}", DisplayErrorContext(&e)),
                retryable: true,
            })?;
            for obj in page.contents() {
                let Some(full) = obj.key() else { continue };
                let Some(rel) = full.strip_prefix(&self.prefix) else { continue };
                let Ok(key) = ObjectKey::new(rel) else { continue };
                out.push(ObjectMeta {
                    key,
                    len: obj.size().unwrap_or(0).max(0) as u64,
                    validators: Validators::strong(clean_etag(obj.e_tag()), to_system_time(obj.last_modified())),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
}
