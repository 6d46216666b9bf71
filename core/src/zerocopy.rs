//! Zero-copy sends of cached bytes on plain HTTP/1.1.
//!
//! A cache that keeps its bytes in a memory-mapped file (the edge's slice arena, a memfd)
//! registers the mapping here. A response body chunk is an ordinary `Bytes` view into that
//! mapping, so every layer above the socket (hyper, TLS, HTTP/2) handles it like any other
//! bytes; only [`ZeroCopyStream`], the plain-TCP connection under hyper, looks at where a
//! buffer it is asked to write lives, and hands bytes of a registered mapping to the
//! kernel with `sendfile` from the backing file instead of copying them into the socket.
//!
//! The kernel then sends the file's pages by reference, so they must not change while a
//! send may still hold them: the owner of a mapping never writes over bytes it may have
//! sent. The arena frees a slot by punching a hole (the pages in flight stay with the
//! socket) and writes a reused slot into fresh pages.

#![allow(unsafe_code)]

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// How many mappings may be registered at once (an edge registers one).
const MAX_REGIONS: usize = 32;

struct Slot {
    base: AtomicUsize,
    /// 0 while the slot is free.
    len: AtomicUsize,
    fd: AtomicI32,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot { base: AtomicUsize::new(0), len: AtomicUsize::new(0), fd: AtomicI32::new(-1) };
static REGIONS: [Slot; MAX_REGIONS] = [EMPTY; MAX_REGIONS];
/// One past the highest slot ever registered: every write of every connection looks
/// its buffers up, and most processes register nothing.
static USED: AtomicUsize = AtomicUsize::new(0);
static CLAIM: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A registered mapping; dropping it unregisters. The caller keeps the mapping and its file
/// open for as long as this lives (and so for as long as any view into it may be written).
#[derive(Debug)]
pub struct Registration(usize);

/// Register `len` bytes mapped at `base` from file `fd` (offset 0 of the file is `base`).
/// `None` if every slot is taken: the mapping's bytes are then sent by copying, as usual.
pub fn register(base: *const u8, len: usize, fd: RawFd) -> Option<Registration> {
    let _g = CLAIM.lock().unwrap_or_else(|p| p.into_inner());
    let i = REGIONS.iter().position(|s| s.len.load(Ordering::Acquire) == 0)?;
    let s = &REGIONS[i];
    s.base.store(base as usize, Ordering::Relaxed);
    s.fd.store(fd, Ordering::Relaxed);
    // Published last: a reader that sees the length sees the rest.
    s.len.store(len, Ordering::Release);
    USED.fetch_max(i + 1, Ordering::Release);
    Some(Registration(i))
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _g = CLAIM.lock().unwrap_or_else(|p| p.into_inner());
        REGIONS[self.0].len.store(0, Ordering::Release);
    }
}

/// A read-only shared mapping of a file's first `len` bytes, unmapped on drop; made with
/// `register`, its bytes are also sent by reference (while the registry has room). The
/// owner keeps the file open for as long as the mapping lives (declare the mapping before
/// the file in a struct, so it is dropped, and unregistered, first).
#[derive(Debug)]
pub struct Mapping {
    base: usize,
    len: usize,
    registration: Option<Registration>,
}

impl Mapping {
    pub fn new(fd: BorrowedFd<'_>, len: usize, register: bool) -> io::Result<Self> {
        // SAFETY: a fresh mapping, which nothing else refers to yet.
        let base = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ,
                rustix::mm::MapFlags::SHARED | rustix::mm::MapFlags::NORESERVE,
                fd,
                0,
            )?
        } as usize;
        let registration = register.then(|| self::register(base as *const u8, len, fd.as_raw_fd())).flatten();
        if register && registration.is_none() {
            tracing::warn!("zero-copy registry full; these cached bytes are sent by copying");
        }
        Ok(Mapping { base, len, registration })
    }

    /// Whether `p` points into the mapping.
    pub fn contains(&self, p: *const u8) -> bool {
        (self.base..self.base + self.len).contains(&(p as usize))
    }

    /// `len` bytes at `offset` of the file.
    ///
    /// # Safety
    /// The range lies inside the mapping, and nothing writes those bytes of the file while
    /// the returned slice lives.
    pub unsafe fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        debug_assert!(offset + len <= self.len);
        // SAFETY: the caller's promise; the mapping lives as long as `self`.
        unsafe { std::slice::from_raw_parts((self.base + offset) as *const u8, len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        drop(self.registration.take());
        // SAFETY: the owner drops the mapping once nothing refers into it.
        unsafe {
            let _ = rustix::mm::munmap(self.base as *mut _, self.len);
        }
    }
}

/// Free a file range's pages (and blocks): a send still holding them keeps them, and
/// what is written there next lands in fresh pages. How an owner of a registered mapping
/// reuses bytes it may have sent.
pub fn punch_hole(fd: impl AsFd, offset: u64, len: u64) -> io::Result<()> {
    let flags = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
    Ok(rustix::fs::fallocate(fd, flags, offset, len)?)
}

/// Write all of `iov` to the file at `offset`.
pub fn write_all_at(fd: impl AsFd, mut iov: &mut [IoSlice<'_>], mut offset: u64) -> io::Result<()> {
    let fd = fd.as_fd();
    while !iov.is_empty() {
        match rustix::io::pwritev(fd, iov, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                offset += n as u64;
                IoSlice::advance_slices(&mut iov, n);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The file and offset holding `buf`, if it lies wholly inside a registered mapping.
fn lookup(buf: &[u8]) -> Option<(RawFd, u64)> {
    let start = buf.as_ptr() as usize;
    let end = start.checked_add(buf.len())?;
    for s in &REGIONS[..USED.load(Ordering::Acquire)] {
        let len = s.len.load(Ordering::Acquire);
        if len == 0 {
            continue;
        }
        let base = s.base.load(Ordering::Relaxed);
        if start >= base && end <= base + len {
            return Some((s.fd.load(Ordering::Relaxed), (start - base) as u64));
        }
    }
    None
}

/// A plain TCP connection whose writes of registered bytes go out with `sendfile`.
pub struct ZeroCopyStream {
    inner: TcpStream,
}

impl ZeroCopyStream {
    pub fn new(inner: TcpStream) -> Self {
        ZeroCopyStream { inner }
    }

    /// Run a non-blocking send on the socket, waiting for writability as tokio does.
    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        mut op: impl FnMut(BorrowedFd<'_>) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.inner.poll_write_ready(cx))?;
            match self.inner.try_io(Interest::WRITABLE, || op(self.inner.as_fd())) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }
}

fn sendfile_from(sock: BorrowedFd<'_>, fd: RawFd, offset: u64, len: usize) -> io::Result<usize> {
    // SAFETY: the registration guarantees `fd` stays open while its bytes may be written.
    let file = unsafe { BorrowedFd::borrow_raw(fd) };
    let mut off = offset;
    let n = rustix::fs::sendfile(sock, file, Some(&mut off), len)?;
    metrics::counter!("http_sendfile_bytes_total").increment(n as u64);
    Ok(n)
}

impl AsyncWrite for ZeroCopyStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match lookup(buf) {
            Some((fd, off)) if !buf.is_empty() => self.poll_send(cx, |sock| sendfile_from(sock, fd, off, buf.len())),
            _ => Pin::new(&mut self.get_mut().inner).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mapped = bufs.iter().enumerate().filter(|(_, b)| !b.is_empty()).find_map(|(i, b)| Some((i, lookup(b)?)));
        match mapped {
            None => Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs),
            Some((0, (fd, off))) => {
                let len = bufs[0].len();
                self.poll_send(cx, |sock| sendfile_from(sock, fd, off, len))
            }
            // What comes before the mapped bytes (the response head, a chunk header) goes
            // first, held back with MSG_MORE so it leaves in the same segment as the body.
            Some((k, _)) => self.poll_send(cx, |sock| {
                rustix::net::sendmsg(
                    sock,
                    &bufs[..k],
                    &mut rustix::net::SendAncillaryBuffer::default(),
                    rustix::net::SendFlags::MORE | rustix::net::SendFlags::NOSIGNAL,
                )
                .map_err(io::Error::from)
            }),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl AsyncRead for ZeroCopyStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_only_bytes_wholly_inside_a_registered_mapping() {
        let backing = vec![7u8; 4096];
        let reg = register(backing.as_ptr(), backing.len(), 42).unwrap();
        assert_eq!(lookup(&backing[100..200]), Some((42, 100)));
        assert_eq!(lookup(&backing[..]), Some((42, 0)));
        let other = vec![1u8; 16];
        assert_eq!(lookup(&other), None);
        drop(reg);
        assert_eq!(lookup(&backing[100..200]), None);
    }
}
