//! Usage-file operations (`/usage/files`), each made safe to retry.
//!
//! Reads (`usage_file`, `usage_files`) are retried freely. The writes are POSTs that create
//! or move a file, so a failure that might have taken effect (a 5xx, a timeout or a broken
//! connection after sending) is never answered by simply sending again. They are all repeated
//! without further thought only when the failure proves the server did nothing: `429` (it
//! refused, honouring `Retry-After`) or a connection that was never made. Otherwise, after a
//! backoff pause, the client re-reads the platform's state and decides:
//!
//! | operation | re-read | already done when | sent again when |
//! |---|---|---|---|
//! | create | list by `external_id` + product + contract, not deleted | a file is found (it is returned) | none is found |
//! | upload | the file | `uploading`, `uploaded`, `processing` | `draft`, `invalid`, `ready`, `rejected` (same bytes: replacing a workbook with itself is harmless) |
//! | submit | the file | `pending`, `accepted`, `closed` | `ready` |
//! | delete | the file | `deleted` | `draft`, `invalid`, `ready` |
//! | accept (provider) | the file | `accepted`, `closed` | `pending` |
//! | reject (provider) | the file | `rejected` | `pending` |
//! | close (provider) | the file | `closed` | `accepted` |
//!
//! A `400` (illegal transition) is also followed by a re-read: when the file is already in the
//! action's "done" state — another replica or the event handler got there first — the action
//! succeeds. In any other status the original error is returned. A create without `external_id` cannot
//! be found again, so its ambiguous failures are returned as they are. All attempts of one
//! operation, resends included, share one retry budget.

use bytes::Bytes;

use super::client::{segment, Body, ConnectClient, Repeat, Reply, Request};
use super::error::ConnectError;
use super::models::{NewUsageFile, UsageFile};
use super::{Query, Rql};
use payg_shared::FileStatus::{self, *};

const FILES: &str = "usage/files";

/// A state-changing `POST usage/files/{id}/{name}` and how to tell, from the file's status
/// after an ambiguous failure, whether it took effect.
struct Action {
    name: &'static str,
    done: fn(&FileStatus) -> bool,
    repeatable_from: fn(&FileStatus) -> bool,
}

const UPLOAD: Action = Action {
    name: "upload",
    done: FileStatus::is_processing,
    repeatable_from: FileStatus::accepts_upload,
};
const SUBMIT: Action = Action {
    name: "submit",
    done: FileStatus::is_done,
    repeatable_from: |status| *status == Ready,
};
const DELETE: Action = Action {
    name: "delete",
    done: |status| *status == Deleted,
    repeatable_from: FileStatus::is_deletable,
};
const ACCEPT: Action = Action {
    name: "accept",
    done: |status| matches!(status, Accepted | Closed),
    repeatable_from: |status| *status == Pending,
};
const REJECT: Action = Action {
    name: "reject",
    done: |status| *status == Rejected,
    repeatable_from: |status| *status == Pending,
};
const CLOSE: Action = Action {
    name: "close",
    done: |status| *status == Closed,
    repeatable_from: |status| *status == Accepted,
};

impl ConnectClient {
    pub async fn usage_file(&self, id: &str) -> Result<UsageFile, ConnectError> {
        self.get_json(&format!("{FILES}/{}", segment(id))).await
    }

    /// The workbook last uploaded into file `id`, downloaded from the short-lived signed link
    /// (`usage_file_uri`) of the file's detail, read fresh for it. A link refused (403: it
    /// expired between reading and using it) is read once more.
    pub async fn download_usage_workbook(&self, id: &str) -> Result<Bytes, ConnectError> {
        let label = format!("{FILES}/{}/usage_file_uri", segment(id));
        let mut refused = None;
        for _ in 0..2 {
            let file = self.usage_file(id).await?;
            let Some(link) = file.usage_file_uri.filter(|link| !link.is_empty()) else {
                return Err(ConnectError::decode(
                    "GET",
                    &label,
                    format!("usage file {id} ({}) has no uploaded workbook", file.status),
                ));
            };
            match self.fetch_signed(&link, &label).await {
                Err(error) if error.status() == Some(403) => refused = Some(error),
                other => return other,
            }
        }
        Err(refused.expect("two refusals"))
    }

    /// Usage files matching `filter`, in id order.
    pub async fn usage_files(&self, filter: Rql) -> Result<Vec<UsageFile>, ConnectError> {
        self.list_all(FILES, &Query::new(filter).ordering(["id"]))
            .await
    }

    /// Creates a usage file and returns its id (the one thing of the answer every deployment
    /// agrees on; read the detail with [`ConnectClient::usage_file`] when it is needed).
    pub async fn create_usage_file(&self, new: &NewUsageFile) -> Result<String, ConnectError> {
        let body = serde_json::to_vec(new)
            .map_err(|e| ConnectError::decode("POST", FILES, format!("cannot encode: {e}")))?;
        let request = Request::post(FILES, Body::Json(Bytes::from(body)));
        let mut backoff = self.backoff();
        loop {
            let error = match self
                .send_with(&request, &mut backoff, Repeat::OnlyIfUnsent)
                .await
            {
                Ok(reply) => {
                    let created: UsageFile = reply.json(&request)?;
                    if created.id.is_empty() {
                        return Err(ConnectError::decode("POST", FILES, "no id in the answer"));
                    }
                    return Ok(created.id);
                }
                Err(error) if error.is_ambiguous() && !new.external_id.is_empty() => error,
                Err(error) => return Err(error),
            };
            if !backoff.pause(None).await {
                return Err(error);
            }
            match self.find_created(new).await {
                Ok(Some(id)) => {
                    tracing::info!(file = %id, external_id = %new.external_id, %error,
                        "usage file was created despite the failed answer");
                    return Ok(id);
                }
                Ok(None) => tracing::info!(external_id = %new.external_id, %error,
                    "usage file was not created; creating again"),
                Err(lookup) => {
                    tracing::warn!(external_id = %new.external_id, %lookup,
                        "cannot tell whether the usage file was created");
                    return Err(error);
                }
            }
        }
    }

    /// Replaces the file's `note` (a PUT: repeating it changes nothing).
    pub async fn update_usage_file_note(
        &self,
        id: &str,
        note: &str,
    ) -> Result<UsageFile, ConnectError> {
        let path = format!("{FILES}/{}", segment(id));
        let body = serde_json::json!({ "note": note });
        let request = Request::put(&path, Body::Json(Bytes::from(body.to_string())));
        let reply = self.send(&request).await?;
        self.file_from(id, &request, reply).await
    }

    /// Uploads a workbook (multipart field `usage_file`); the file goes to `uploading`.
    pub async fn upload_usage_file(
        &self,
        id: &str,
        workbook: Bytes,
    ) -> Result<UsageFile, ConnectError> {
        self.act(id, &UPLOAD, Body::Workbook(workbook)).await
    }

    /// `ready` → `pending`.
    pub async fn submit_usage_file(&self, id: &str) -> Result<UsageFile, ConnectError> {
        self.act(id, &SUBMIT, Body::Empty).await
    }

    /// `draft`/`invalid`/`ready` → `deleted` (a POST action; there is no HTTP DELETE).
    pub async fn delete_usage_file(&self, id: &str) -> Result<UsageFile, ConnectError> {
        self.act(id, &DELETE, Body::Empty).await
    }

    /// Provider side: `pending` → `accepted`.
    pub async fn accept_usage_file(&self, id: &str, note: &str) -> Result<UsageFile, ConnectError> {
        let body = serde_json::json!({ "acceptance_note": note });
        self.act(id, &ACCEPT, Body::Json(Bytes::from(body.to_string())))
            .await
    }

    /// Provider side: `pending` → `rejected`.
    pub async fn reject_usage_file(&self, id: &str, note: &str) -> Result<UsageFile, ConnectError> {
        let body = serde_json::json!({ "rejection_note": note });
        self.act(id, &REJECT, Body::Json(Bytes::from(body.to_string())))
            .await
    }

    /// Provider side: `accepted` → `closed`.
    pub async fn close_usage_file(&self, id: &str) -> Result<UsageFile, ConnectError> {
        self.act(id, &CLOSE, Body::Empty).await
    }

    /// Runs `action` on file `id` as the module documentation describes.
    async fn act(&self, id: &str, action: &Action, body: Body) -> Result<UsageFile, ConnectError> {
        let path = format!("{FILES}/{}/{}", segment(id), action.name);
        let request = Request::post(&path, body);
        let mut backoff = self.backoff();
        loop {
            let error = match self
                .send_with(&request, &mut backoff, Repeat::OnlyIfUnsent)
                .await
            {
                Ok(reply) => return self.file_from(id, &request, reply).await,
                Err(error) if error.is_ambiguous() => error,
                // Refused as an illegal transition: someone (another replica, the event
                // handler) may have done it already, which is success, not an error.
                Err(error) if error.status() == Some(400) => {
                    return match self.usage_file(id).await {
                        Ok(file) if (action.done)(&file.status) => Ok(file),
                        _ => Err(error),
                    };
                }
                Err(error) => return Err(error),
            };
            if !backoff.pause(None).await {
                return Err(error);
            }
            let file = match self.usage_file(id).await {
                Ok(file) => file,
                Err(reread) => {
                    tracing::warn!(file = id, action = action.name, %reread,
                        "cannot tell whether the action took effect");
                    return Err(error);
                }
            };
            if (action.done)(&file.status) {
                tracing::info!(file = id, action = action.name, status = %file.status, %error,
                    "action took effect despite the failed answer");
                return Ok(file);
            }
            if !(action.repeatable_from)(&file.status) {
                return Err(error);
            }
            tracing::info!(file = id, action = action.name, status = %file.status, %error,
                "action did not take effect; sending again");
        }
    }

    /// The file detail an action answered with, or read afresh when the answer has no body.
    async fn file_from(
        &self,
        id: &str,
        request: &Request<'_>,
        reply: Reply,
    ) -> Result<UsageFile, ConnectError> {
        if reply.body.iter().all(u8::is_ascii_whitespace) {
            return self.usage_file(id).await;
        }
        reply.json(request)
    }

    /// The live file a lost create may have made.
    async fn find_created(&self, new: &NewUsageFile) -> Result<Option<String>, ConnectError> {
        let filter = Rql::all([
            Rql::eq("external_id", &new.external_id),
            Rql::eq("product.id", &new.product.id),
            Rql::eq("contract.id", &new.contract.id),
            Rql::ne("status", Deleted),
        ]);
        Ok(self
            .usage_files(filter)
            .await?
            .into_iter()
            .next()
            .map(|found| found.id))
    }
}
