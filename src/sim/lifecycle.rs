//! The usage-file life cycle: which action is allowed from which
//! status, and where it leads.
//!
//! Kept as one table so the simulator refuses exactly the transitions Connect refuses; every
//! refusal is a 400 with Connect's error body.

use std::fmt;

use super::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Draft,
    Processing,
    Invalid,
    Ready,
    Pending,
    Accepted,
    Rejected,
    Closed,
    Deleted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Processing => "processing",
            Status::Invalid => "invalid",
            Status::Ready => "ready",
            Status::Pending => "pending",
            Status::Accepted => "accepted",
            Status::Rejected => "rejected",
            Status::Closed => "closed",
            Status::Deleted => "deleted",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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

    fn allowed_from(self) -> &'static [Status] {
        use Status::*;
        match self {
            Action::Update | Action::Upload => &[Draft, Invalid, Ready, Rejected],
            Action::Submit => &[Ready],
            Action::Delete => &[Draft, Invalid, Ready],
            Action::Accept | Action::Reject => &[Pending],
            Action::Close => &[Accepted],
        }
    }

    /// The status the action leads to (`None`: the status does not change).
    pub fn target(self) -> Option<Status> {
        match self {
            Action::Update => None,
            Action::Upload => Some(Status::Processing),
            Action::Submit => Some(Status::Pending),
            Action::Delete => Some(Status::Deleted),
            Action::Accept => Some(Status::Accepted),
            Action::Reject => Some(Status::Rejected),
            Action::Close => Some(Status::Closed),
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
    pub fn check(self, file_id: &str, current: Status) -> Result<(), ApiError> {
        if self.allowed_from().contains(&current) {
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
        use Status::*;
        let all = [
            Draft, Processing, Invalid, Ready, Pending, Accepted, Rejected, Closed, Deleted,
        ];
        let allowed = |action: Action| -> Vec<Status> {
            all.into_iter()
                .filter(|s| action.check("UF-1", *s).is_ok())
                .collect()
        };
        assert_eq!(allowed(Action::Upload), [Draft, Invalid, Ready, Rejected]);
        assert_eq!(allowed(Action::Submit), [Ready]);
        assert_eq!(allowed(Action::Delete), [Draft, Invalid, Ready]);
        assert_eq!(allowed(Action::Accept), [Pending]);
        assert_eq!(allowed(Action::Reject), [Pending]);
        assert_eq!(allowed(Action::Close), [Accepted]);
        let refused = Action::Submit.check("UF-1", Draft).unwrap_err();
        assert_eq!(refused.status.as_u16(), 400);
        assert!(refused.errors[0].contains("draft"));
    }
}
