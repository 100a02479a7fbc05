//! One of the two connections an instance keeps (like the official runner, one announcing
//! `runner_type=background` and one `interactive`, each accepting every task category), as
//! state that outlives its sockets: which `runner_type` it announces, the tasks it is running
//! and the results it still has to send.

use std::fmt;

use super::outbox::Outbox;
use super::running::Running;

/// `runner_type` of a connection. Both accept every task category; the platform decides which
/// category it routes where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerType {
    Background,
    Interactive,
}

impl RunnerType {
    pub fn as_str(self) -> &'static str {
        match self {
            RunnerType::Background => "background",
            RunnerType::Interactive => "interactive",
        }
    }
}

impl fmt::Display for RunnerType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub(crate) struct Channel {
    pub runner_type: RunnerType,
    pub outbox: Outbox,
    pub running: Running,
}

impl Channel {
    pub(crate) fn new(runner_type: RunnerType) -> Self {
        Channel {
            runner_type,
            outbox: Outbox::default(),
            running: Running::default(),
        }
    }

    /// Nothing running and nothing left to send: a stopping runner may close this channel.
    pub(crate) fn is_idle(&self) -> bool {
        self.running.counts().total() == 0 && self.outbox.is_empty()
    }
}
