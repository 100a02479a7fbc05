//! The usage-file life cycle: which action is allowed from which
//! status, and where it leads.
//!
//! Kept as one table so the simulator refuses exactly the transitions Connect refuses; every
//! refusal is a 400 with Connect's error body.

use super::error::ApiError;
use payg_shared::FileStatus;

/// What a vendor or provider asks of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Update,
    Upload,
    Submit,
    Delete,
    Accept,
    Reject,
    Close,
}

impl Action {
    pub fn verb(self) -> &'static str {
        match self {
            Action::Update => "update",
            Action::Upload => "upload to",
            Action::Submit => "submit",
            Action::Delete => "delete",
            Action::Accept => "accept",
            Action::Reject => "reject",
            Action::Close => "close",
        }
    }

    /// Whether the action is allowed on a file in `status`.
    fn allowed_from(self, status: &FileStatus) -> bool {
        match self {
            Action::Update | Action::Upload => status.accepts_upload(),
            Action::Submit => *status == FileStatus::Ready,
            Action::Delete => status.is_deletable(),
            Action::Accept | Action::Reject => *status == FileStatus::Pending,
            Action::Close => *status == FileStatus::Accepted,
        }
    }

    /// The status the action leads to (`None`: the status does not change).
    pub fn target(self) -> Option<FileStatus> {
        match self {
            Action::Update => None,
            Action::Upload => Some(FileStatus::Processing),
            Action::Submit => Some(FileStatus::Pending),
            Action::Delete => Some(FileStatus::Deleted),
            Action::Accept => Some(FileStatus::Accepted),
            Action::Reject => Some(FileStatus::Rejected),
            Action::Close => Some(FileStatus::Closed),
        }
    }

    /// The `events` entry the action stamps.
    pub fn event(self) -> Option<&'static str> {
        match self {
            Action::Update => None,
            Action::Upload => Some("uploaded"),
            Action::Submit => Some("submitted"),
            Action::Delete => Some("deleted"),
            Action::Accept => Some("accepted"),
            Action::Reject => Some("rejected"),
            Action::Close => Some("closed"),
        }
    }

    /// True when the provider, not the vendor, performs the action.
    pub fn by_provider(self) -> bool {
        matches!(self, Action::Accept | Action::Reject | Action::Close)
    }

    /// Refuses the action when the file's status does not allow it.
    pub fn check(self, file_id: &str, current: &FileStatus) -> Result<(), ApiError> {
        if self.allowed_from(current) {
            Ok(())
        } else {
            Err(ApiError::transition(file_id, self.verb(), current.as_str()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_documented_transitions_are_allowed() {
        use FileStatus::*;
        let allowed = |action: Action| -> Vec<FileStatus> {
            FileStatus::KNOWN
                .into_iter()
                .chain([Other("archived".into())])
                .filter(|s| action.check("UF-1", s).is_ok())
                .collect()
        };
        assert_eq!(allowed(Action::Upload), [Draft, Invalid, Ready, Rejected]);
        assert_eq!(allowed(Action::Submit), [Ready]);
        assert_eq!(allowed(Action::Delete), [Draft, Invalid, Ready]);
        assert_eq!(allowed(Action::Accept), [Pending]);
        assert_eq!(allowed(Action::Reject), [Pending]);
        assert_eq!(allowed(Action::Close), [Accepted]);
        let refused = Action::Submit.check("UF-1", &Draft).unwrap_err();
        assert_eq!(refused.status.as_u16(), 400);
        assert!(refused.errors[0].contains(Draft.as_str()));
    }
}
