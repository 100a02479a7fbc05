//! Usage-file operations on the simulator state: create, update, upload (and the delayed
//! processing that follows), submit, delete, the provider's accept/reject/close, and reads.
//!
//! Each operation takes the state lock once, checks the life cycle, changes the file and
//! publishes the status change while still holding the lock, so events arrive in the order
//! the changes happened.

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use serde_json::Value;

use super::error::ApiError;
use super::file_body;
use super::lifecycle::Action;
use super::processing::{self, Processed};
use super::rql::ListRequest;
use super::state::{FileEvent, FileSummary, Inner, SimState, World};
use super::usage_file::{Actor, Upload, UsageFile};
use payg_shared::workbook::UsageRow;
use payg_shared::FileStatus;

const NOTE_MAX: usize = 200;

impl SimState {
    /// `POST /usage/files`: a new `draft` file; answers the flat created object.
    pub fn create_file(&self, body: &Value) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let world = Arc::clone(&inner.world);
        let (fields, placement) = file_body::new_file(body, &world)?;
        inner.file_serial += 1;
        let id = file_id(inner.file_serial);
        let file = UsageFile::new(id.clone(), fields, placement);
        let created = file.created_json(&world.catalogue);
        inner.files.insert(id.clone(), file);
        self.publish(FileEvent {
            file_id: id,
            status: FileStatus::Draft,
        });
        Ok(created)
    }

    /// `PUT /usage/files/{id}`.
    pub fn update_file(&self, id: &str, body: &Value) -> Result<Value, ApiError> {
        self.with_file(id, |file, world| {
            Action::Update.check(&file.id, &file.status)?;
            file.fields = file_body::update(&file.fields, body)?;
            Ok(file.detail_json(&world.catalogue, self.storage()))
        })
    }

    /// `POST /usage/files/{id}/upload`: the file turns `processing` at once and, after the
    /// configured delay, `ready` or `invalid`. Must be called inside a tokio runtime.
    pub fn upload(self: &Arc<Self>, id: &str, bytes: Bytes) -> Result<Value, ApiError> {
        let (detail, generation, rules) = self.with_file(id, |file, world| {
            Action::Upload.check(&file.id, &file.status)?;
            file.generation += 1;
            file.upload = Some(Upload {
                bytes: bytes.clone(),
                ..Upload::default()
            });
            file.error_detail = None;
            file.stamp("uploaded", Actor::Vendor);
            self.move_to(file, FileStatus::Processing);
            let rules = processing::rules_for(world, file);
            Ok((
                file.detail_json(&world.catalogue, self.storage()),
                file.generation,
                rules,
            ))
        })?;
        let state = Arc::clone(self);
        let id = id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(state.config().processing_delay).await;
            let outcome =
                tokio::task::spawn_blocking(move || processing::process(bytes, &rules)).await;
            state.finish_processing(&id, generation, outcome.ok());
        });
        Ok(detail)
    }

    fn finish_processing(&self, id: &str, generation: u64, outcome: Option<Processed>) {
        // The file may have been re-uploaded or the world reseeded meanwhile: then this result
        // is stale and dropped.
        let _ = self.with_file(id, |file, _| {
            if file.generation != generation || file.status != FileStatus::Processing {
                return Ok(());
            }
            match outcome {
                Some(Processed { upload, problems }) => {
                    file.upload = Some(upload);
                    if problems.is_empty() {
                        self.move_to(file, FileStatus::Ready);
                    } else {
                        file.error_detail = Some(processing::error_detail(&problems));
                        self.move_to(file, FileStatus::Invalid);
                    }
                }
                None => {
                    file.error_detail = Some("the workbook could not be processed".into());
                    self.move_to(file, FileStatus::Invalid);
                }
            }
            Ok(())
        });
    }

    /// `POST /usage/files/{id}/submit`: `ready` → `pending`.
    pub fn submit(&self, id: &str) -> Result<Value, ApiError> {
        self.act(id, Action::Submit, |_| {})
    }

    /// `POST /usage/files/{id}/delete`: `draft`/`invalid`/`ready` → `deleted`.
    pub fn delete(&self, id: &str) -> Result<Value, ApiError> {
        self.act(id, Action::Delete, |_| {})
    }

    /// Provider: `pending` → `accepted`, with an optional note (≤ 200 characters).
    pub fn accept(&self, id: &str, note: Option<&str>) -> Result<Value, ApiError> {
        check_note("acceptance_note", note.unwrap_or(""), false)?;
        let note = note.map(str::to_string);
        self.act(id, Action::Accept, |file| file.acceptance_note = note)
    }

    /// Provider: `pending` → `rejected`; the note is required (≤ 200 characters).
    pub fn reject(&self, id: &str, note: &str) -> Result<Value, ApiError> {
        check_note("rejection_note", note, true)?;
        self.act(id, Action::Reject, |file| {
            file.rejection_note = Some(note.to_string())
        })
    }

    /// Provider: `accepted` → `closed`.
    pub fn close(&self, id: &str) -> Result<Value, ApiError> {
        self.act(id, Action::Close, |_| {})
    }

    /// The detail object of `GET /usage/files/{id}`.
    pub fn file_json(&self, id: &str) -> Result<Value, ApiError> {
        self.with_file(id, |file, world| {
            Ok(file.detail_json(&world.catalogue, self.storage()))
        })
    }

    /// 404 unless the file exists; lets endpoints answer "not found" before reading a body.
    pub(crate) fn require_file(&self, id: &str) -> Result<(), ApiError> {
        match self.lock().files.contains_key(id) {
            true => Ok(()),
            false => Err(ApiError::not_found("Usage file", id)),
        }
    }

    /// Runs `answer` over the list renderings of the files `query` can match: the ones it pins by id or
    /// external_id (the lookups filing makes all the time), or all. Only files that changed
    /// since the last listing are rendered again.
    pub(crate) fn with_file_list<R>(
        &self,
        query: &ListRequest,
        answer: impl FnOnce(Vec<&Value>) -> R,
    ) -> R {
        let mut inner = self.lock();
        let Inner {
            world,
            files,
            file_list_cache,
            ..
        } = &mut *inner;
        let chosen: Vec<&UsageFile> = match (query.pinned("id"), query.pinned("external_id")) {
            (Some(ids), _) => {
                let mut ids = ids;
                ids.sort_unstable();
                ids.dedup();
                ids.into_iter().filter_map(|id| files.get(id)).collect()
            }
            (None, Some(external_ids)) => files
                .values()
                .filter(|file| {
                    file.fields
                        .external_id
                        .as_deref()
                        .is_some_and(|own| external_ids.contains(&own))
                })
                .collect(),
            (None, None) => files.values().collect(),
        };
        for file in &chosen {
            if !file_list_cache.contains_key(&file.id) {
                file_list_cache.insert(file.id.clone(), file.list_json(&world.catalogue));
            }
        }
        answer(
            chosen
                .iter()
                .filter_map(|file| file_list_cache.get(&file.id))
                .collect(),
        )
    }

    /// How many files are in `status` now (cheap enough to poll).
    pub fn files_in(&self, status: &FileStatus) -> usize {
        self.lock()
            .files
            .values()
            .filter(|file| file.status == *status)
            .count()
    }

    pub fn files(&self) -> Vec<FileSummary> {
        self.lock()
            .files
            .values()
            .map(|file| FileSummary {
                id: file.id.clone(),
                external_id: file.fields.external_id.clone(),
                contract_id: file.contract_id.clone(),
                product_id: file.product_id.clone(),
                status: file.status.clone(),
                history: file.history.clone(),
                records: file.upload.as_ref().map_or(0, |u| u.records),
                error_detail: file.error_detail.clone(),
                rejection_note: file.rejection_note.clone(),
                acceptance_note: file.acceptance_note.clone(),
            })
            .collect()
    }

    /// The statuses a file went through, in order.
    pub fn status_history(&self, id: &str) -> Option<Vec<FileStatus>> {
        let inner = self.lock();
        Some(inner.files.get(id)?.history.clone())
    }

    /// The rows of the file's last processed upload.
    pub fn uploaded_rows(&self, id: &str) -> Option<Vec<UsageRow>> {
        let inner = self.lock();
        let upload = inner.files.get(id)?.upload.as_ref()?;
        upload.processed.then(|| upload.rows())
    }

    /// The bytes of the file's last upload, and whether processing finished.
    pub(crate) fn uploaded_bytes(&self, id: &str) -> Option<(Bytes, bool)> {
        let inner = self.lock();
        let upload = inner.files.get(id)?.upload.as_ref()?;
        Some((upload.bytes.clone(), upload.processed))
    }

    /// The bytes of upload number `upload` of the file (its link's), and whether processing
    /// finished; `None` once the file holds a newer upload, or none.
    pub(crate) fn stored_upload(&self, id: &str, upload: u64) -> Option<(Bytes, bool)> {
        let inner = self.lock();
        let file = inner.files.get(id)?;
        let stored = file.upload.as_ref()?;
        (file.generation == upload).then(|| (stored.bytes.clone(), stored.processed))
    }

    /// Runs `change` on the file under the lock (404 when it does not exist).
    fn with_file<R>(
        &self,
        id: &str,
        change: impl FnOnce(&mut UsageFile, &World) -> Result<R, ApiError>,
    ) -> Result<R, ApiError> {
        let mut inner = self.lock();
        let world = Arc::clone(&inner.world);
        inner.file_list_cache.remove(id);
        let file = inner
            .files
            .get_mut(id)
            .ok_or_else(|| ApiError::not_found("Usage file", id))?;
        change(file, &world)
    }

    fn act(
        &self,
        id: &str,
        action: Action,
        apply: impl FnOnce(&mut UsageFile),
    ) -> Result<Value, ApiError> {
        self.with_file(id, |file, world| {
            action.check(&file.id, &file.status)?;
            apply(file);
            if let Some(event) = action.event() {
                let actor = match action.by_provider() {
                    true => Actor::Provider,
                    false => Actor::Vendor,
                };
                file.stamp(event, actor);
            }
            if let Some(target) = action.target() {
                self.move_to(file, target);
            }
            Ok(file.detail_json(&world.catalogue, self.storage()))
        })
    }

    /// Changes the status, records it and tells subscribers (called under the lock).
    fn move_to(&self, file: &mut UsageFile, status: FileStatus) {
        file.status = status.clone();
        file.history.push(status.clone());
        self.publish(FileEvent {
            file_id: file.id.clone(),
            status,
        });
    }
}

fn check_note(field: &str, note: &str, required: bool) -> Result<(), ApiError> {
    if required && note.trim().is_empty() {
        return Err(ApiError::validation(vec![format!(
            "{field}: This field is required."
        )]));
    }
    if note.chars().count() > NOTE_MAX {
        return Err(ApiError::validation(vec![format!(
            "{field}: Ensure this field has no more than {NOTE_MAX} characters."
        )]));
    }
    Ok(())
}

/// `UF-YYYY-MM-NNNN-NNNN`, year and month of creation.
fn file_id(serial: u64) -> String {
    format!(
        "UF-{}-{:04}-{:04}",
        Utc::now().format("%Y-%m"),
        1000 + (serial / 10_000) % 9000,
        serial % 10_000
    )
}
