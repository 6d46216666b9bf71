//! One conformance suite for every ObjectStore: the filesystem store and the S3 store
//! against a real S3-compatible server on loopback (started by scripts/services.sh, which
//! exports SEGUE_TEST_S3_ENDPOINT).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use segue_core::store::{self, ByteStream, FsStore, ObjectStore, S3Settings, S3Store};
use segue_core::{Error, ObjectKey};

fn key(s: &str) -> ObjectKey {
    ObjectKey::new(s).unwrap()
}

/// Deterministic pseudo-random bytes (xorshift), so every byte position is distinct enough
/// that an off-by-one read shows up.
fn pattern(len: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A body in uneven chunks, as a network upload would arrive.
fn chunked(data: Bytes, chunk: usize) -> ByteStream {
    let parts: Vec<Result<Bytes, Error>> =
        (0..data.len()).step_by(chunk).map(|i| Ok(data.slice(i..(i + chunk).min(data.len())))).collect();
    Box::pin(futures_util::stream::iter(parts))
}

async fn read(store: &dyn ObjectStore, k: &ObjectKey, range: std::ops::Range<u64>) -> Result<Bytes, Error> {
    let r = store.open(k).await?;
    let chunks: Vec<Bytes> = r.read(range).await?.try_collect().await?;
    Ok(chunks.concat().into())
}

async fn conformance(store: Arc<dyn ObjectStore>) {
    let s = store.as_ref();

    // Missing objects.
    let missing = key("audio/missing/high.ogg");
    assert!(matches!(s.head(&missing).await, Err(Error::NotFound(_))));
    assert!(matches!(s.open(&missing).await.err(), Some(Error::NotFound(_))));
    s.delete(&missing).await.unwrap();

    // Small object: put, head, full and partial reads.
    let k = key("audio/abc/high.ogg");
    let data = pattern(100_000, 1);
    let meta = store::put_bytes(s, &k, data.clone()).await.unwrap();
    assert_eq!(meta.len, 100_000);
    assert!(!meta.validators.etag.is_empty());
    assert_eq!(s.head(&k).await.unwrap(), meta);
    assert_eq!(read(s, &k, 0..100_000).await.unwrap(), data);
    for r in [0..1, 0..4096, 4095..4097, 50_000..99_999, 99_999..100_000, 10..10] {
        assert_eq!(read(s, &k, r.clone()).await.unwrap(), data.slice(r.start as usize..r.end as usize), "{r:?}");
    }
    assert!(read(s, &k, 99_000..100_001).await.is_err(), "read past the end must fail");

    // Empty object.
    let empty = key("seek/abc/empty.json");
    assert_eq!(store::put_bytes(s, &empty, Bytes::new()).await.unwrap().len, 0);
    assert_eq!(read(s, &empty, 0..0).await.unwrap(), Bytes::new());

    // Overwrite: new bytes and a new validator.
    let data2 = pattern(70_000, 2);
    let meta2 = store.put(&k, chunked(data2.clone(), 7_777)).await.unwrap();
    assert_eq!(meta2.len, 70_000);
    assert_ne!(meta2.validators.etag, meta.validators.etag);
    assert_eq!(read(s, &k, 0..70_000).await.unwrap(), data2);

    // A reader opened on one version never returns bytes of another.
    let reader = s.open(&k).await.unwrap();
    store::put_bytes(s, &k, pattern(70_000, 3)).await.unwrap();
    match reader.read(0..70_000).await {
        Ok(stream) => match stream.try_collect::<Vec<Bytes>>().await {
            Ok(chunks) => assert_eq!(Bytes::from(chunks.concat()), data2, "old reader must see old bytes"),
            Err(e) => assert!(matches!(e, Error::Changed(_)), "{e}"),
        },
        Err(e) => assert!(matches!(e, Error::Changed(_)), "{e}"),
    }

    // Large object in odd chunks: multipart on S3 (part size 5 MiB), ranges across parts.
    let big_key = key("audio/big/very_high.ogg");
    let big = pattern(11 * 1024 * 1024 + 123, 4);
    let big_meta = store.put(&big_key, chunked(big.clone(), 300_001)).await.unwrap();
    assert_eq!(big_meta.len, big.len() as u64);
    let across = (5 * 1024 * 1024 - 10)..(5 * 1024 * 1024 + 10);
    assert_eq!(read(s, &big_key, across.clone()).await.unwrap(), big.slice(across.start as usize..across.end as usize));
    assert_eq!(read(s, &big_key, 0..big_meta.len).await.unwrap(), big);

    // A failed upload changes nothing.
    let before = read(s, &k, 0..70_000).await.unwrap();
    let failing: ByteStream = Box::pin(futures_util::stream::iter(vec![
        Ok(pattern(1000, 5)),
        Err(Error::Store { message: "client went away".into(), retryable: true }),
    ]));
    assert!(store.put(&k, failing).await.is_err());
    assert_eq!(read(s, &k, 0..70_000).await.unwrap(), before);
    let failing_big: ByteStream = Box::pin(futures_util::stream::iter(vec![
        Ok(pattern(6 * 1024 * 1024, 6)),
        Err(Error::Store { message: "client went away".into(), retryable: true }),
    ]));
    let fresh = key("audio/never/high.ogg");
    assert!(store.put(&fresh, failing_big).await.is_err());
    assert!(matches!(s.head(&fresh).await, Err(Error::NotFound(_))));

    // Listing: by prefix, sorted, nothing else.
    let listed: Vec<String> = s.list("audio/").await.unwrap().into_iter().map(|m| m.key.to_string()).collect();
    assert_eq!(listed, vec!["audio/abc/high.ogg", "audio/big/very_high.ogg"]);
    let listed: Vec<String> = s.list("audio/ab").await.unwrap().into_iter().map(|m| m.key.to_string()).collect();
    assert_eq!(listed, vec!["audio/abc/high.ogg"]);
    assert_eq!(s.list("").await.unwrap().len(), 3);
    assert!(s.list("nothing/").await.unwrap().is_empty());

    // Concurrent writers to one key: the survivor is one whole version.
    let race = key("manifest/race.json");
    let versions: Vec<Bytes> = (0..4).map(|i| pattern(300_000, 10 + i)).collect();
    let mut tasks = Vec::new();
    for v in versions.clone() {
        let st = store.clone();
        let rk = race.clone();
        tasks.push(tokio::spawn(async move { st.put(&rk, chunked(v, 65_536)).await.map(|_| ()) }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let got = read(s, &race, 0..300_000).await.unwrap();
    assert!(versions.contains(&got), "a concurrent put left a mixed object");

    // Delete.
    s.delete(&k).await.unwrap();
    assert!(matches!(s.head(&k).await, Err(Error::NotFound(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filesystem_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FsStore::new(dir.path()).unwrap();
    conformance(Arc::new(fs)).await;
    // Keys are plain files under the root, as operators expect.
    assert!(dir.path().join("audio/big/very_high.ogg").is_file());
    // No temp files are left behind by failed uploads.
    let fs = FsStore::new(dir.path()).unwrap();
    assert_eq!(fs.sweep_temp_files(std::time::Duration::ZERO).unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_conforms() {
    let endpoint = std::env::var("SEGUE_TEST_S3_ENDPOINT").expect(
        "SEGUE_TEST_S3_ENDPOINT is not set: run the suite with scripts/test.sh, which starts an S3 server via scripts/services.sh",
    );
    let settings = S3Settings {
        endpoint,
        access_key_id: "segue-test".into(),
        secret_access_key: "segue-test-secret".into(),
        part_size_mb: 5,
        ..S3Settings::default()
    };
    let bucket = format!(
        "segue-conformance-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
    );
    let s3 = S3Store::new(&bucket, "objects", &settings).unwrap();
    s3.client().create_bucket().bucket(&bucket).send().await.unwrap();
    conformance(Arc::new(s3)).await;
}
