//! The result queue of one connection: one FIFO and one sender that outlive reconnects.
//!
//! A result leaves the queue only after it was written to an established, handshaken
//! connection, so results produced while disconnected wait for the next connection and none is
//! sent twice by this runner.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use super::protocol::Task;

#[derive(Default)]
pub(crate) struct Outbox {
    queue: Mutex<VecDeque<Task>>,
    pushed: Notify,
}

impl Outbox {
    pub(crate) fn push(&self, result: Task) {
        self.lock().push_back(result);
        self.pushed.notify_one();
    }

    /// The oldest unsent result (a copy: it stays queued until [`Outbox::sent`]).
    pub(crate) fn front(&self) -> Option<Task> {
        self.lock().front().cloned()
    }

    /// Removes the oldest result after it was written to the socket.
    pub(crate) fn sent(&self) {
        self.lock().pop_front();
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Completes after the next push (or at once if one happened since the last wait).
    pub(crate) async fn pushed(&self) {
        self.pushed.notified().await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Task>> {
        // A panic while holding this lock cannot leave the queue half-updated.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
