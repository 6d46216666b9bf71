//! The edge over real sockets on 127.0.0.1, in front of a real origin and in front of a
//! scripted upstream (a real HTTP server that counts requests and can stall or die
//! mid-body), checking byte-exact ranges, coalescing and failure visibility.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use segue_core::{ContentId, ObjectKey, Tier};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_through_the_edge_are_byte_exact_cold_and_warm() {
    let cid = ContentId::digest(b"edge");
    let data = pattern(1_300_000, 1);
    let (origin, _dir) = start_origin(&[(ObjectKey::audio(&cid, Tier::High), data.clone())]).await;
    let edge = start_edge(vec![format!("http://{origin}")], |_| {}).await;
    let path = format!("/a/{cid}/high.ogg");
    let d = &data;

    let r = get(edge, &path, &[("Range", "bytes=300000-300099")]).await;
    assert_eq!((r.status, r.h("x-cache")), (206, "MISS"));
    assert_eq!(r.body, &d[300_000..300_100]);
    assert_eq!(r.h("content-range"), "bytes 300000-300099/1300000");
    assert!(r.h("via").starts_with("1.1 ") && r.h("via").len() > 6, "{:?}", r.headers);
    assert_eq!(r.h("cache-control"), "public, max-age=31536000, immutable");
    assert_eq!(r.h("surrogate-key"), format!("{cid} {cid}/high"));
    assert_eq!(r.h("content-type"), "audio/ogg");

    for _round in 0..2 {
        for (spec, first, last) in [
            ("bytes=0-99", 0usize, 99usize),
            ("bytes=262100-262200", 262_100, 262_200),
            ("bytes=1299000-", 1_299_000, 1_299_999),
            ("bytes=-777", 1_299_223, 1_299_999),
            ("bytes=0-", 0, 1_299_999),
        ] {
            let r = get(edge, &path, &[("Range", spec)]).await;
            assert_eq!(r.status, 206, "{spec}");
            assert_eq!(r.body, &d[first..=last], "{spec}");
        }
        let full = get(edge, &path, &[]).await;
        assert_eq!((full.status, full.body.len()), (200, 1_300_000));
        assert_eq!(full.body, d.as_ref());
        let multi = get(edge, &path, &[("Range", "bytes=10-19,600000-600009")]).await;
        assert_eq!(multi.status, 206);
        assert!(multi.h("content-type").starts_with("multipart/byteranges"));
        let s = String::from_utf8_lossy(&multi.body);
        assert!(
            s.contains("Content-Range: bytes 10-19/1300000")
                && s.contains("Content-Range: bytes 600000-600009/1300000")
        );
        assert_eq!(get(edge, &path, &[("Range", "bytes=1300000-")]).await.status, 416);
    }
    let warm = get(edge, &path, &[("Range", "bytes=0-1299999")]).await;
    assert_eq!(warm.h("x-cache"), "HIT-MEM");
    let etag = warm.h("etag").to_string();
    assert_eq!(get(edge, &path, &[("If-None-Match", &etag)]).await.status, 304);
    let stale = get(edge, &path, &[("Range", "bytes=0-9"), ("If-Range", "\"old\"")]).await;
    assert_eq!((stale.status, stale.body.len()), (200, 1_300_000));
    let missing = get(edge, &format!("/a/{}/high.ogg", ContentId::digest(b"none")), &[]).await;
    assert_eq!(missing.status, 404);
    assert_eq!(get(edge, "/a/../etc/passwd", &[]).await.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_storm_makes_one_upstream_fetch_per_slice() {
    // 1,000 clients and the edge's side of each connection live in this process.
    let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit { current: lim.maximum, maximum: lim.maximum },
    );
    let data = pattern(1_000_000, 2); // 4 slices of 256 KiB
    let up = start_scripted(data.clone()).await;
    let edge = start_edge(vec![format!("http://{}", up.addr)], |_| {}).await;
    let clients: Vec<_> = (0..1000).map(|_| tokio::spawn(async move { get(edge, "/storm.ogg", &[]).await })).collect();
    for c in clients {
        let r = c.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, data.as_ref());
    }
    assert_eq!(up.max_per_range(), 1, "one upstream fetch per slice: {:?}", up.requests.lock().unwrap());
    assert_eq!(up.count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_get_bytes_while_the_slice_is_still_arriving() {
    let data = pattern(SLICE as usize, 3);
    let up = start_scripted(data.clone()).await;
    let release = Arc::new(Notify::new());
    up.script.lock().unwrap().stall_after = Some((64 * 1024, release.clone()));
    let edge = start_edge(vec![format!("http://{}", up.addr)], |_| {}).await;

    // Two clients: both must receive the first 64 KiB while the upstream is stalled.
    let mut socks = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(edge).await.unwrap();
        s.write_all(b"GET /slow.ogg HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await.unwrap();
        socks.push(s);
    }
    for s in &mut socks {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while got.len() < 1024 {
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                .await
                .expect("bytes before the slice completes")
                .unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
    }
    release.notify_waiters();
    for mut s in socks {
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
    }
    assert_eq!(up.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_dying_mid_slice_fails_every_waiter_visibly() {
    let data = pattern(SLICE as usize, 4);
    let up = start_scripted(data.clone()).await;
    up.script.lock().unwrap().die_after = Some(100 * 1024);
    let edge = start_edge(vec![format!("http://{}", up.addr)], |_| {}).await;
    let clients: Vec<_> = (0..5).map(|_| tokio::spawn(async move { get(edge, "/dies.ogg", &[]).await })).collect();
    for c in clients {
        let r = c.await.unwrap();
        // Either the head already went out and the body is cut short of Content-Length,
        // or the failure came first and the answer is an error status: never a clean,
        // short 200.
        if r.status == 200 {
            let promised: usize = r.h("content-length").parse().unwrap();
            assert!(r.body.len() < promised, "a failed body must not look complete");
        } else {
            assert!(r.status >= 500, "{}", r.status);
        }
    }
    // The failed fill left nothing behind: once the upstream heals, a request succeeds.
    up.script.lock().unwrap().die_after = None;
    let r = get(edge, "/dies.ogg", &[]).await;
    assert_eq!((r.status, r.body.len()), (200, SLICE as usize));
    assert_eq!(r.body, data.as_ref());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_does_not_cancel_the_fetch() {
    let data = pattern(600_000, 5);
    let up = start_scripted(data.clone()).await;
    let release = Arc::new(Notify::new());
    up.script.lock().unwrap().stall_after = Some((32 * 1024, release.clone()));
    let edge = start_edge(vec![format!("http://{}", up.addr)], |_| {}).await;
    {
        let mut s = TcpStream::connect(edge).await.unwrap();
        s.write_all(b"GET /leave.ogg HTTP/1.1\r\nHost: t\r\nRange: bytes=0-1000\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 512];
        let _ = s.read(&mut buf).await.unwrap();
    } // dropped: the client is gone
    let stayer = tokio::spawn(async move { get(edge, "/leave.ogg", &[("Range", "bytes=0-262143")]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    release.notify_waiters();
    let r = stayer.await.unwrap();
    assert_eq!(r.body, &data[..262_144]);
    assert_eq!(up.requests.lock().unwrap().get("/leave.ogg bytes=0-262143").copied(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_first_upstream_fails_over_to_the_next() {
    let data = pattern(300_000, 6);
    let up = start_scripted(data.clone()).await;
    // A port bound but not listening: connections to it are refused, and holding the socket
    // keeps the port from going to another test's listener (a dropped listener's would not).
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead = held.local_addr().unwrap();
    let edge = start_edge(vec![format!("http://{dead}"), format!("http://{}", up.addr)], |_| {}).await;
    let r = get(edge, "/failover.ogg", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data.as_ref());

    let nowhere = start_edge(vec![format!("http://{dead}")], |_| {}).await;
    let r = get(nowhere, "/x.ogg", &[]).await;
    assert_eq!(r.status, 502);
    assert!(String::from_utf8_lossy(&r.body).contains("upstream_unavailable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_urls_are_checked_per_prefix() {
    let data = pattern(100_000, 7);
    let up = start_scripted(data.clone()).await;
    let secret = "00112233445566778899aabbccddeeff";
    let edge = start_edge(vec![format!("http://{}", up.addr)], |c| {
        c.tokens.required = true;
        c.tokens.keys.insert("k1".into(), secret.into());
    })
    .await;
    let key = segue_core::token::Key::from_hex("k1", secret).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let path = "/a/x/high.ogg";
    assert_eq!(get(edge, path, &[]).await.status, 403);
    let q = key.sign("GET", path, &segue_core::token::Claims { exp: now + 60, ..Default::default() });
    let r = get(edge, &format!("{path}?{q}"), &[]).await;
    assert_eq!((r.status, r.body.as_slice()), (200, data.as_ref()));
    // A second client's differently signed URL shares the cache entry.
    let q2 = key.sign("GET", path, &segue_core::token::Claims { exp: now + 120, ..Default::default() });
    let r = get(edge, &format!("{path}?{q2}"), &[]).await;
    assert_eq!(r.h("x-cache"), "HIT-MEM");
    assert_eq!(up.count(), 1);
    // Seek tables are outside the token prefixes.
    assert_eq!(get(edge, "/seek/x/high.json", &[]).await.status, 200);
    // The signature covers the whole query: a cache-busting parameter breaks it.
    let busted = get(edge, &format!("{path}?{q}&x=1"), &[]).await;
    assert_eq!(busted.status, 403);
    assert_eq!(up.count(), 2);
}

/// Nobody mints cache entries (and upstream fetches) by adding parameters: content paths
/// key by path alone, other paths by the parameters their rule names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unkeyed_query_parameters_never_split_the_cache() {
    let data = pattern(100_000, 15);
    let up = start_scripted(data.clone()).await;
    let edge = start_edge(vec![format!("http://{}", up.addr)], |c| {
        c.paths = segue_edge::policy::defaults();
        c.paths.push(segue_edge::policy::PathPolicy {
            key_params: Some(vec!["page".into()]),
            ..segue_edge::policy::PathPolicy::new("/list/", true, false)
        });
    })
    .await;
    for i in 0..5 {
        let r = get(edge, &format!("/a/bust/high.ogg?x={i}"), &[]).await;
        assert!(r.status == 200 && r.body == data.as_ref());
    }
    assert_eq!(up.count(), 1, "one object, one fetch");
    for i in 0..3 {
        assert_eq!(get(edge, &format!("/list/p?page=1&x={i}"), &[]).await.status, 200);
    }
    assert_eq!(get(edge, "/list/p?page=2", &[]).await.status, 200);
    assert_eq!(up.count(), 3, "one entry per page, whatever else is added");
}

/// A multi-range request whose ranges would need far more upstream bytes than it is sent
/// gets the whole representation (RFC 9110 §14.2 lets a server ignore such a Range); the
/// same ranges over cached slices are answered as asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scattered_tiny_ranges_cannot_amplify_upstream_traffic() {
    let data = pattern(16 * SLICE as usize, 16);
    let up = start_scripted(data.clone()).await;
    let edge = start_edge(vec![format!("http://{}", up.addr)], |_| {}).await;
    let scattered: Vec<String> = (0..16).map(|i| format!("{}-{}", i * SLICE, i * SLICE)).collect();
    let range = format!("bytes={}", scattered.join(","));
    let r = get(edge, "/many.ogg", &[("Range", &range)]).await;
    assert_eq!(r.status, 200, "the whole object, not 16 fills for 16 bytes");
    assert!(r.body == data.as_ref());
    assert_eq!(up.count(), 16, "each slice fetched once, every byte of it sent");
    // Ranges a request may cost are served as asked...
    let near = format!("bytes=0-0,{}-{}", 3 * SLICE, 3 * SLICE);
    let fresh = get(edge, "/other.ogg", &[("Range", &near)]).await;
    assert_eq!(fresh.status, 206);
    // ...and so is any range set over slices already cached.
    let cached = get(edge, "/many.ogg", &[("Range", &range)]).await;
    assert_eq!(cached.status, 206);
    assert!(cached.h("content-type").starts_with("multipart/byteranges"));
    assert_eq!(up.count(), 16 + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_upstream_drops_the_old_slices_and_heals() {
    let v1 = pattern(3 * SLICE as usize, 8);
    let up = start_scripted(v1.clone()).await;
    let edge = start_edge(vec![format!("http://{}", up.addr)], |_| {}).await;
    // Cache slice 0 of version 1.
    let r = get(edge, "/versioned.ogg", &[("Range", "bytes=0-99")]).await;
    assert_eq!(r.body, &v1[..100]);
    // The object is replaced upstream (same length, new bytes, new ETag).
    let v2 = pattern(3 * SLICE as usize, 9);
    up.script.lock().unwrap().replace = Some((v2.clone(), "v2".into()));
    // A slice not cached yet reveals the change: this request fails visibly...
    let r = get(edge, "/versioned.ogg", &[("Range", &format!("bytes={}-{}", SLICE, SLICE + 99))]).await;
    assert!(r.status == 503 || r.body.len() < 100, "a mixed-version body must not be served: {}", r.status);
    // ...and from then on the edge serves version 2 only, slice 0 included.
    let r = get(edge, "/versioned.ogg", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.h("etag"), "\"v2\"");
    assert_eq!(r.body, v2.as_ref());
}

/// Fills are keyed by version: a reader of version 2 never joins a fill still streaming
/// version 1's bytes of the same slice (which would mix two versions in one body).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_of_a_new_version_never_joins_a_fill_of_the_old_one() {
    let v1 = pattern(3 * SLICE as usize, 12);
    let up = start_scripted(v1.clone()).await;
    let (edge, state) = common::start_edge_with_state(vec![format!("http://{}", up.addr)], |c| {
        c.reader_timeout_secs = 30;
        c.writer_max_age_secs = 30;
    })
    .await;
    assert_eq!(get(edge, "/mixed.ogg", &[("Range", "bytes=0-99")]).await.body, &v1[..100]);
    // A version-1 reader's fill of slice 1 stalls after its head and 16 KiB.
    let release = Arc::new(Notify::new());
    {
        let mut s = up.script.lock().unwrap();
        s.stall_after = Some((16 * 1024, release.clone()));
        s.stall_once = true;
    }
    let range = format!("bytes={}-{}", SLICE, 2 * SLICE - 1);
    let old_reader = tokio::spawn(async move { get(edge, "/mixed.ogg", &[("Range", range.as_str())]).await });
    while up.count() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Version 2 appears upstream and the edge forgets version 1 (an operator purge).
    let v2 = pattern(3 * SLICE as usize, 13);
    up.script.lock().unwrap().replace = Some((v2.clone(), "v2".into()));
    state.cache.drop_object("/mixed.ogg");
    let reader = tokio::spawn(async move { get(edge, "/mixed.ogg", &[]).await });
    // Its slice 1 is fetched afresh (before the fix it joined the stalled fill and waited).
    for _ in 0..500 {
        if up.count() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    release.notify_waiters();
    let r = reader.await.unwrap();
    assert_eq!((r.status, r.h("etag")), (200, "\"v2\""));
    assert!(r.body == v2.as_ref(), "one version per body");
    let old = old_reader.await.unwrap();
    assert!(old.body == v1[SLICE as usize..2 * SLICE as usize], "the old reader gets its own version");
}

/// A scripted upstream whose next answer stops after 16 KiB and never goes on.
async fn stalling_once(data: bytes::Bytes) -> Scripted {
    let up = start_scripted(data).await;
    {
        let mut s = up.script.lock().unwrap();
        s.stall_after = Some((16 * 1024, Arc::new(Notify::new())));
        s.stall_once = true;
    }
    up
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_fill_is_taken_over_by_one_later_request() {
    let data = pattern(SLICE as usize, 10);
    let up = stalling_once(data.clone()).await;
    let edge = start_edge(vec![format!("http://{}", up.addr)], |c| {
        c.writer_max_age_secs = 1;
        c.reader_timeout_secs = 30;
        c.upstream_read_timeout_secs = 60;
    })
    .await;
    // The first client's fill stalls forever.
    let stuck = tokio::spawn(async move { get(edge, "/stuck.ogg", &[]).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Later requests at once: exactly one takes over, all of them are served.
    let later: Vec<_> = (0..20).map(|_| tokio::spawn(async move { get(edge, "/stuck.ogg", &[]).await })).collect();
    for c in later {
        let r = c.await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, data.as_ref()));
    }
    assert_eq!(up.count(), 2, "one stuck fetch and one takeover: {:?}", up.requests.lock().unwrap());
    // The replaced fetch was stopped, not left to its 30 s and 60 s timeouts: its waiter's
    // body was cut at the takeover (a liveness bound, not a speed one).
    let cut = tokio::time::timeout(Duration::from_secs(10), stuck).await.expect("the stuck fill's waiter was released");
    assert!(cut.unwrap().body.len() < data.len());
}

/// An upstream that stalls mid-body forever: the fill fails once the upstream has sent
/// nothing for `upstream_read_timeout_secs` (long before the readers' own 30 s timeout),
/// its waiter's body is cut rather than left hanging, and the next request fetches afresh
/// instead of joining the dead fill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_stalled_mid_body_fails_on_the_read_timeout_and_the_next_request_heals() {
    let data = pattern(SLICE as usize, 11);
    let up = stalling_once(data.clone()).await;
    let edge = start_edge(vec![format!("http://{}", up.addr)], |c| {
        c.upstream_read_timeout_secs = 1;
        c.reader_timeout_secs = 30;
        c.writer_max_age_secs = 30;
    })
    .await;
    // Liveness, not speed: the cut comes from the 1 s read timeout; without it the client
    // would wait for the 30 s reader timeout.
    let cut = tokio::time::timeout(Duration::from_secs(15), get(edge, "/stall.ogg", &[])).await;
    let cut = cut.expect("the stalled fill was failed, not left hanging");
    assert!(cut.body.len() < data.len(), "a stalled body never ends cleanly");
    let healed = get(edge, "/stall.ogg", &[]).await;
    assert_eq!((healed.status, healed.body.as_slice()), (200, data.as_ref()));
    assert_eq!(up.count(), 2);
}

/// A slow but steady fill is not "stuck": a request arriving after `writer_max_age_secs`
/// of its run joins it instead of fetching the slice a second time (takeover is decided by
/// the time since the last bytes, not since the start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_steady_fill_is_joined_not_taken_over() {
    let data = pattern(SLICE as usize, 12);
    let up = start_scripted(data.clone()).await;
    up.script.lock().unwrap().pace = Some(Duration::from_millis(120)); // ~2 s per slice
    let edge = start_edge(vec![format!("http://{}", up.addr)], |c| c.writer_max_age_secs = 1).await;
    let first = tokio::spawn(async move { get(edge, "/steady.ogg", &[]).await });
    tokio::time::sleep(Duration::from_millis(1400)).await;
    let second = get(edge, "/steady.ogg", &[]).await;
    assert_eq!((second.status, second.body.as_slice()), (200, data.as_ref()));
    assert_eq!(first.await.unwrap().body.as_slice(), data.as_ref());
    assert_eq!(up.count(), 1, "the steady fill was joined");
}

/// Methods other than GET and HEAD go upstream uncached: method, body and end-to-end
/// headers arrive, hop-by-hop ones do not, the answer comes back with `X-Cache: PASS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_are_forwarded_uncached() {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(segue_core::server::serve(
        listener,
        Default::default(),
        move |req: http::Request<segue_core::server::ReqBody>, _| {
            let log = log.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = http_body_util::BodyExt::collect(body).await.unwrap().to_bytes();
                log.lock().unwrap().push(format!(
                    "{} {} via={} keep={} custom={}",
                    parts.method,
                    parts.uri,
                    parts.headers.get("via").is_some(),
                    parts.headers.get("keep-alive").is_some(),
                    parts.headers.get("x-custom").and_then(|v| v.to_str().ok()).unwrap_or("")
                ));
                let mut r = http::Response::new(segue_core::server::full(format!("got {} bytes", body.len())));
                *r.status_mut() = http::StatusCode::CREATED;
                r.headers_mut().insert("x-upstream", http::HeaderValue::from_static("yes"));
                r
            }
        },
        std::future::pending(),
    ));
    let edge = start_edge(vec![format!("http://{up}")], |_| {}).await;

    let body = vec![7u8; 100_000];
    let r = request(edge, "POST", "/v1/plays?x=1", &[("x-custom", "a"), ("keep-alive", "timeout=5")], &body).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.body, b"got 100000 bytes");
    assert_eq!(r.h("x-cache"), "PASS");
    assert_eq!(r.h("x-upstream"), "yes");
    assert!(r.h("via").ends_with(&format!(":{}", edge.port())), "{:?}", r.headers);
    let r = request(edge, "DELETE", "/a/x/high.ogg", &[], b"").await;
    assert_eq!(r.status, 201);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            "POST /v1/plays?x=1 via=true keep=false custom=a".to_string(),
            "DELETE /a/x/high.ogg via=true keep=false custom=".into()
        ]
    );
    // Nothing was cached: the same POST goes upstream again.
    request(edge, "POST", "/v1/plays?x=1", &[], b"again").await;
    assert_eq!(seen.lock().unwrap().len(), 3);

    // With no upstream reachable: 502 JSON, quickly.
    let dead = start_edge(vec!["http://127.0.0.1:1".into()], |_| {}).await;
    let r = request(dead, "POST", "/v1/plays", &[], b"x").await;
    assert_eq!(r.status, 502);
    let body = String::from_utf8_lossy(&r.body);
    assert!(body.contains("upstream_unavailable"), "{body}");
    assert!(!body.contains("127.0.0.1:1"), "the upstream's address reached the client: {body}");
    let r = get(dead, "/a/x/high.ogg", &[]).await;
    let body = String::from_utf8_lossy(&r.body);
    assert_eq!(r.status, 502, "{body}");
    assert!(!body.contains("127.0.0.1:1"), "the upstream's address reached the client: {body}");
}

/// An upstream that closes the first connection after reading a request, without
/// answering (a keep-alive connection it timed out just as it was reused), then answers
/// on a new one: an idempotent PUT is sent again and succeeds; a POST is not (it may have
/// been handled) and fails visibly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_request_is_resent_once_when_its_connection_drops() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            n += 1;
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = Vec::new();
            // Read the head and the 5-byte body.
            while !got.windows(4).any(|w| w == b"\r\n\r\n") || !got.ends_with(b"hello") {
                let k = s.read(&mut buf).await.unwrap();
                if k == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..k]);
            }
            let line = String::from_utf8_lossy(&got).lines().next().unwrap_or("").to_owned();
            log.lock().unwrap().push(line);
            if n % 2 == 1 {
                drop(s); // the first of each pair: closed without an answer
                continue;
            }
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
        }
    });
    let edge = start_edge(vec![format!("http://{up}")], |_| {}).await;
    let r = request(edge, "PUT", "/config/x", &[], b"hello").await;
    assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]));
    assert_eq!(*seen.lock().unwrap(), vec!["PUT /config/x HTTP/1.1", "PUT /config/x HTTP/1.1"]);
    let r = request(edge, "POST", "/config/y", &[], b"hello").await;
    assert_eq!(r.status, 502);
    assert_eq!(seen.lock().unwrap().len(), 3, "a POST is sent once");
}

/// Active health checks take a dead upstream out of rotation without client traffic and
/// put it back as soon as it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_open_and_close_circuits() {
    let spare = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = spare.local_addr().unwrap().port();
    drop(spare); // nothing listens there now: connections are refused
    let up = start_scripted(pattern(1000, 1)).await;
    let (_, state) =
        start_edge_with_state(vec![format!("http://127.0.0.1:{port}"), format!("http://{}", up.addr)], |c| {
            c.upstream_probe_secs = 1;
            c.upstream_failures_to_open = 2;
            c.upstream_open_secs = 600;
        })
        .await;
    let circuit = |i: usize| state.upstreams.health()[i]["circuit"].as_str().unwrap().to_owned();
    let mut waited = 0;
    while circuit(0) != "open" && waited < 100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    assert_eq!((circuit(0).as_str(), circuit(1).as_str()), ("open", "closed"));
    // It comes back: the next check closes the circuit, long before upstream_open_secs.
    let back = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(segue_core::server::serve(
        back,
        Default::default(),
        |_req: http::Request<segue_core::server::ReqBody>, _| async { segue_core::server::health_response() },
        std::future::pending(),
    ));
    let mut waited = 0;
    while circuit(0) != "closed" && waited < 50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    assert_eq!(circuit(0), "closed");
}

/// The memory index holds only the hot records: one it lets go is reloaded from the SSD
/// (where it is kept beside the object's slices), so nothing already cached is fetched
/// again; and a purge made while a record was out of the index still reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_the_index_let_go_come_back_from_the_ssd_and_purges_still_reach_them() {
    let data = pattern(SLICE as usize + 1000, 14);
    let up = start_scripted(data.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let (edge, state) = common::start_edge_with_state(vec![format!("http://{}", up.addr)], |c| {
        c.ssd_cache_dir = dir.path().display().to_string();
        c.ssd_cache_mb = 64;
        c.ssd_admit_after = 1;
        c.index_max_objects = 2;
        c.admin_tokens = vec!["index-test-token".into()];
    })
    .await;
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    tokio::spawn(segue_edge::serve_admin(admin, state.clone(), Default::default(), std::future::pending()));

    let paths: Vec<String> = (0..8).map(|i| format!("/ix/{i}.ogg")).collect();
    for p in &paths {
        assert!(get(edge, p, &[]).await.body == data.as_ref());
    }
    let fetched = up.count();
    assert_eq!(fetched, 2 * paths.len(), "two slices per object");
    assert!(state.cache.object_count() <= 2, "the index holds {} records", state.cache.object_count());
    for p in &paths {
        let r = get(edge, p, &[]).await;
        assert!(r.status == 200 && r.body == data.as_ref(), "{p}");
    }
    assert_eq!(up.count(), fetched, "records the index let go were reloaded, not refetched");

    // A hard purge of an object whose record is not in the index right now.
    assert!(state.cache.object_count() <= 2);
    let out = paths.iter().find(|p| state.cache.object(p).is_none()).expect("the index holds 2 of 8").clone();
    let body = format!(r#"{{"prefix":"{out}"}}"#);
    let auth = [("Authorization", "Bearer index-test-token"), ("Content-Type", "application/json")];
    let purge = common::request(admin_addr, "POST", "/admin/purge", &auth, body.as_bytes()).await;
    assert!(purge.status == 200 || purge.status == 404, "{}", purge.status);
    let r = get(edge, &out, &[]).await;
    assert_eq!((r.status, r.h("x-cache")), (200, "MISS"), "the purge reached the reloaded record");
    assert!(up.count() > fetched);
}

/// At most `upstream_max_connections` requests reach one upstream at once; the others
/// queue and are all served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fills_beyond_an_upstreams_connection_cap_queue_and_are_all_served() {
    let data = pattern(SLICE as usize, 17);
    let up = start_scripted(data.clone()).await;
    up.script.lock().unwrap().pace = Some(Duration::from_millis(5));
    let edge = start_edge(vec![format!("http://{}", up.addr)], |c| {
        c.upstream_max_connections = 2;
        c.reader_timeout_secs = 30;
    })
    .await;
    let clients: Vec<_> =
        (0..6).map(|i| tokio::spawn(async move { get(edge, &format!("/cap/{i}.ogg"), &[]).await })).collect();
    for c in clients {
        let r = c.await.unwrap();
        assert!(r.status == 200 && r.body == data.as_ref());
    }
    assert_eq!(up.count(), 6);
    let peak = up.peak.load(std::sync::atomic::Ordering::SeqCst);
    assert!(peak <= 2, "{peak} requests in flight at the upstream");
}

/// An upstream that accepts connections and never answers costs a fetch only its share
/// of the reader timeout: the next upstream is tried before readers give up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_past_a_hung_upstream_fits_in_the_reader_timeout() {
    let hung = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung_addr = hung.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hung.accept().await {
            held.push(s);
        }
    });
    let data = pattern(100_000, 18);
    let up = start_scripted(data.clone()).await;
    let edge = start_edge(vec![format!("http://{hung_addr}"), format!("http://{}", up.addr)], |c| {
        c.upstream_connect_timeout_secs = 5;
        c.reader_timeout_secs = 4;
    })
    .await;
    let r = get(edge, "/failover.ogg", &[]).await;
    assert_eq!((r.status, r.body.len()), (200, data.len()), "served by the second upstream");
}

/// A reader streaming an object slice by slice has the next slices fetched ahead of it;
/// a reader that stops inside a slice (a probe) or jumps does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_readers_get_the_next_slices_fetched_ahead() {
    let data = pattern(8 * SLICE as usize, 19);
    let up = start_scripted(data.clone()).await;
    let edge = start_edge(vec![format!("http://{}", up.addr)], |c| c.read_ahead_slices = 2).await;
    let probe = get(edge, "/ahead.ogg", &[("Range", "bytes=0-99")]).await;
    assert_eq!(probe.body, &data[..100]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(up.count(), 1, "a probe fetches no more than its slice");
    let first = get(edge, "/ahead.ogg", &[("Range", &format!("bytes=0-{}", SLICE - 1))]).await;
    assert!(first.body == data[..SLICE as usize]);
    for _ in 0..300 {
        if up.count() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(up.count(), 3, "slices 1 and 2 fetched ahead");
    let second = get(edge, "/ahead.ogg", &[("Range", &format!("bytes={}-{}", SLICE, 2 * SLICE - 1))]).await;
    assert!(second.body == data[SLICE as usize..2 * SLICE as usize]);
    assert!(second.h("x-cache").starts_with("HIT") || second.h("x-cache") == "COALESCED", "{}", second.h("x-cache"));

    // The second range continued the first, so slice 3 was fetched ahead of it.
    for _ in 0..300 {
        if up.count() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(up.count(), 4, "slice 3 fetched ahead of the second range");

    // A jump (a range that does not start where this client's last one ended) gets only
    // what it asks for, even with the slice before it cached; the range after it is a
    // sequential read again.
    let jump = get(edge, "/ahead.ogg", &[("Range", &format!("bytes={}-{}", 4 * SLICE, 5 * SLICE - 1))]).await;
    assert!(jump.body == data[4 * SLICE as usize..5 * SLICE as usize]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(up.count(), 5, "a jump fetches its own slice only");
    let next = get(edge, "/ahead.ogg", &[("Range", &format!("bytes={}-", 5 * SLICE))]).await;
    assert!(next.body == data[5 * SLICE as usize..]);
    assert_eq!(up.count(), 8);
}

/// A country-bound signed URL is checked against the country the edge determines: a
/// trusted proxy's header, else the GeoIP database's answer for the client address; a
/// header from anyone else is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn country_bound_tokens_believe_the_header_only_from_trusted_peers() {
    let data = pattern(50_000, 20);
    let up = start_scripted(data.clone()).await;
    let secret = "00112233445566778899aabbccddeeff";
    let key = segue_core::token::Key::from_hex("k1", secret).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("country.mmdb");
    std::fs::write(&db, common::mmdb::country_db(&[("127.0.0.1/32", "SE"), ("10.0.0.0/8", "DE")])).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let path = "/a/geo/high.ogg";
    let signed = |country: &str| {
        let claims = segue_core::token::Claims { exp: now + 60, country: Some(country.into()), ..Default::default() };
        format!("{path}?{}", key.sign("GET", path, &claims))
    };
    let start = |trusted: Vec<String>, geoip: String| {
        start_edge(vec![format!("http://{}", up.addr)], move |c| {
            c.tokens.required = true;
            c.tokens.keys.insert("k1".into(), secret.into());
            c.trusted_proxies = trusted;
            c.geoip_db = geoip;
        })
    };
    // The client itself: its header is ignored, the database places it in Sweden.
    let direct = start(vec![], db.display().to_string()).await;
    assert_eq!(get(direct, &signed("SE"), &[("x-client-country", "US")]).await.status, 200);
    assert_eq!(get(direct, &signed("US"), &[("x-client-country", "US")]).await.status, 403);
    // Behind a trusted proxy: its header decides; without one, the forwarded client's
    // address is looked up (10.1.2.3 is in Germany).
    let behind = start(vec!["127.0.0.0/8".into()], db.display().to_string()).await;
    assert_eq!(get(behind, &signed("US"), &[("x-client-country", "US")]).await.status, 200);
    assert_eq!(get(behind, &signed("DE"), &[("x-forwarded-for", "192.0.2.9, 10.1.2.3")]).await.status, 200);
    assert_eq!(get(behind, &signed("SE"), &[("x-forwarded-for", "10.1.2.3")]).await.status, 403);
    // No database and no trusted proxy: the country is unknown, a bound token refused.
    let blind = start(vec![], String::new()).await;
    assert_eq!(get(blind, &signed("US"), &[("x-client-country", "US")]).await.status, 403);
}

/// Connections from one client address beyond `max_connections_per_ip` are closed as
/// soon as they are accepted; the ones admitted are served, and a slot is free again
/// once one of them closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_per_address_cap_are_refused() {
    let up = start_scripted(pattern(1000, 21)).await;
    let edge = start_edge(vec![format!("http://{}", up.addr)], |c| c.max_connections_per_ip = 2).await;
    async fn ask(s: &mut TcpStream) -> usize {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 512];
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap_or(0)
    }
    let mut a = TcpStream::connect(edge).await.unwrap();
    let mut b = TcpStream::connect(edge).await.unwrap();
    assert!(ask(&mut a).await > 0 && ask(&mut b).await > 0);
    let mut c = TcpStream::connect(edge).await.unwrap();
    let mut buf = [0u8; 64];
    let refused = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await.unwrap();
    assert!(matches!(refused, Ok(0) | Err(_)), "a third connection from one address is closed");
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut d = TcpStream::connect(edge).await.unwrap();
    assert!(ask(&mut d).await > 0, "a closed connection frees its slot");
    assert!(ask(&mut b).await > 0);
}

/// While the SSD tier has room every slice is written to it, not only those asked for
/// `ssd_admit_after` times: a POP restarted between two requests of a slice still has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slice_asked_for_once_survives_a_restart_while_the_ssd_has_room() {
    let data = pattern(2 * SLICE as usize, 22);
    let up = start_scripted(data.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let ssd = dir.path().display().to_string();
    let config = |c: &mut segue_edge::Config| {
        c.ssd_cache_dir = ssd.clone();
        c.ssd_cache_mb = 64;
        c.ssd_admit_after = 2;
        c.read_ahead_slices = 0;
    };
    let (first, state) = common::start_edge_with_state(vec![format!("http://{}", up.addr)], config).await;
    assert!(get(first, "/once.ogg", &[]).await.body == data.as_ref());
    let fetched = up.count();
    state.cache.close().await;
    let (second, _) = common::start_edge_with_state(vec![format!("http://{}", up.addr)], config).await;
    let r = get(second, "/once.ogg", &[]).await;
    assert!(r.status == 200 && r.body == data.as_ref());
    assert_eq!((r.h("x-cache"), up.count()), ("HIT-SSD", fetched), "served from the SSD after the restart");
}

/// The access log line is written when the response ends, with the bytes really sent and
/// whether the client got all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_record_bytes_sent_and_aborted_responses() {
    let data = pattern(4 * SLICE as usize, 23);
    let up = start_scripted(data.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let path = log.display().to_string();
    let edge = start_edge(vec![format!("http://{}", up.addr)], move |c| c.access_log = path).await;
    assert!(get(edge, "/logged.ogg", &[]).await.body == data.as_ref());
    // A client that reads a little of a slowly arriving object and hangs up.
    up.script.lock().unwrap().pace = Some(Duration::from_millis(20));
    let mut s = TcpStream::connect(edge).await.unwrap();
    s.write_all(b"GET /slow.ogg HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let _ = s.read(&mut buf).await.unwrap();
    drop(s);
    let mut lines: Vec<serde_json::Value> = Vec::new();
    for _ in 0..200 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        lines = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        if lines.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!((lines[0]["bytes"].as_u64(), lines[0]["aborted"].as_bool()), (Some(data.len() as u64), Some(false)));
    let cut = lines[1]["bytes"].as_u64().unwrap();
    assert!(lines[1]["aborted"] == true && cut < data.len() as u64, "{}", lines[1]);
}

/// A web player on another origin reads audio by Range: the preflight is answered at the
/// POP (never forwarded), and ranged answers name the origin and expose Content-Range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_players_on_other_origins_read_ranges() {
    let data = pattern(100_000, 21);
    let up = start_scripted(data.clone()).await;
    let edge = start_edge(vec![format!("http://{}", up.addr)], |_| {}).await;
    let pre = request(
        edge,
        "OPTIONS",
        "/a/web/high.ogg",
        &[
            ("Origin", "http://127.0.0.1:7090"),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "range"),
        ],
        b"",
    )
    .await;
    assert_eq!(pre.status, 204);
    assert_eq!(pre.h("access-control-allow-origin"), "*");
    assert!(pre.h("access-control-allow-headers").contains("Range"));
    assert_eq!(up.count(), 0, "a preflight is not forwarded");
    let r = get(edge, "/a/web/high.ogg", &[("Origin", "http://127.0.0.1:7090"), ("Range", "bytes=10-19")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[10..20]);
    assert_eq!(r.h("access-control-allow-origin"), "*");
    assert!(r.h("access-control-expose-headers").contains("Content-Range"));
    // Without an Origin (not a browser's cross-origin read) nothing is added.
    let plain = get(edge, "/a/web/high.ogg", &[("Range", "bytes=10-19")]).await;
    assert_eq!(plain.h("access-control-allow-origin"), "");
}
