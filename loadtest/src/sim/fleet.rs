//! The discrete-event engine: cache nodes (POPs, optionally one shield above them), an
//! origin with a bandwidth cap, and readers moving through their ranges at playback
//! speed. Time is in microseconds from the start of the run.
//!
//! A POP's fill becomes a request at its shield (which may coalesce it, answer it from
//! its cache, or fill it from the origin); the origin serves one transfer after another
//! at its cap (a FIFO queue), so egress never passes the cap and a storm shows up as
//! waiting, the way a saturated link does.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::node::{client, Node, Object, Outcome, Reader, Rules, Want};

/// Link and origin figures.
#[derive(Debug, Clone, Copy)]
pub struct Network {
    /// Round trip POP <-> shield and node <-> origin, µs.
    pub shield_rtt_us: u64,
    pub origin_rtt_us: u64,
    /// One flow's throughput (a fill), bytes per second.
    pub flow_bytes_per_s: f64,
    /// The origin's egress cap, bytes per second.
    pub origin_bytes_per_s: f64,
}

/// How a reader consumes its range: all at once (a fill from a child POP, a pre-warm,
/// a replayed request), or at playback speed a buffer ahead of the listener.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// When the listener plays byte `from` (µs).
    pub at: u64,
    pub from: u64,
    pub bytes_per_s: f64,
    /// Bytes the player keeps buffered ahead of what it plays.
    pub lead: u64,
    /// The listener stops (skips) at this time.
    pub stop_at: u64,
}

/// A request: `client` asks `node` for bytes `first..=last` of `object`.
#[derive(Debug, Clone, Copy)]
pub struct Ask {
    pub node: usize,
    pub client: u64,
    pub object: u32,
    pub first: u64,
    pub last: u64,
    pub pace: Option<Pace>,
    pub class: Class,
    /// For a fill asked of the shield: the request it serves (else this one).
    pub cause: Option<Cause>,
}

/// Which tally a request counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Listener,
    Drop,
    /// A pre-warm job's reads.
    Prewarm,
    /// A POP's fill asked of the shield.
    Internal,
}

/// Which POP's request, of which class, led to a fill (through the shield too).
#[derive(Debug, Clone, Copy)]
pub struct Cause {
    pub node: usize,
    pub class: Class,
}

struct Active {
    node: usize,
    reader: Reader,
    pace: Option<Pace>,
    class: Class,
    cause: Cause,
    arrived: u64,
    first_done: bool,
}

enum Event {
    Fill { node: usize, want: Want },
    Read(usize),
}

struct Timed {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Timed {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timed {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// Per-interval tallies for the plots.
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub bucket_us: u64,
    pub origin_bytes: Vec<u64>,
    pub origin_requests: Vec<u64>,
    /// Of which for the dropped album.
    pub origin_drop_bytes: Vec<u64>,
    pub origin_drop_requests: Vec<u64>,
}

impl Series {
    fn add(&mut self, at: u64, bytes: u64, drop: bool) {
        let i = (at / self.bucket_us) as usize;
        for v in [
            &mut self.origin_bytes,
            &mut self.origin_requests,
            &mut self.origin_drop_bytes,
            &mut self.origin_drop_requests,
        ] {
            if v.len() <= i {
                v.resize(i + 1, 0);
            }
        }
        self.origin_bytes[i] += bytes;
        self.origin_requests[i] += 1;
        if drop {
            self.origin_drop_bytes[i] += bytes;
            self.origin_drop_requests[i] += 1;
        }
    }
}

pub struct Fleet {
    pub objects: Vec<Object>,
    pub nodes: Vec<Node>,
    pub shield: Option<usize>,
    pub net: Network,
    pub rules: Rules,
    /// Objects with an id below this are the dropped album's.
    pub drop_until: u32,
    /// Real bytes per simulated byte of everything else (1 / the catalog sample).
    pub background_scale: f64,
    /// Slice reads of the dropped album by its listeners.
    pub drop_reads: u64,
    /// Origin fetches of the album for listeners (not pre-warm): when, and for which POP.
    pub album_fetches: Vec<(u64, usize)>,
    origin_free_at: u64,
    pub origin_requests: u64,
    pub origin_bytes: u64,
    pub series: Series,
    /// (arrival µs, time to first byte µs, class) of every listener request.
    pub ttfb: Vec<(u64, u64, Class)>,
    heap: BinaryHeap<Reverse<Timed>>,
    seq: u64,
    readers: Vec<Option<Active>>,
    free: Vec<usize>,
    pub now: u64,
    /// Slice reads of one node, for `libcachesim`: (µs, slice id, bytes).
    pub trace: Option<(usize, super::SliceTrace)>,
}

impl Fleet {
    pub fn new(nodes: Vec<Node>, shield: Option<usize>, net: Network, rules: Rules, bucket_us: u64) -> Self {
        Fleet {
            objects: Vec::new(),
            nodes,
            shield,
            net,
            rules,
            drop_until: 0,
            background_scale: 1.0,
            drop_reads: 0,
            album_fetches: Vec::new(),
            origin_free_at: 0,
            origin_requests: 0,
            origin_bytes: 0,
            series: Series { bucket_us, ..Default::default() },
            ttfb: Vec::new(),
            heap: BinaryHeap::new(),
            seq: 0,
            readers: Vec::new(),
            free: Vec::new(),
            now: 0,
            trace: None,
        }
    }

    /// The origin's egress for everything but the album over the last full interval,
    /// real bytes per second.
    fn background_rate(&self) -> f64 {
        let s = &self.series;
        let i = (self.now / s.bucket_us) as usize;
        let Some(prev) = i.checked_sub(1) else { return 0.0 };
        let bytes =
            s.origin_bytes.get(prev).copied().unwrap_or(0) - s.origin_drop_bytes.get(prev).copied().unwrap_or(0);
        bytes as f64 * self.background_scale / (s.bucket_us as f64 / 1e6)
    }

    fn push(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.heap.push(Reverse(Timed { at, seq: self.seq, event }));
    }

    /// When the next event is due.
    pub fn next_at(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse(t)| t.at)
    }

    /// Run every event due before `until`.
    pub async fn run_until(&mut self, until: u64) {
        while let Some(at) = self.next_at().filter(|&a| a < until) {
            let Some(Reverse(t)) = self.heap.pop() else { break };
            self.now = at.max(self.now);
            match t.event {
                Event::Fill { node, want } => self.nodes[node].fill_done(&self.objects, want),
                Event::Read(id) => self.step(id).await,
            }
        }
        self.now = self.now.max(until);
    }

    /// A request arrives now; its reader starts at once (or once the object is known).
    /// Returns what the edge would label it.
    pub async fn request(&mut self, ask: Ask) -> Outcome {
        let Ask { node, client: client_id, object, first, last, pace, class, cause } = ask;
        let cause = cause.unwrap_or(Cause { node, class });
        let mut wants = Vec::new();
        let (outcome, waits, reader) =
            self.nodes[node].request(&self.objects, client(client_id), object, first, last, &mut wants).await;
        self.start_fills(node, wants, cause).await;
        let discovered = if waits { self.nodes[node].discovered_at(object) } else { None };
        let active = Active { node, reader, pace, class, cause, arrived: self.now, first_done: false };
        let id = match self.free.pop() {
            Some(id) => {
                self.readers[id] = Some(active);
                id
            }
            None => {
                self.readers.push(Some(active));
                self.readers.len() - 1
            }
        };
        match discovered {
            Some(at) if at > self.now => self.push(at, Event::Read(id)),
            _ => self.step(id).await,
        }
        outcome
    }

    /// A HEAD request arrives at `node` now: it learns the object, reads nothing.
    pub async fn head(&mut self, node: usize, object: u32) -> Outcome {
        let mut wants = Vec::new();
        let outcome = self.nodes[node].head(&self.objects, object, &mut wants).await;
        self.start_fills(node, wants, Cause { node, class: Class::Listener }).await;
        outcome
    }

    /// The reader reads its next slice (all of them when it has no pace), then waits for
    /// that slice and for its listener to want the next.
    async fn step(&mut self, id: usize) {
        loop {
            let Some(mut a) = self.readers[id].take() else { return };
            let mut wants = Vec::new();
            let read = self.nodes[a.node].read(&self.objects, &mut a.reader, &mut wants).await;
            self.start_fills(a.node, wants, a.cause).await;
            if a.class == Class::Drop && read.is_some() {
                self.drop_reads += 1;
            }
            let Some(wait) = read else {
                self.free.push(id);
                return;
            };
            let index = (a.reader.pos.saturating_sub(1)) / self.rules.slice;
            if let Some((node, lines)) = self.trace.as_mut().filter(|t| t.0 == a.node) {
                let _ = node;
                let size = self.rules.slice;
                let len = self.objects[a.reader.object as usize].len;
                let id = u64::from(a.reader.object) << 24 | index;
                lines.push((self.now, id, (index * size + size).min(len) - index * size));
            }
            let ready = match wait {
                None => self.now,
                Some(_) => self.nodes[a.node].fill_done_at(a.reader.object, index).unwrap_or(self.now),
            };
            if !a.first_done {
                a.first_done = true;
                if matches!(a.class, Class::Listener | Class::Drop) {
                    self.ttfb.push((a.arrived, ready.saturating_sub(a.arrived), a.class));
                }
            }
            match a.pace {
                // A reader takes a slice it waits for from the fill as it arrives and
                // moves on once it is in (the fill stores it just before).
                None if ready > self.now => {
                    self.readers[id] = Some(a);
                    self.push(ready, Event::Read(id));
                    return;
                }
                None => {
                    self.readers[id] = Some(a);
                    continue;
                }
                Some(p) => {
                    // The player asks for the next bytes when its buffer is below `lead`.
                    let wanted =
                        p.at + ((a.reader.pos.saturating_sub(p.from + p.lead)) as f64 / p.bytes_per_s * 1e6) as u64;
                    let at = wanted.max(ready);
                    if at >= p.stop_at || a.reader.pos >= a.reader.end {
                        self.free.push(id);
                        return;
                    }
                    self.readers[id] = Some(a);
                    self.push(at, Event::Read(id));
                    return;
                }
            }
        }
    }

    /// Schedule the fills a node asked for: from the shield (a request there, read at
    /// once) or from the origin.
    async fn start_fills(&mut self, node: usize, wants: Vec<Want>, cause: Cause) {
        for want in wants {
            let o = &self.objects[want.object as usize];
            let size = self.rules.slice;
            let first = want.index * size;
            let last = (first + size).min(o.len) - 1;
            let bytes = last - first + 1;
            let transfer = (bytes as f64 / self.net.flow_bytes_per_s * 1e6) as u64;
            let done = match self.shield.filter(|&s| s != node) {
                Some(shield) => {
                    let id = 1 << 31 | node as u64;
                    let ask = Ask {
                        node: shield,
                        client: id,
                        object: want.object,
                        first,
                        last,
                        pace: None,
                        class: Class::Internal,
                        cause: Some(cause),
                    };
                    Box::pin(self.request(ask)).await;
                    let ready = self.nodes[shield].fill_done_at(want.object, want.index).unwrap_or(self.now);
                    ready.max(self.now) + self.net.shield_rtt_us + transfer
                }
                None => {
                    let drop = want.object < self.drop_until;
                    self.origin_requests += 1;
                    self.origin_bytes += bytes;
                    self.series.add(self.now, bytes, drop);
                    if drop && cause.class != Class::Prewarm {
                        self.album_fetches.push((self.now, cause.node));
                    }
                    if drop {
                        // The album's fills queue for what the rest of the load leaves
                        // of the cap (never less than a twentieth of it).
                        let cap = self.net.origin_bytes_per_s;
                        let avail = (cap - self.background_rate()).max(cap / 20.0);
                        let start = self.now.max(self.origin_free_at);
                        self.origin_free_at = start + (bytes as f64 / avail * 1e6) as u64;
                        self.origin_free_at.max(start + transfer) + self.net.origin_rtt_us
                    } else {
                        // Sampled load is a share of the real one: it is accounted as
                        // demand (and reported against the cap), not queued.
                        self.now + transfer + self.net.origin_rtt_us
                    }
                }
            };
            self.nodes[node].scheduled(want, done);
            self.nodes[node].count_fill_bytes(want.object, bytes);
            self.push(done, Event::Fill { node, want });
        }
    }
}
