//! The bounded queue between the event stream and one destination's sender:
//! pushing never waits; when it is full the oldest entry makes room and is
//! handed back, so the caller counts and logs it.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

/// A bounded first-in first-out queue with one consumer.
pub(crate) struct DropOldest<T> {
    state: Mutex<State<T>>,
    /// Wakes the consumer on a push or on close.
    ready: Notify,
    capacity: usize,
}

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

impl<T> DropOldest<T> {
    /// A queue of at most `capacity` entries (at least 1).
    pub(crate) fn new(capacity: usize) -> DropOldest<T> {
        DropOldest {
            state: Mutex::new(State {
                items: VecDeque::new(),
                closed: false,
            }),
            ready: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Adds `item`; returns the oldest entry when it had to go to make room.
    pub(crate) fn push(&self, item: T) -> Option<T> {
        let dropped = {
            let mut state = self.lock();
            let dropped = if state.items.len() >= self.capacity {
                state.items.pop_front()
            } else {
                None
            };
            state.items.push_back(item);
            dropped
        };
        self.ready.notify_one();
        dropped
    }

    /// The next entry; waits while the queue is empty and open, `None` once
    /// it is closed and empty.
    pub(crate) async fn pop(&self) -> Option<T> {
        loop {
            {
                let mut state = self.lock();
                if let Some(item) = state.items.pop_front() {
                    return Some(item);
                }
                if state.closed {
                    return None;
                }
            }
            self.ready.notified().await;
        }
    }

    /// No more pushes will come: the consumer ends once it has taken the rest.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// Takes what is left (when time is up).
    pub(crate) fn take_all(&self) -> Vec<T> {
        self.lock().items.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::DropOldest;

    #[tokio::test]
    async fn a_full_queue_drops_the_oldest_and_hands_it_back_and_ends_after_close() {
        let queue = DropOldest::new(3);
        for n in 1..=3 {
            assert_eq!(queue.push(n), None);
        }
        assert_eq!(queue.push(4), Some(1));
        assert_eq!(queue.push(5), Some(2));
        assert_eq!(queue.pop().await, Some(3));
        queue.close();
        assert_eq!(queue.pop().await, Some(4));
        assert_eq!(queue.pop().await, Some(5));
        assert_eq!(queue.pop().await, None);
    }

    #[tokio::test]
    async fn a_waiting_consumer_wakes_on_push() {
        let queue = std::sync::Arc::new(DropOldest::new(2));
        let consumer = tokio::spawn({
            let queue = queue.clone();
            async move { queue.pop().await }
        });
        tokio::task::yield_now().await;
        queue.push("event");
        assert_eq!(consumer.await.unwrap(), Some("event"));
    }
}
