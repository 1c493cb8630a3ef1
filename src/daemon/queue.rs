//! The bounded queue between the capture thread and the frame pipeline. When the pipeline
//! falls behind, the oldest waiting event is dropped and counted: memory never grows, and the
//! pipeline always works on the newest picture.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

pub struct DropOldest<T> {
    inner: Mutex<Inner<T>>,
    ready: Condvar,
    capacity: usize,
}

struct Inner<T> {
    items: VecDeque<T>,
    dropped: u64,
    closed: bool,
}

impl<T> DropOldest<T> {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                items: VecDeque::with_capacity(capacity),
                dropped: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        // A panic in another thread while holding the lock leaves the queue usable: it holds
        // plain data only.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `item`; returns true when an older item had to be dropped for it.
    pub fn push(&self, item: T) -> bool {
        let mut g = self.lock();
        let mut dropped = false;
        if g.items.len() >= self.capacity {
            g.items.pop_front();
            g.dropped += 1;
            dropped = true;
        }
        g.items.push_back(item);
        drop(g);
        self.ready.notify_one();
        dropped
    }

    /// The oldest item, waiting up to `timeout`; `None` on timeout or when closed and empty.
    pub fn pop(&self, timeout: Duration) -> Option<T> {
        let mut g = self.lock();
        if g.items.is_empty() && !g.closed {
            g = self
                .ready
                .wait_timeout_while(g, timeout, |i| i.items.is_empty() && !i.closed)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        g.items.pop_front()
    }

    /// No more items will come; waiting readers wake up.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_the_oldest_and_counts() {
        let q = DropOldest::new(3);
        for i in 0..5 {
            q.push(i);
        }
        assert_eq!(q.dropped(), 2);
        let got: Vec<i32> = std::iter::from_fn(|| q.pop(Duration::ZERO)).collect();
        assert_eq!(got, vec![2, 3, 4]);
    }

    #[test]
    fn a_closed_empty_queue_returns_at_once() {
        let q: DropOldest<u8> = DropOldest::new(2);
        q.close();
        let t = std::time::Instant::now();
        assert_eq!(q.pop(Duration::from_secs(30)), None);
        assert!(t.elapsed() < Duration::from_secs(30));
    }
}
