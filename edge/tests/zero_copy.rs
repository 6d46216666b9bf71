//! Hot hits on plain HTTP/1.1 leave by reference (`sendfile` from the memory arena), and
//! are byte-exact whichever way they leave.

mod common;

use common::*;
use segue_core::{ContentId, ObjectKey, Tier};

/// A counter or gauge from the edge's metrics page (0 before it is first set).
async fn metric(edge: std::net::SocketAddr, name: &str) -> u64 {
    let page = get(edge, "/metrics", &[]).await;
    assert_eq!(page.status, 200);
    String::from_utf8_lossy(&page.body)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ').map(str::to_owned))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

async fn sendfile_bytes(edge: std::net::SocketAddr) -> u64 {
    metric(edge, "http_sendfile_bytes_total").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_hits_on_plain_http_are_sent_from_the_arena_by_reference() {
    let cid = ContentId::digest(b"zero-copy");
    // Three whole slices and a short last one (too small to be worth a slot).
    let data = pattern(3 * SLICE as usize + 1000, 7);
    let (origin, _dir) = start_origin(&[(ObjectKey::audio(&cid, Tier::High), data.clone())]).await;
    let path = format!("/a/{cid}/high.ogg");

    for zero_copy in [false, true] {
        let edge = start_edge(vec![format!("http://{origin}")], |c| {
            c.public_metrics = true;
            c.zero_copy = zero_copy;
        })
        .await;
        let cold = get(edge, &path, &[]).await;
        assert_eq!((cold.status, cold.h("x-cache")), (200, "MISS"));
        assert_eq!(cold.body, data.as_ref());
        let before = sendfile_bytes(edge).await;
        let hot = get(edge, &path, &[]).await;
        assert_eq!((hot.status, hot.h("x-cache")), (200, "HIT-MEM"));
        assert_eq!(hot.body, data.as_ref());
        let range = get(edge, &path, &[("Range", "bytes=100000-600000")]).await;
        assert_eq!(range.body, &data[100_000..=600_000]);
        let sent = sendfile_bytes(edge).await - before;
        if zero_copy {
            assert_eq!(sent, 3 * SLICE + 500_001, "every whole slice of both answers by reference");
        } else {
            assert_eq!(sent, 0, "with zero_copy off every byte is copied");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_read_back_from_the_ssd_are_sent_by_reference_too() {
    let data = pattern(8 * SLICE as usize, 9);
    let up = start_scripted(data.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let edge = start_edge(vec![format!("http://{}", up.addr)], |c| {
        c.public_metrics = true;
        // Memory holds about three of the object's eight slices; the SSD holds them all.
        c.mem_cache_mb = 1;
        c.ssd_cache_dir = dir.path().display().to_string();
        c.ssd_cache_mb = 64;
        c.ssd_admit_after = 1;
    })
    .await;
    assert_eq!(get(edge, "/z/track.ogg", &[]).await.body, data.as_ref());
    let fetched = up.count();
    // The SSD writes behind; wait until every slice is there.
    for _ in 0..100 {
        if metric(edge, "edge_ssd_written_bytes").await >= 8 * SLICE {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (sent, read) = (sendfile_bytes(edge).await, metric(edge, "edge_ssd_read_bytes").await);
    let again = get(edge, "/z/track.ogg", &[]).await;
    assert_eq!((again.status, again.h("x-cache")), (200, "HIT-SSD"));
    assert_eq!(again.body, data.as_ref());
    assert_eq!(up.count(), fetched, "every slice came from the cache");
    assert!(metric(edge, "edge_ssd_read_bytes").await - read >= 4 * SLICE, "most slices came from the SSD");
    assert_eq!(sendfile_bytes(edge).await - sent, 8 * SLICE, "SSD hits leave by reference like memory hits");
}
