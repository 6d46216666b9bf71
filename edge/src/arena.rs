//! Where the memory tier keeps slice bytes: slots in one memfd, mapped read-only.
//!
//! A cached slice is then a `Bytes` view into the mapping, and the plain HTTP/1.1 server
//! hands such views to the kernel with `sendfile` (`segue_core::zerocopy`): the hot-hit
//! path skips the copy of every body byte into the socket, which was most of its CPU
//! (docs/BENCHMARKS.md). TLS, HTTP/2 and HTTP/3 read the same views like any bytes.
//!
//! Bytes go in with `pwritev` (no page faults, one copy, the same copy the cache made
//! before to keep an exactly-sized slice). A slot is freed when the last view of it
//! drops: its pages are punched out first, so a send still holding them by reference
//! keeps the old bytes and the slot's next slice lands in fresh pages. When no slot is
//! free, or for small slices, bytes stay on the heap as before.

#![allow(unsafe_code)]

use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use segue_core::zerocopy::{punch_hole, write_all_at, Mapping};

/// Below this a slice stays on the heap: sending it by reference saves less than the
/// slot and the syscalls cost.
const MIN_BYTES: usize = 16 * 1024;
const PAGE: usize = 4096;

#[derive(Clone, Default)]
pub struct Arena {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    /// Before `fd`: dropped (and unregistered) first, once no view is left.
    mapping: Mapping,
    fd: OwnedFd,
    slot_size: usize,
    free: Mutex<Vec<u32>>,
}

/// One slot's bytes; the last view dropping frees the slot.
struct Slot {
    inner: Arc<Inner>,
    index: u32,
    len: usize,
}

impl Slot {
    /// Where the slot begins in the memfd (and in the mapping).
    fn offset(&self) -> u64 {
        (self.index as usize * self.inner.slot_size) as u64
    }
}

impl AsRef<[u8]> for Slot {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the slot lies inside the mapping; its first `len` bytes were written
        // before the view was made and are never written again while a view exists.
        unsafe { self.inner.mapping.bytes(self.offset() as usize, self.len) }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let inner = &self.inner;
        let punched = punch_hole(&inner.fd, self.offset(), self.len.next_multiple_of(PAGE) as u64);
        // A slot whose pages could not be punched is never reused (a send may hold them).
        if punched.is_ok() {
            inner.free.lock().unwrap_or_else(|p| p.into_inner()).push(self.index);
        } else {
            metrics::counter!("edge_arena_errors_total").increment(1);
        }
    }
}

impl Arena {
    /// An arena of `slots` slots of `slot_size` bytes; off (every slice on the heap) if
    /// the memfd cannot be made or mapped.
    pub fn new(slot_size: usize, slots: usize) -> Self {
        match Inner::new(slot_size, slots) {
            Ok(inner) => Arena { inner: Some(Arc::new(inner)) },
            Err(e) => {
                tracing::warn!(error = %e, "no memory arena; cached bytes are sent by copying");
                Arena::default()
            }
        }
    }

    /// An exactly-sized copy of `parts` joined: in a slot when one is free and it is
    /// worth it, else on the heap. (Even one part is copied: it may be a view into a
    /// larger network buffer that the cache must not keep alive.)
    pub fn copy(&self, parts: &[Bytes]) -> Bytes {
        let len: usize = parts.iter().map(Bytes::len).sum();
        if let Some(b) = self.slot_worthy(len).and_then(|inner| inner.store(parts, len)) {
            return b;
        }
        let mut out = Vec::with_capacity(len);
        for p in parts {
            out.extend_from_slice(p);
        }
        out.into()
    }

    /// `data` in a slot if it is not in one already (and is worth one); else as it is.
    pub fn adopt(&self, data: Bytes) -> Bytes {
        match self.slot_worthy(data.len()) {
            Some(inner) if !inner.holds(&data) => inner.store(std::slice::from_ref(&data), data.len()).unwrap_or(data),
            _ => data,
        }
    }

    /// The arena, if it is on and `len` bytes are worth a slot.
    fn slot_worthy(&self, len: usize) -> Option<&Arc<Inner>> {
        self.inner.as_ref().filter(|i| (MIN_BYTES..=i.slot_size).contains(&len))
    }

    /// Bytes resident in the arena's slots (pages written and not yet punched).
    pub fn resident_bytes(&self) -> u64 {
        self.inner.as_ref().and_then(|i| rustix::fs::fstat(&i.fd).ok()).map_or(0, |st| st.st_blocks as u64 * 512)
    }
}

impl Inner {
    fn new(slot_size: usize, slots: usize) -> std::io::Result<Self> {
        let slot_size = slot_size.next_multiple_of(PAGE);
        let len = slot_size * slots;
        let fd = rustix::fs::memfd_create("segue-edge-slices", rustix::fs::MemfdFlags::CLOEXEC)?;
        rustix::fs::ftruncate(&fd, len as u64)?;
        let mapping = Mapping::new(fd.as_fd(), len, true)?;
        let free = (0..slots as u32).rev().collect();
        Ok(Inner { mapping, fd, slot_size, free: Mutex::new(free) })
    }

    fn holds(&self, data: &[u8]) -> bool {
        self.mapping.contains(data.as_ptr())
    }

    /// A free slot for `len` bytes (owned by the returned guard: dropped unused, it is
    /// freed again), or `None` when every slot is taken.
    fn take(self: &Arc<Self>, len: usize) -> Option<Slot> {
        let Some(index) = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop() else {
            metrics::counter!("edge_arena_full_total").increment(1);
            return None;
        };
        Some(Slot { inner: self.clone(), index, len })
    }

    /// `parts` joined into a slot; `None` when no slot is free or it cannot be written
    /// (out of memory for shmem, say: the heap copy is the fallback).
    fn store(self: &Arc<Self>, parts: &[Bytes], len: usize) -> Option<Bytes> {
        let slot = self.take(len)?;
        let mut iov: Vec<IoSlice<'_>> = parts.iter().filter(|p| !p.is_empty()).map(|p| IoSlice::new(p)).collect();
        self.write_at(&mut iov, slot.offset()).ok()?;
        Some(Bytes::from_owner(slot))
    }

    /// Write all of `iov` to the memfd at `offset`.
    fn write_at(&self, iov: &mut [IoSlice<'_>], offset: u64) -> std::io::Result<()> {
        write_all_at(&self.fd, iov, offset).inspect_err(|e| {
            tracing::debug!(error = %e, "arena write failed");
            metrics::counter!("edge_arena_errors_total").increment(1);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_land_in_slots_and_slots_are_reused_after_the_last_view_drops() {
        let arena = Arena::new(64 << 10, 2);
        let a: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        let b = vec![9u8; 30_000];
        let x = arena.copy(&[Bytes::copy_from_slice(&a[..100]), Bytes::copy_from_slice(&a[100..])]);
        assert_eq!(&x[..], &a[..]);
        assert!(arena.inner.as_ref().unwrap().holds(&x));
        let y = arena.adopt(Bytes::from(b.clone()));
        assert!(arena.inner.as_ref().unwrap().holds(&y));
        // Both slots taken: the third copy stays on the heap, still exact.
        let z = arena.copy(&[Bytes::from(b.clone())]);
        assert!(!arena.inner.as_ref().unwrap().holds(&z));
        assert_eq!(&z[..], &b[..]);
        // A view of x keeps its slot; dropping every view frees it for the next slice.
        let part = x.slice(10..20);
        drop(x);
        assert!(!arena.inner.as_ref().unwrap().holds(&arena.copy(&[Bytes::from(b.clone())])));
        drop(part);
        let w = arena.copy(&[Bytes::from(vec![5u8; 20_000])]);
        assert!(arena.inner.as_ref().unwrap().holds(&w));
        assert!(w.iter().all(|&v| v == 5));
        // Small slices are not worth a slot.
        assert!(!arena.inner.as_ref().unwrap().holds(&arena.copy(&[Bytes::from(vec![1u8; 100])])));
    }

    /// The hazard of sending by reference: the kernel holds the slot's pages until the
    /// peer reads them. A slot freed and reused meanwhile must not change what the peer
    /// gets (its pages are punched out, so the reuse lands in fresh ones).
    #[tokio::test]
    async fn a_slot_reused_while_its_bytes_are_in_flight_does_not_change_them() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let arena = Arena::new(256 << 10, 1);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut server = segue_core::zerocopy::ZeroCopyStream::new(server);

        let first = arena.copy(&[Bytes::from(vec![0xAAu8; 200_000])]);
        assert!(arena.inner.as_ref().unwrap().holds(&first));
        server.write_all(&first).await.unwrap();
        // The peer has read nothing yet. Free the slot and fill it with other bytes.
        drop(first);
        let second = arena.copy(&[Bytes::from(vec![0x55u8; 200_000])]);
        assert!(arena.inner.as_ref().unwrap().holds(&second), "the one slot is reused");
        server.write_all(&second).await.unwrap();
        drop(server);

        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), 400_000);
        assert!(got[..200_000].iter().all(|&b| b == 0xAA), "the first send kept its bytes");
        assert!(got[200_000..].iter().all(|&b| b == 0x55));
    }
}
