//! Hot hits on plain HTTP/1.1 leave by reference (`sendfile` from the memory arena), and
//! are byte-exact whichever way they leave.

mod common;

use common::*;
use segue_core::{ContentId, ObjectKey, Tier};

/// `http_sendfile_bytes_total` from the edge's metrics page (0 before the first send).
async fn sendfile_bytes(edge: std::net::SocketAddr) -> u64 {
    let page = get(edge, "/metrics", &[]).await;
    assert_eq!(page.status, 200);
    String::from_utf8_lossy(&page.body)
        .lines()
        .find_map(|l| l.strip_prefix("http_sendfile_bytes_total "))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
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
