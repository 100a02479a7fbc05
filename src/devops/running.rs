//! Counts of tasks a connection is executing, by category: reported in the connection URL
//! (`running_tasks`, `running_scheduled_tasks`) and watched by a stopping runner waiting for
//! its work to finish.

use std::sync::Arc;

use tokio::sync::watch;

use super::protocol::TaskCategory;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RunningCounts {
    pub background: usize,
    pub interactive: usize,
    pub scheduled: usize,
}

impl RunningCounts {
    pub(crate) fn total(&self) -> usize {
        self.background + self.interactive + self.scheduled
    }

    fn slot(&mut self, category: TaskCategory) -> &mut usize {
        match category {
            TaskCategory::Background => &mut self.background,
            TaskCategory::Interactive => &mut self.interactive,
            TaskCategory::Scheduled => &mut self.scheduled,
        }
    }
}

pub(crate) struct Running {
    counts: Arc<watch::Sender<RunningCounts>>,
}

impl Default for Running {
    fn default() -> Self {
        Running {
            counts: Arc::new(watch::Sender::new(RunningCounts::default())),
        }
    }
}

impl Running {
    /// Counts one task until the returned guard is dropped.
    pub(crate) fn start(&self, category: TaskCategory) -> RunningGuard {
        self.counts.send_modify(|c| *c.slot(category) += 1);
        RunningGuard {
            counts: Arc::clone(&self.counts),
            category,
        }
    }

    pub(crate) fn counts(&self) -> RunningCounts {
        *self.counts.borrow()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<RunningCounts> {
        self.counts.subscribe()
    }
}

pub(crate) struct RunningGuard {
    counts: Arc<watch::Sender<RunningCounts>>,
    category: TaskCategory,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.counts.send_modify(|c| *c.slot(self.category) -= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_until_dropped() {
        let running = Running::default();
        let background = running.start(TaskCategory::Background);
        let scheduled = running.start(TaskCategory::Scheduled);
        assert_eq!(
            running.counts(),
            RunningCounts {
                background: 1,
                interactive: 0,
                scheduled: 1
            }
        );
        drop(background);
        drop(scheduled);
        assert_eq!(running.counts().total(), 0);
    }
}
