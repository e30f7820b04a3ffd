//! Recycled byte buffers: the parts of an upload and the encoded blocks of a backup come
//! from small pools and go back to them, instead of one allocation per part or block made on
//! whichever blocking thread did the work. glibc gives every such thread an arena of its own
//! and each keeps its high-water mark, so thousands of block-sized allocations left a
//! backup's resident memory a third above what it held (docs/DESIGN.md, "Why are parts
//! copied into reused buffers"). Not used for a restore's decoded blocks: there a pool kept
//! 144-148 MiB resident against 110-124 without (the freed blocks' memory served the next
//! ranged reads).

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Free buffers, at most `keep` of them (more are freed).
#[derive(Debug)]
pub(crate) struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl BufferPool {
    /// A pool that keeps at most `keep` free buffers.
    pub(crate) fn new(keep: usize) -> Arc<Self> {
        Arc::new(Self {
            free: Mutex::new(Vec::new()),
            keep,
        })
    }

    /// An empty buffer with room for at least `capacity` bytes: a free one when it is big
    /// enough (a smaller one is let go), a new one of exactly `capacity` otherwise.
    pub(crate) fn take(&self, capacity: usize) -> Vec<u8> {
        let free = self.free.lock().map_or(None, |mut free| free.pop());
        match free {
            Some(buf) if buf.capacity() >= capacity => buf,
            _ => Vec::with_capacity(capacity),
        }
    }

    /// Returns a buffer (emptied) for later use.
    pub(crate) fn give(&self, mut buf: Vec<u8>) {
        buf.clear();
        if let Ok(mut free) = self.free.lock()
            && free.len() < self.keep
        {
            free.push(buf);
        }
    }

    /// `buf` as [`Bytes`] whose buffer comes back to this pool when the last of its clones
    /// and slices is dropped.
    pub(crate) fn share(self: &Arc<Self>, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            pool: Arc::clone(self),
        })
    }
}

/// A buffer lent out as [`Bytes`]; back to its pool on drop.
struct Pooled {
    buf: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_buffers_come_back_once_every_clone_is_dropped_and_the_pool_stays_bounded() {
        let pool = BufferPool::new(2);
        let mut buf = pool.take(100);
        buf.extend_from_slice(b"hello");
        let ptr = buf.as_ptr();
        let shared = pool.share(buf);
        let slice = shared.slice(1..3);
        drop(shared);
        assert!(
            pool.free.lock().expect("lock").is_empty(),
            "a slice still holds it"
        );
        assert_eq!(&slice[..], b"el");
        drop(slice);
        let again = pool.take(50);
        assert_eq!(again.as_ptr(), ptr, "the same buffer, reused");
        assert!(again.is_empty());
        // Too small for what is asked: a new one.
        pool.give(again);
        assert!(pool.take(1000).capacity() >= 1000);
        for _ in 0..5 {
            pool.give(Vec::with_capacity(10));
        }
        assert_eq!(pool.free.lock().expect("lock").len(), 2);
    }
}
