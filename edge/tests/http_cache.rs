//! The edge as an HTTP cache (RFC 9111, RFC 9213, RFC 5861), one directive family per
//! test, through a real edge in front of a loopback origin whose answers each test
//! scripts (and whose received requests it inspects).

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use segue_core::server::Body;
use tokio::net::TcpListener;

/// What the origin answers: status, header fields, body.
type Answer = (u16, Vec<(&'static str, String)>, &'static str);
type Script = Arc<dyn Fn(&http::Method, &str, &HeaderMap) -> Answer + Send + Sync>;

struct Origin {
    addr: SocketAddr,
    /// Every request seen: method, path and query, header fields.
    seen: Arc<Mutex<Vec<(String, String, HeaderMap)>>>,
    script: Arc<Mutex<Script>>,
    /// Milliseconds every answer waits before its head is sent.
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
    /// Send bodies in 16 KiB chunks without Content-Length.
    chunked: Arc<std::sync::atomic::AtomicBool>,
}

impl Origin {
    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
    fn last_header(&self, name: &str) -> Option<String> {
        let seen = self.seen.lock().unwrap();
        seen.last().and_then(|(_, _, h)| h.get(name)).map(|v| v.to_str().unwrap().to_owned())
    }
    fn answer(&self, f: impl Fn(&http::Method, &str, &HeaderMap) -> Answer + Send + Sync + 'static) {
        *self.script.lock().unwrap() = Arc::new(f);
    }
}

async fn origin(f: impl Fn(&http::Method, &str, &HeaderMap) -> Answer + Send + Sync + 'static) -> Origin {
    let seen: Arc<Mutex<Vec<(String, String, HeaderMap)>>> = Arc::default();
    let script: Arc<Mutex<Script>> = Arc::new(Mutex::new(Arc::new(f)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let delay_ms: Arc<std::sync::atomic::AtomicU64> = Arc::default();
    let chunked: Arc<std::sync::atomic::AtomicBool> = Arc::default();
    let (s2, sc2, d2, c2) = (seen.clone(), script.clone(), delay_ms.clone(), chunked.clone());
    tokio::spawn(segue_core::server::serve(
        listener,
        Default::default(),
        move |req, _| {
            let (seen, script, delay, chunked) = (s2.clone(), sc2.clone(), d2.clone(), c2.clone());
            async move {
                let ms = delay.load(std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                let target = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
                seen.lock().unwrap().push((req.method().to_string(), target.clone(), req.headers().clone()));
                let f = script.lock().unwrap().clone();
                let (status, headers, body) = f(req.method(), &target, req.headers());
                let body = Bytes::from_static(body.as_bytes());
                let body: Body = if chunked.load(std::sync::atomic::Ordering::Relaxed) {
                    let parts: Vec<Result<hyper::body::Frame<Bytes>, segue_core::server::BoxError>> = (0..body.len())
                        .step_by(16 * 1024)
                        .map(|i| Ok(hyper::body::Frame::data(body.slice(i..(i + 16 * 1024).min(body.len())))))
                        .collect();
                    http_body_util::BodyExt::boxed_unsync(http_body_util::StreamBody::new(futures_util::stream::iter(
                        parts,
                    )))
                } else {
                    segue_core::server::full(body)
                };
                let mut r = Response::new(body);
                *r.status_mut() = StatusCode::from_u16(status).unwrap();
                for (k, v) in headers {
                    r.headers_mut().append(k, v.parse().unwrap());
                }
                r
            }
        },
        std::future::pending(),
    ));
    Origin { addr, seen, script, delay_ms, chunked }
}

/// An edge with the shipped path rules (general paths cached whole) in front of `o`.
async fn edge(o: &Origin, tweak: impl FnOnce(&mut segue_edge::Config)) -> SocketAddr {
    let upstreams = vec![format!("http://{}", o.addr)];
    common::start_edge(upstreams, |c| {
        c.paths = segue_edge::policy::defaults();
        tweak(c)
    })
    .await
}

async fn get(edge: SocketAddr, path: &str, headers: &[(&str, &str)]) -> common::Resp {
    common::get(edge, path, headers).await
}

fn h(list: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    list.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

#[tokio::test]
async fn max_age_serves_from_cache_and_stale_copies_revalidate_with_the_stored_etag() {
    let o =
        origin(|_, _, _| (200, h(&[("cache-control", "max-age=3600"), ("etag", "W/\"v1\""), ("x-a", "1")]), "hello"))
            .await;
    let e = edge(&o, |_| {}).await;
    let miss = get(e, "/doc", &[]).await;
    assert_eq!((miss.status, miss.h("x-cache"), &miss.body[..]), (200, "MISS", &b"hello"[..]));
    let hit = get(e, "/doc", &[]).await;
    assert_eq!((hit.status, hit.h("x-cache"), hit.h("etag"), hit.h("x-a")), (200, "HIT-MEM", "W/\"v1\"", "1"));
    assert!(hit.headers.contains_key("age"));
    assert_eq!(o.count(), 1);
    // A client's conditional is answered from the stored weak tag.
    assert_eq!(get(e, "/doc", &[("if-none-match", "W/\"v1\"")]).await.status, 304);
    assert_eq!(o.count(), 1);

    // max-age=0: every use revalidates, with the tag exactly as stored; a 304 updates the
    // stored fields and the body stays.
    let o = origin(|_, _, req| match req.get("if-none-match") {
        Some(t) if t == "W/\"v1\"" => {
            (304, h(&[("cache-control", "max-age=0"), ("etag", "W/\"v1\""), ("x-a", "2")]), "")
        }
        _ => (200, h(&[("cache-control", "max-age=0"), ("etag", "W/\"v1\""), ("x-a", "1")]), "hello"),
    })
    .await;
    let e = edge(&o, |_| {}).await;
    assert_eq!(get(e, "/doc", &[]).await.h("x-a"), "1");
    let again = get(e, "/doc", &[]).await;
    assert_eq!((again.h("x-cache"), again.h("x-a"), &again.body[..]), ("REVALIDATED", "2", &b"hello"[..]));
    assert_eq!(o.last_header("if-none-match").as_deref(), Some("W/\"v1\""));
    assert_eq!(o.count(), 2);
    // No validator is invented for a response that had none.
    let bare = origin(|_, _, _| (200, h(&[("cache-control", "max-age=0")]), "bare")).await;
    let e = edge(&bare, |_| {}).await;
    let first = get(e, "/b", &[]).await;
    assert!(!first.headers.contains_key("etag") && !first.headers.contains_key("last-modified"));
    get(e, "/b", &[]).await;
    assert_eq!((bare.last_header("if-none-match"), bare.last_header("if-modified-since")), (None, None));
}

#[tokio::test]
async fn no_store_private_and_credentials_are_not_reused() {
    let o = origin(|_, path, _| match path {
        "/no-store" => (200, h(&[("cache-control", "max-age=3600, no-store")]), "x"),
        "/private" => (200, h(&[("cache-control", "max-age=3600, private")]), "x"),
        "/public" => (200, h(&[("cache-control", "max-age=3600, public")]), "x"),
        _ => (200, h(&[("cache-control", "max-age=3600")]), "x"),
    })
    .await;
    let e = edge(&o, |_| {}).await;
    for path in ["/no-store", "/private"] {
        get(e, path, &[]).await;
        let r = get(e, path, &[]).await;
        assert_eq!(r.h("x-cache"), "PASS", "{path}");
    }
    assert_eq!(o.count(), 4);
    // A response to a request with Authorization is reused only when it says `public`.
    get(e, "/auth", &[("authorization", "Bearer a")]).await;
    get(e, "/auth", &[("authorization", "Bearer a")]).await;
    assert_eq!(o.count(), 6);
    get(e, "/public", &[("authorization", "Bearer a")]).await;
    assert_eq!(get(e, "/public", &[("authorization", "Bearer a")]).await.h("x-cache"), "HIT-MEM");
    assert_eq!(o.count(), 7);
}

#[tokio::test]
async fn vary_keeps_one_response_per_variant_and_never_stores_vary_star() {
    let o = origin(|_, path, req| {
        let lang = req.get("accept-language").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let body: &'static str = if lang.starts_with("fr") { "bonjour" } else { "hello" };
        let vary = if path == "/star" { "*" } else { "Accept-Language" };
        (200, vec![("cache-control", "max-age=3600".into()), ("vary", vary.into())], body)
    })
    .await;
    let e = edge(&o, |_| {}).await;
    assert_eq!(&get(e, "/v", &[("accept-language", "en")]).await.body[..], b"hello");
    assert_eq!(&get(e, "/v", &[("accept-language", "fr")]).await.body[..], b"bonjour");
    let en = get(e, "/v", &[("accept-language", "en")]).await;
    let fr = get(e, "/v", &[("accept-language", "fr")]).await;
    assert_eq!(
        (en.h("x-cache"), &en.body[..], fr.h("x-cache"), &fr.body[..]),
        ("HIT-MEM", &b"hello"[..], "HIT-MEM", &b"bonjour"[..])
    );
    assert_eq!(get(e, "/v", &[]).await.h("x-cache"), "MISS");
    assert_eq!(o.count(), 3);
    get(e, "/star", &[]).await;
    assert_eq!(get(e, "/star", &[]).await.h("x-cache"), "PASS");
}

#[tokio::test]
async fn targeted_cache_control_wins_in_precedence_and_can_be_kept_from_clients() {
    let o = origin(|_, path, _| match path {
        "/cdn" => (200, h(&[("cache-control", "no-store"), ("cdn-cache-control", "max-age=3600")]), "c"),
        "/segue" => (200, h(&[("segue-cache-control", "no-store"), ("cdn-cache-control", "max-age=3600")]), "s"),
        _ => (200, h(&[("cache-control", "max-age=3600"), ("cdn-cache-control", "max-age=\"bad\", &&")]), "i"),
    })
    .await;
    let e = edge(&o, |c| c.strip_targeted = vec!["segue-cache-control".into()]).await;
    get(e, "/cdn", &[]).await;
    let cdn = get(e, "/cdn", &[]).await;
    assert_eq!((cdn.h("x-cache"), cdn.h("cdn-cache-control")), ("HIT-MEM", "max-age=3600"));
    let segue = get(e, "/segue", &[]).await;
    assert!(!segue.headers.contains_key("segue-cache-control"), "stripped before the client");
    assert_eq!(get(e, "/segue", &[]).await.h("x-cache"), "PASS");
    // An invalid targeted field is ignored: Cache-Control applies.
    get(e, "/invalid", &[]).await;
    assert_eq!(get(e, "/invalid", &[]).await.h("x-cache"), "HIT-MEM");
}

#[tokio::test]
async fn upstream_statuses_pass_through_and_are_cached_only_as_allowed() {
    let o = origin(|_, path, _| match path {
        "/moved" => (301, h(&[("location", "/new"), ("cache-control", "max-age=3600")]), "moved"),
        "/gone" => (404, h(&[("cache-control", "max-age=60"), ("content-type", "text/html")]), "<h1>no</h1>"),
        "/busy" => (503, h(&[("retry-after", "7")]), "busy"),
        _ => (302, h(&[("location", "/elsewhere")]), ""),
    })
    .await;
    let e = edge(&o, |_| {}).await;
    for _ in 0..2 {
        let r = get(e, "/moved", &[]).await;
        assert_eq!((r.status, r.h("location"), &r.body[..]), (301, "/new", &b"moved"[..]));
        let r = get(e, "/gone", &[]).await;
        assert_eq!((r.status, r.h("content-type"), &r.body[..]), (404, "text/html", &b"<h1>no</h1>"[..]));
    }
    assert_eq!(o.count(), 2, "the 301 and the 404 were stored with their freshness");
    let r = get(e, "/busy", &[]).await;
    assert_eq!((r.status, r.h("retry-after"), &r.body[..]), (503, "7", &b"busy"[..]));
    let r = get(e, "/found", &[]).await;
    assert_eq!((r.status, r.h("location")), (302, "/elsewhere"));
    get(e, "/found", &[]).await;
    assert_eq!(o.count(), 5, "a 302 without freshness is not reused");
}

#[tokio::test]
async fn unsafe_methods_invalidate_and_are_refused_unless_the_path_allows_them() {
    let o = origin(|m, _, _| match *m {
        http::Method::POST => (201, h(&[("location", "/list?page=1")]), "made"),
        _ => (200, h(&[("cache-control", "max-age=3600")]), "list"),
    })
    .await;
    // Shipped defaults: GET and HEAD only, nothing reaches the origin.
    let closed = edge(&o, |_| {}).await;
    let r = common::request(closed, "POST", "/v1/masters", &[], b"master").await;
    assert_eq!((r.status, r.h("allow")), (405, "GET, HEAD"));
    assert_eq!(o.count(), 0);

    let open = edge(&o, |c| {
        c.paths.push(segue_edge::policy::PathPolicy {
            methods: vec!["*".into()],
            ..segue_edge::policy::PathPolicy::new("/", false, false)
        })
    })
    .await;
    get(open, "/list", &[]).await;
    get(open, "/list?page=1", &[]).await;
    assert_eq!(get(open, "/list", &[]).await.h("x-cache"), "HIT-MEM");
    let r = common::request(open, "POST", "/list", &[("x-client-country", "SE")], b"item").await;
    assert_eq!(r.status, 201);
    assert_eq!(o.count(), 3);
    // A country header from a client that is not a trusted proxy goes no further.
    assert_eq!(o.last_header("x-client-country"), None);
    // The target and the same-origin Location are invalidated: both revalidate.
    assert_ne!(get(open, "/list", &[]).await.h("x-cache"), "HIT-MEM");
    assert_ne!(get(open, "/list?page=1", &[]).await.h("x-cache"), "HIT-MEM");
    assert_eq!(o.count(), 5);
}

#[tokio::test]
async fn a_failing_origin_gets_the_stale_copy_unless_the_response_forbids_it() {
    let o = origin(|_, path, _| match path {
        "/strict" => (200, h(&[("cache-control", "max-age=0, must-revalidate"), ("etag", "\"s\"")]), "strict"),
        _ => (200, h(&[("cache-control", "max-age=0"), ("etag", "\"l\"")]), "lenient"),
    })
    .await;
    let e = edge(&o, |_| {}).await;
    get(e, "/lenient", &[]).await;
    get(e, "/strict", &[]).await;
    o.answer(|_, _, _| (500, h(&[]), "down"));
    let r = get(e, "/lenient", &[]).await;
    assert_eq!((r.status, r.h("x-cache"), &r.body[..]), (200, "STALE", &b"lenient"[..]));
    let r = get(e, "/strict", &[]).await;
    assert_eq!((r.status, &r.body[..]), (500, &b"down"[..]));
}

#[tokio::test]
async fn parts_are_stored_served_in_sub_ranges_and_completed_with_the_missing_bytes() {
    const WHOLE: &str = "0123456789";
    let o = origin(|_, _, req| {
        let range = req.get("range").map(|v| v.to_str().unwrap().to_owned());
        let (a, b) = match range.as_deref() {
            Some("bytes=0-4") => (0, 4),
            Some("bytes=5-") => (5, 9),
            _ => return (200, h(&[("cache-control", "max-age=3600"), ("etag", "\"p\"")]), WHOLE),
        };
        let cr = format!("bytes {a}-{b}/10");
        (
            206,
            vec![("cache-control", "max-age=3600".into()), ("etag", "\"p\"".into()), ("content-range", cr)],
            &WHOLE[a..=b],
        )
    })
    .await;
    let e = edge(&o, |_| {}).await;
    let first = get(e, "/p", &[("range", "bytes=0-4")]).await;
    assert_eq!((first.status, &first.body[..]), (206, &b"01234"[..]));
    let sub = get(e, "/p", &[("range", "bytes=2-3")]).await;
    assert_eq!((sub.status, sub.h("content-range"), &sub.body[..]), (206, "bytes 2-3/10", &b"23"[..]));
    assert_eq!(o.count(), 1);
    // The whole object: only the missing bytes are fetched, checked against the tag.
    let whole = get(e, "/p", &[]).await;
    assert_eq!((whole.status, &whole.body[..]), (200, WHOLE.as_bytes()));
    assert_eq!(o.last_header("range").as_deref(), Some("bytes=5-"));
    assert_eq!(o.last_header("if-range").as_deref(), Some("\"p\""));
    assert_eq!(&get(e, "/p", &[]).await.body[..], WHOLE.as_bytes());
    assert_eq!(o.count(), 2);
}

#[tokio::test]
async fn concurrent_misses_of_one_url_make_one_upstream_request() {
    let o = origin(|_, path, _| match path {
        "/nostore" => (200, h(&[("cache-control", "no-store")]), "each"),
        _ => (200, h(&[("cache-control", "max-age=3600")]), "manifest"),
    })
    .await;
    o.delay_ms.store(300, std::sync::atomic::Ordering::Relaxed);
    let e = edge(&o, |_| {}).await;
    let clients: Vec<_> = (0..20).map(|_| tokio::spawn(async move { get(e, "/m/x.json", &[]).await })).collect();
    let mut coalesced = 0;
    for c in clients {
        let r = c.await.unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"manifest"[..]));
        coalesced += (r.h("x-cache") == "COALESCED") as usize;
    }
    assert_eq!(o.count(), 1, "one upstream request for 20 concurrent misses");
    assert!(coalesced >= 15, "{coalesced} of 20 waited for the first");
    // An answer that may not be stored releases the waiters to ask for themselves.
    let clients: Vec<_> = (0..5).map(|_| tokio::spawn(async move { get(e, "/nostore", &[]).await })).collect();
    for c in clients {
        assert_eq!(&c.await.unwrap().body[..], b"each");
    }
    assert_eq!(o.count(), 6);
}

#[tokio::test]
async fn sliced_paths_obey_no_store_and_cache_negative_answers() {
    let o = origin(|_, path, _| match path {
        "/a/secret/high.ogg" => (200, h(&[("cache-control", "no-store"), ("etag", "\"s\"")]), "secret audio"),
        "/a/gone/high.ogg" => {
            (404, h(&[("cache-control", "max-age=60"), ("content-type", "text/plain")]), "no such track")
        }
        _ => (200, h(&[("cache-control", "max-age=3600"), ("etag", "\"k\"")]), "kept audio"),
    })
    .await;
    let e = edge(&o, |_| {}).await;
    for _ in 0..2 {
        let r = get(e, "/a/secret/high.ogg", &[]).await;
        assert_eq!((r.status, &r.body[..]), (200, &b"secret audio"[..]));
        assert_ne!(r.h("x-cache"), "HIT-MEM");
    }
    assert_eq!(o.count(), 2, "a no-store answer is fetched for each request");
    for _ in 0..2 {
        let r = get(e, "/a/gone/high.ogg", &[]).await;
        assert_eq!((r.status, r.h("content-type"), &r.body[..]), (404, "text/plain", &b"no such track"[..]));
    }
    assert_eq!(o.count(), 3, "the 404 with freshness was stored once");
    get(e, "/a/kept/high.ogg", &[]).await;
    assert_eq!(get(e, "/a/kept/high.ogg", &[]).await.h("x-cache"), "HIT-MEM");
    assert_eq!(o.count(), 4);
}

#[tokio::test]
async fn a_sliced_object_is_renewed_by_a_304_without_refetching_its_slices() {
    // Three slices of audio; the origin ignores Range (the edge keeps its slice of each
    // answer) and answers its validator with a 304.
    let audio: &'static str =
        Box::leak((0..600_000).map(|i| (b'a' + (i % 26) as u8) as char).collect::<String>().into_boxed_str());
    let o = origin(move |_, _, req| match req.get("if-none-match") {
        Some(t) if t == "\"v1\"" => (304, h(&[("cache-control", "max-age=0"), ("etag", "\"v1\""), ("x-rev", "2")]), ""),
        _ => (200, h(&[("cache-control", "max-age=0"), ("etag", "\"v1\""), ("x-rev", "1")]), audio),
    })
    .await;
    let e = edge(&o, |_| {}).await;
    let first = get(e, "/a/t/high.ogg", &[]).await;
    assert_eq!((first.status, first.body.len(), first.h("x-rev")), (200, 600_000, "1"));
    // Each answer is the whole body: slices it passes are stored on the way, so at most
    // one fetch per slice (how many depends on how fast the reader catches up).
    let fetched = o.count();
    assert!((1..=3).contains(&fetched), "{fetched} fetches");
    let again = get(e, "/a/t/high.ogg", &[]).await;
    assert_eq!((again.h("x-cache"), again.h("x-rev")), ("REVALIDATED", "2"));
    assert!(again.body == audio.as_bytes());
    assert_eq!(o.count(), fetched + 1, "one conditional request; no slice fetched again");
    assert_eq!(o.last_header("if-none-match").as_deref(), Some("\"v1\""));
}

#[tokio::test]
async fn an_upstream_ignoring_range_is_read_once_and_an_unknown_length_is_never_recorded_as_empty() {
    // The origin ignores Range: every answer is the whole 600 kB (three slices) as a 200.
    let audio: &'static str =
        Box::leak((0..600_000).map(|i| (b'a' + (i % 23) as u8) as char).collect::<String>().into_boxed_str());
    let o = origin(move |_, _, _| (200, h(&[("cache-control", "max-age=3600"), ("etag", "\"w\"")]), audio)).await;
    let upstreams = vec![format!("http://{}", o.addr)];
    let (e, state) = common::start_edge_with_state(upstreams, |c| c.paths = segue_edge::policy::defaults()).await;
    let settle = || async {
        for _ in 0..500 {
            if state.coalescer.is_empty() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    // With Content-Length: the first slice's fill stores every slice it passes.
    let part = get(e, "/a/whole/high.ogg", &[("range", "bytes=0-99")]).await;
    assert_eq!((part.status, &part.body[..]), (206, &audio.as_bytes()[..100]));
    settle().await;
    let all = get(e, "/a/whole/high.ogg", &[]).await;
    assert!(all.status == 200 && all.body == audio.as_bytes());
    assert_eq!(o.count(), 1, "one download of the whole body, not one per slice");

    // Without Content-Length: the length is learned from the body, never recorded as 0.
    o.chunked.store(true, std::sync::atomic::Ordering::Relaxed);
    let first = get(e, "/a/chunked/high.ogg", &[]).await;
    assert_eq!((first.status, first.body.len()), (200, 600_000));
    assert!(first.body == audio.as_bytes());
    settle().await;
    let again = get(e, "/a/chunked/high.ogg", &[("range", "bytes=599990-")]).await;
    assert_eq!((again.status, again.h("x-cache"), &again.body[..]), (206, "HIT-MEM", &audio.as_bytes()[599_990..]));
    assert_eq!(o.count(), 2);
}

#[tokio::test]
async fn a_stale_copy_the_upstream_now_calls_gone_is_dropped_not_kept_for_errors() {
    for path in ["/a/g/high.ogg", "/m/g.json"] {
        let o = origin(|_, _, _| (200, h(&[("cache-control", "max-age=0"), ("etag", "\"g\"")]), "was here")).await;
        let e = edge(&o, |_| {}).await;
        assert_eq!(get(e, path, &[]).await.status, 200);
        o.answer(|_, _, _| (404, h(&[("cache-control", "private")]), "gone"));
        let r = get(e, path, &[]).await;
        assert_eq!((r.status, &r.body[..]), (404, &b"gone"[..]), "{path}");
        // The origin fails now: the dropped copy does not come back as a stale answer.
        o.answer(|_, _, _| (500, h(&[]), "down"));
        let r = get(e, path, &[]).await;
        assert_eq!((r.status, &r.body[..]), (500, &b"down"[..]), "{path}");
    }
}

#[tokio::test]
async fn a_missing_content_object_is_remembered_for_the_negative_ttl() {
    // A bare 404 (no freshness of its own), as an origin answers for an unknown object.
    let o = origin(|_, _, _| (404, h(&[("content-type", "application/json")]), "{\"error\":\"not_found\"}")).await;
    let e = edge(&o, |_| {}).await;
    for _ in 0..3 {
        assert_eq!(get(e, "/a/missing/high.ogg", &[]).await.status, 404);
    }
    assert_eq!(o.count(), 1, "content paths remember a 404 for negative_ttl_secs");
    // Paths without a negative TTL keep RFC 9111's rule: no freshness, not reused.
    for _ in 0..2 {
        assert_eq!(get(e, "/m/missing.json", &[]).await.status, 404);
    }
    assert_eq!(o.count(), 3);
}
