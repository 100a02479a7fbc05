//! A usage file's status: the one place its spellings and its groupings live.
//!
//! The product (client, filing, the schedule's sweep, the event handler) and the simulator's
//! life cycle all compare statuses through [`FileStatus`] and its predicates, so the rules
//! "which statuses mean done, processing, deletable" are written once. Reading is
//! case-insensitive and never fails: a status a later Connect adds is kept as
//! [`FileStatus::Other`] ("unknown, keep watching"). Writing uses Connect's lower-case spelling.
//!
//! Depends on nothing else in the crate (only `serde`), so it can move into a crate shared by
//! the product and the simulator.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A usage file's status as Connect reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FileStatus {
    Draft,
    Uploading,
    Uploaded,
    Processing,
    Invalid,
    Ready,
    Pending,
    Rejected,
    Accepted,
    Closed,
    Deleted,
    /// A status this program does not know, as it was read (an absent one reads as `""`).
    Other(String),
}

impl FileStatus {
    /// Every status this program knows, in life-cycle order.
    pub const KNOWN: [FileStatus; 11] = [
        FileStatus::Draft,
        FileStatus::Uploading,
        FileStatus::Uploaded,
        FileStatus::Processing,
        FileStatus::Invalid,
        FileStatus::Ready,
        FileStatus::Pending,
        FileStatus::Rejected,
        FileStatus::Accepted,
        FileStatus::Closed,
        FileStatus::Deleted,
    ];

    /// Connect's spelling (an unknown status as it was read).
    pub fn as_str(&self) -> &str {
        match self {
            FileStatus::Draft => "draft",
            FileStatus::Uploading => "uploading",
            FileStatus::Uploaded => "uploaded",
            FileStatus::Processing => "processing",
            FileStatus::Invalid => "invalid",
            FileStatus::Ready => "ready",
            FileStatus::Pending => "pending",
            FileStatus::Rejected => "rejected",
            FileStatus::Accepted => "accepted",
            FileStatus::Closed => "closed",
            FileStatus::Deleted => "deleted",
            FileStatus::Other(status) => status,
        }
    }

    /// Reads a status in any letter case; what is not known becomes [`FileStatus::Other`].
    pub fn parse(text: &str) -> FileStatus {
        FileStatus::KNOWN
            .into_iter()
            .find(|known| known.as_str().eq_ignore_ascii_case(text))
            .unwrap_or_else(|| FileStatus::Other(text.to_string()))
    }

    /// Submitted: the vendor has nothing more to do for the month (`pending`, `accepted`,
    /// `closed`).
    pub fn is_done(&self) -> bool {
        matches!(
            self,
            FileStatus::Pending | FileStatus::Accepted | FileStatus::Closed
        )
    }

    /// The platform is still working on an upload (`uploading`, `uploaded`, `processing`).
    pub fn is_processing(&self) -> bool {
        matches!(
            self,
            FileStatus::Uploading | FileStatus::Uploaded | FileStatus::Processing
        )
    }

    /// The vendor may delete the file (`draft`, `invalid`, `ready`).
    pub fn is_deletable(&self) -> bool {
        matches!(
            self,
            FileStatus::Draft | FileStatus::Invalid | FileStatus::Ready
        )
    }

    /// The vendor may upload a workbook into the file, replacing any earlier one (`draft`,
    /// `invalid`, `ready`, `rejected`).
    pub fn accepts_upload(&self) -> bool {
        self.is_deletable() || *self == FileStatus::Rejected
    }

    /// The file holds an accepted upload: in processing, ready or submitted.
    pub fn holds_upload(&self) -> bool {
        *self == FileStatus::Ready || self.is_processing() || self.is_done()
    }
}

impl Default for FileStatus {
    /// An absent status: unknown.
    fn default() -> Self {
        FileStatus::Other(String::new())
    }
}

impl fmt::Display for FileStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FileStatus {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(FileStatus::parse(text))
    }
}

impl From<&str> for FileStatus {
    fn from(text: &str) -> Self {
        FileStatus::parse(text)
    }
}

impl Serialize for FileStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FileStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(FileStatus::parse(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::FileStatus::{self, *};

    #[test]
    fn spelling_round_trips_and_reads_any_case() {
        let table = [
            ("draft", Draft),
            ("uploading", Uploading),
            ("uploaded", Uploaded),
            ("processing", Processing),
            ("invalid", Invalid),
            ("ready", Ready),
            ("pending", Pending),
            ("rejected", Rejected),
            ("accepted", Accepted),
            ("closed", Closed),
            ("deleted", Deleted),
        ];
        assert_eq!(table.len(), FileStatus::KNOWN.len());
        for (text, status) in table {
            assert_eq!(FileStatus::parse(text), status, "{text}");
            assert_eq!(FileStatus::parse(&text.to_uppercase()), status, "{text}");
            assert_eq!(status.as_str(), text);
            assert_eq!(status.to_string(), text);
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            let upper = format!("\"{}\"", text.to_uppercase());
            assert_eq!(serde_json::from_str::<FileStatus>(&upper).unwrap(), status);
        }
    }

    #[test]
    fn an_unknown_status_is_kept_as_read() {
        let future = FileStatus::parse("Archived");
        assert_eq!(future, Other("Archived".into()));
        assert_eq!(future.as_str(), "Archived");
        assert_eq!(serde_json::to_string(&future).unwrap(), "\"Archived\"");
        assert_eq!(FileStatus::default(), Other(String::new()));
    }

    #[test]
    fn every_status_has_its_groups() {
        // (status, done, processing, deletable, accepts upload, holds upload)
        let table = [
            (Draft, false, false, true, true, false),
            (Uploading, false, true, false, false, true),
            (Uploaded, false, true, false, false, true),
            (Processing, false, true, false, false, true),
            (Invalid, false, false, true, true, false),
            (Ready, false, false, true, true, true),
            (Pending, true, false, false, false, true),
            (Rejected, false, false, false, true, false),
            (Accepted, true, false, false, false, true),
            (Closed, true, false, false, false, true),
            (Deleted, false, false, false, false, false),
            (Other("archived".into()), false, false, false, false, false),
            (Other(String::new()), false, false, false, false, false),
        ];
        for (status, done, processing, deletable, uploadable, holds) in table {
            assert_eq!(status.is_done(), done, "{status:?} done");
            assert_eq!(status.is_processing(), processing, "{status:?} processing");
            assert_eq!(status.is_deletable(), deletable, "{status:?} deletable");
            assert_eq!(status.accepts_upload(), uploadable, "{status:?} upload");
            assert_eq!(status.holds_upload(), holds, "{status:?} holds upload");
        }
    }
}
