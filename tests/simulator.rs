//! The Connect simulator as any HTTP client sees it (reqwest, not our client library): it must
//! refuse what Connect refuses, follow the usage-file life cycle, validate workbooks with the
//! template rules, inject faults deterministically and generate consistent test data.

use std::collections::HashSet;
use std::time::Duration;

use connect_payg::config::AssetCriteria;
use connect_payg::connect::FileStatus;
use connect_payg::usage::workbook::{workbook_bytes, Cell, UsageRow, COLUMNS};
use connect_sim::catalogue::{Asset, Item};
use connect_sim::{
    BadKind, BadRowSpec, Catalogue, Faults, SeedSpec, SimConfig, Simulator, UsageFormat,
};
use payg_shared::period::{format_time, Period};
use reqwest::{multipart, Client, Response, StatusCode};
use serde_json::{json, Value};

struct Harness {
    sim: Simulator,
    http: Client,
}

impl Harness {
    async fn start() -> Harness {
        Harness::with(SimConfig::default(), SeedSpec::default()).await
    }

    async fn with(config: SimConfig, spec: SeedSpec) -> Harness {
        let sim = Simulator::start(config).await.expect("simulator starts");
        sim.state().seed(&spec);
        Harness {
            sim,
            http: Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.sim.base_url())
    }

    fn control_url(&self, path: &str) -> String {
        format!("http://{}/_sim/{path}", self.sim.server_address())
    }

    async fn get(&self, path: &str) -> Response {
        self.http
            .get(self.url(path))
            .header("Authorization", self.sim.api_key())
            .send()
            .await
            .expect("request sent")
    }

    async fn post_json(&self, path: &str, body: Value) -> Response {
        self.http
            .post(self.url(path))
            .header("Authorization", self.sim.api_key())
            .json(&body)
            .send()
            .await
            .expect("request sent")
    }

    async fn post_empty(&self, path: &str) -> Response {
        self.http
            .post(self.url(path))
            .header("Authorization", self.sim.api_key())
            .send()
            .await
            .expect("request sent")
    }

    async fn upload(&self, file_id: &str, workbook: Vec<u8>) -> Response {
        let part = multipart::Part::bytes(workbook).file_name("usage_file.xlsx");
        self.http
            .post(self.url(&format!("usage/files/{file_id}/upload")))
            .header("Authorization", self.sim.api_key())
            .multipart(multipart::Form::new().part("usage_file", part))
            .send()
            .await
            .expect("request sent")
    }

    async fn create_file(&self, contract_id: &str, product_id: &str, period: Period) -> Value {
        let response = self
            .post_json(
                "usage/files",
                new_file_body(contract_id, product_id, period),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    /// Polls the file until its status is one of `statuses`.
    async fn wait_for(&self, file_id: &str, statuses: &[&str]) -> Value {
        for _ in 0..1000 {
            let file: Value = self
                .get(&format!("usage/files/{file_id}"))
                .await
                .json()
                .await
                .unwrap();
            if statuses.contains(&file["status"].as_str().unwrap()) {
                return file;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{file_id} never reached {statuses:?}");
    }

    /// Uploads `workbook` to a fresh file of the group and waits for the outcome.
    async fn process(&self, group: &Group, workbook: Vec<u8>) -> Value {
        let file = self
            .create_file(&group.contract_id, &group.product_id, period())
            .await;
        let id = file["id"].as_str().unwrap();
        let uploaded = self.upload(id, workbook).await;
        assert_eq!(uploaded.status(), StatusCode::OK);
        self.wait_for(id, &["ready", "invalid"]).await
    }
}

fn period() -> Period {
    Period::parse("2024-01").unwrap()
}

fn new_file_body(contract_id: &str, product_id: &str, period: Period) -> Value {
    json!({
        "name": format!("{product_id} {contract_id} {period}"),
        "description": format!("PAYG usage for {}", period.human()),
        "note": "simulator test",
        "period": {"from": period.first_day().to_string(), "to": period.last_day().to_string()},
        "product": {"id": product_id},
        "contract": {"id": contract_id},
        "external_id": format!("{contract_id}:{product_id}:{period}"),
    })
}

async fn error_body(response: Response) -> Value {
    let body: Value = response.json().await.expect("a JSON error body");
    assert!(body["error_code"].is_string(), "{body}");
    assert!(!body["errors"].as_array().unwrap().is_empty(), "{body}");
    body
}

/// An in-scope (contract, product) with its assets and PPU items.
struct Group {
    contract_id: String,
    product_id: String,
    assets: Vec<Asset>,
    items: Vec<Item>,
}

fn in_scope_group(catalogue: &Catalogue) -> Group {
    let asset = catalogue
        .assets
        .iter()
        .find(|asset| catalogue.in_scope(asset))
        .expect("an in-scope asset");
    let product = catalogue.product(&asset.product_id).unwrap();
    Group {
        contract_id: asset.contract_id.clone(),
        product_id: asset.product_id.clone(),
        assets: catalogue
            .assets
            .iter()
            .filter(|a| a.contract_id == asset.contract_id && a.product_id == asset.product_id)
            .cloned()
            .collect(),
        items: product.ppu_items().cloned().collect(),
    }
}

fn valid_row(n: usize, item: &Item, asset: &Asset, quantity: f64) -> UsageRow {
    UsageRow {
        record_id: Cell::text(format!("rec-{n}")),
        item_search_criteria: Cell::text("item.mpn"),
        item_search_value: Cell::text(&item.mpn),
        quantity: Cell::Number(quantity),
        start_time_utc: Cell::text(format_time(period().start())),
        end_time_utc: Cell::text(format_time(period().end())),
        asset_search_criteria: Cell::text("asset.id"),
        asset_search_value: Cell::text(&asset.id),
        ..UsageRow::default()
    }
}

fn valid_rows(group: &Group) -> Vec<UsageRow> {
    group
        .items
        .iter()
        .enumerate()
        .map(|(n, item)| valid_row(n, item, &group.assets[0], 3.0))
        .collect()
}

/// A workbook written cell by cell, for shapes the workbook writer refuses to produce.
fn raw_workbook(sheet: &str, header: &[&str], rows: &[UsageRow]) -> Vec<u8> {
    let mut workbook = rust_xlsxwriter::Workbook::new();
    let sheet_ref = workbook.add_worksheet();
    sheet_ref.set_name(sheet).unwrap();
    for (column, name) in header.iter().enumerate() {
        sheet_ref.write_string(0, column as u16, *name).unwrap();
    }
    for (index, row) in rows.iter().enumerate() {
        for (column, cell) in row.cells().into_iter().enumerate() {
            let (r, c) = (index as u32 + 1, column as u16);
            match cell {
                Cell::Empty => {}
                Cell::Text(text) => {
                    sheet_ref.write_string(r, c, text).unwrap();
                }
                Cell::Number(number) => {
                    sheet_ref.write_number(r, c, *number).unwrap();
                }
            }
        }
    }
    workbook.save_to_buffer().unwrap()
}

#[tokio::test]
async fn every_request_needs_the_exact_api_key() {
    let h = Harness::start().await;
    let url = h.url("accounts?limit=1");
    for key in [None, Some("ApiKey wrong"), Some(&h.sim.api_key()[7..])] {
        let mut request = h.http.get(&url);
        if let Some(key) = key {
            request = request.header("Authorization", key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().contains_key("connect-version"));
        assert_eq!(error_body(response).await["error_code"], "AUTH_001");
    }
    let response = h.get("accounts?limit=1").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("connect-version"));
    assert_eq!(response.headers()["content-range"], "items 0-0/1");
    let accounts: Value = response.json().await.unwrap();
    assert!(accounts[0]["id"].as_str().unwrap().starts_with("VA-"));

    let response = h
        .http
        .post(h.url("usage/files"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn rql_filters_order_and_pages_with_a_cap() {
    let config = SimConfig {
        page_cap: 7,
        ..SimConfig::default()
    };
    let h = Harness::with(config, SeedSpec::default()).await;
    let catalogue = h.sim.state().catalogue();

    let response = h
        .get("contracts?and(in(type,(distribution)),in(status,(active)))&ordering(id)&limit=100&offset=0")
        .await;
    assert_eq!(response.headers()["content-range"], "items 0-2/3");
    let contracts: Vec<Value> = response.json().await.unwrap();
    assert!(contracts
        .iter()
        .all(|c| c["type"] == "distribution" && c["status"] == "active"));
    assert!(contracts
        .windows(2)
        .all(|w| w[0]["id"].as_str() < w[1]["id"].as_str()));
    assert!(contracts.iter().all(|c| c.get("marketplace").is_none()));

    let total = catalogue.assets.len();
    let response = h.get("assets?limit=100&offset=0").await;
    assert_eq!(
        response.headers()["content-range"],
        format!("items 0-6/{total}")
    );
    assert_eq!(response.json::<Vec<Value>>().await.unwrap().len(), 7);

    let response = h.get("assets?limit=0").await;
    assert_eq!(
        response.headers()["content-range"],
        format!("items 0-0/{total}")
    );
    assert!(response.json::<Vec<Value>>().await.unwrap().is_empty());

    let mut seen = HashSet::new();
    let mut offset = 0;
    loop {
        let page: Vec<Value> = h
            .get(&format!("assets?ordering(-id)&limit=5&offset={offset}"))
            .await
            .json()
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        seen.extend(page.iter().map(|a| a["id"].as_str().unwrap().to_string()));
        offset += 5;
    }
    assert_eq!(seen.len(), total);

    let (a, b) = (&catalogue.assets[0], &catalogue.assets[1]);
    let filter = format!(
        "assets?and(in(id,({},{})),eq(params.id,tenant_id))&select(-params,-configuration)&limit=10",
        a.id, b.id
    );
    let assets: Vec<Value> = h.get(&filter).await.json().await.unwrap();
    assert_eq!(assets.len(), 2);
    assert!(assets
        .iter()
        .all(|a| a.get("params").is_none() && a["marketplace"]["id"].is_string()));

    let by_param: Vec<Value> = h
        .get(&format!(
            "assets/?eq(params.value,{})&limit=10",
            a.param("tenant_id").unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_param[0]["id"], a.id.as_str());

    let qt = catalogue.products.iter().find(|p| p.is_qt()).unwrap();
    let items: Vec<Value> = h
        .get(&format!(
            "products/{}/items?in(type,(PPU,ppu))&limit=100",
            qt.id
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(items.len(), qt.ppu_items().count());
    let product: Value = h
        .get(&format!("products/{}", qt.id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(product["capabilities"]["ppu"]["schema"], "QT");

    for bad in [
        "assets?in(id,AS-1)",
        "assets?eq(id",
        "assets?frob(id,1)",
        "assets?limit=x",
    ] {
        let response = h.get(bad).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(error_body(response).await["error_code"], "RQL_001");
    }
    let missing = h.get("products/PRD-000-000-000").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    error_body(missing).await;
}

#[tokio::test]
async fn a_file_walks_the_whole_life_cycle_and_refuses_illegal_steps() {
    let h = Harness::start().await;
    let catalogue = h.sim.state().catalogue();
    let group = in_scope_group(&catalogue);
    let mut events = h.sim.state().subscribe_file_events();

    let created = h
        .create_file(&group.contract_id, &group.product_id, period())
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let shape = id.split('-').collect::<Vec<_>>();
    assert_eq!((shape[0], shape.len()), ("UF", 5), "{id}");
    assert_eq!(created["status"], "draft");
    let contract = catalogue.contract(&group.contract_id).unwrap();
    let currency = &catalogue
        .marketplace(&contract.marketplace_id)
        .unwrap()
        .currency;
    assert_eq!(created["currency"], currency.as_str());

    let refused = h.post_empty(&format!("usage/files/{id}/submit")).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(error_body(refused).await["errors"][0]
        .as_str()
        .unwrap()
        .contains("draft"));

    let rows = valid_rows(&group);
    // Workbooks carry their creation time: keep the very bytes uploaded.
    let workbook = workbook_bytes(rows.clone()).unwrap();
    let uploaded = h.upload(&id, workbook.clone()).await;
    assert_eq!(uploaded.status(), StatusCode::OK);
    assert_eq!(
        uploaded.json::<Value>().await.unwrap()["status"],
        "processing"
    );
    let ready = h.wait_for(&id, &["ready", "invalid"]).await;
    assert_eq!(ready["status"], "ready", "{}", ready["error_detail"]);
    assert_eq!(ready["records"]["valid"], rows.len());
    assert_eq!(h.sim.state().uploaded_rows(&id).unwrap(), rows);

    let link = ready["usage_file_uri"].as_str().unwrap();
    let downloaded = h
        .http
        .get(link)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(downloaded.as_ref(), workbook.as_slice());
    let records: Vec<Value> = h
        .get(&format!("usage/records?eq(usagefile.id,{id})&limit=100"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(records.len(), rows.len());
    assert_eq!(records[0]["asset"]["id"], group.assets[0].id.as_str());

    let submitted = h.post_empty(&format!("usage/files/{id}/submit/")).await;
    assert_eq!(
        submitted.json::<Value>().await.unwrap()["status"],
        "pending"
    );
    for action in ["submit", "delete", "close"] {
        let response = h.post_empty(&format!("usage/files/{id}/{action}")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{action}");
    }
    let again = h.upload(&id, workbook_bytes(rows.clone()).unwrap()).await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);

    let accepted = h
        .post_json(
            &format!("usage/files/{id}/accept"),
            json!({"acceptance_note": "fine"}),
        )
        .await;
    let accepted: Value = accepted.json().await.unwrap();
    assert_eq!(accepted["status"], "accepted");
    assert_eq!(accepted["acceptance_note"], "fine");
    assert!(accepted["events"]["submitted"]["at"].is_string());
    let closed: Value = h
        .http
        .post(h.control_url(&format!("files/{id}/close")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(closed["status"], "closed");

    let history = [
        FileStatus::Draft,
        FileStatus::Processing,
        FileStatus::Ready,
        FileStatus::Pending,
        FileStatus::Accepted,
        FileStatus::Closed,
    ];
    assert_eq!(h.sim.state().status_history(&id).unwrap(), history);
    let mut published = Vec::new();
    while let Ok(event) = events.try_recv() {
        assert_eq!(event.file_id, id);
        published.push(event.status);
    }
    assert_eq!(published, history);

    let listed: Vec<Value> = h
        .get(&format!(
            "usage/files?and(eq(external_id,{}),ne(status,deleted))&limit=10",
            created["external_id"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].get("usage_file_uri").is_none());

    let unknown = h.get("usage/files/UF-2024-01-0000-0000").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    error_body(unknown).await;
}

#[tokio::test]
async fn rejected_files_take_a_corrected_upload_and_drafts_can_be_deleted() {
    let h = Harness::start().await;
    let group = in_scope_group(&h.sim.state().catalogue());
    let file = h
        .create_file(&group.contract_id, &group.product_id, period())
        .await;
    let id = file["id"].as_str().unwrap();
    h.upload(id, workbook_bytes(valid_rows(&group)).unwrap())
        .await;
    h.wait_for(id, &["ready"]).await;
    h.post_empty(&format!("usage/files/{id}/submit")).await;

    let no_note = h
        .post_json(&format!("usage/files/{id}/reject"), json!({}))
        .await;
    assert_eq!(no_note.status(), StatusCode::BAD_REQUEST);
    let long_note = "x".repeat(201);
    let too_long = h
        .post_json(
            &format!("usage/files/{id}/reject"),
            json!({"rejection_note": long_note}),
        )
        .await;
    assert_eq!(too_long.status(), StatusCode::BAD_REQUEST);
    let rejected: Value = h
        .http
        .post(h.control_url(&format!("files/{id}/reject")))
        .json(&json!({"note": "too high"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rejected["status"], "rejected");
    assert_eq!(rejected["rejection_note"], "too high");

    let mut fixed = valid_rows(&group);
    fixed[0].quantity = Cell::Number(1.0);
    assert_eq!(
        h.upload(id, workbook_bytes(fixed.clone()).unwrap())
            .await
            .status(),
        StatusCode::OK
    );
    h.wait_for(id, &["ready"]).await;
    assert_eq!(h.sim.state().uploaded_rows(id).unwrap(), fixed);
    assert_eq!(
        h.sim.state().status_history(id).unwrap(),
        [
            FileStatus::Draft,
            FileStatus::Processing,
            FileStatus::Ready,
            FileStatus::Pending,
            FileStatus::Rejected,
            FileStatus::Processing,
            FileStatus::Ready
        ]
    );

    let draft = h
        .create_file(&group.contract_id, &group.product_id, period())
        .await;
    let draft_id = draft["id"].as_str().unwrap();
    let deleted: Value = h
        .post_empty(&format!("usage/files/{draft_id}/delete"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(deleted["status"], "deleted");
    let twice = h
        .post_empty(&format!("usage/files/{draft_id}/delete"))
        .await;
    assert_eq!(twice.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_body(twice).await["error_code"], "UFS_001");
}

#[tokio::test]
async fn create_and_update_refuse_what_connect_refuses() {
    let h = Harness::start().await;
    let catalogue = h.sim.state().catalogue();
    let group = in_scope_group(&catalogue);
    let good = new_file_body(&group.contract_id, &group.product_id, period());
    let inactive = catalogue
        .contracts
        .iter()
        .find(|c| !c.is_active_distribution())
        .unwrap();
    let no_ppu = catalogue
        .products
        .iter()
        .find(|p| p.ppu_schema.is_none())
        .unwrap();
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    let cases = [
        (with("name", json!("n".repeat(101))), "name"),
        (with("description", json!("d".repeat(201))), "description"),
        (with("note", json!("n".repeat(201))), "note"),
        (
            with("external_id", json!("has spaces in it")),
            "external_id",
        ),
        (
            with("period", json!({"from": "2024-01-31", "to": "2024-01-01"})),
            "period",
        ),
        (
            with("period", json!({"from": "01/01/2024", "to": "2024-01-31"})),
            "period",
        ),
        (with("product", json!({"id": "PRD-000-000-000"})), "product"),
        (with("product", json!({"id": no_ppu.id})), "product"),
        (
            with("contract", json!({"id": "CRD-00000-00000-00001"})),
            "contract",
        ),
        (with("contract", json!({"id": inactive.id})), "contract"),
        (with("name", Value::Null), "name"),
        (json!([1, 2]), "non_field_errors"),
    ];
    for (body, field) in cases {
        let response = h.post_json("usage/files", body.clone()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let error = error_body(response).await;
        assert!(
            error["errors"][0].as_str().unwrap().starts_with(field),
            "{error}"
        );
    }
    let not_json = h
        .http
        .post(h.url("usage/files"))
        .header("Authorization", h.sim.api_key())
        .header("Content-Type", "text/plain")
        .body(good.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(h.sim.state().files().is_empty());

    let created = h
        .post_json("usage/files", with("currency", json!("XTS")))
        .await;
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let updated: Value = h
        .http
        .put(h.url(&format!("usage/files/{id}")))
        .header("Authorization", h.sim.api_key())
        .json(&json!({"description": "changed"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            updated["description"].as_str(),
            updated["currency"].as_str()
        ),
        (Some("changed"), Some("XTS"))
    );
}

#[tokio::test]
async fn uploads_must_be_one_usage_file_part() {
    let h = Harness::start().await;
    let group = in_scope_group(&h.sim.state().catalogue());
    let file = h
        .create_file(&group.contract_id, &group.product_id, period())
        .await;
    let url = h.url(&format!(
        "usage/files/{}/upload",
        file["id"].as_str().unwrap()
    ));
    let workbook = workbook_bytes(valid_rows(&group)).unwrap();
    let send = |form: multipart::Form| {
        h.http
            .post(&url)
            .header("Authorization", h.sim.api_key())
            .multipart(form)
            .send()
    };
    let part = |bytes: Vec<u8>| multipart::Part::bytes(bytes).file_name("usage.xlsx");
    let forms = [
        multipart::Form::new().part("file", part(workbook.clone())),
        multipart::Form::new(),
        multipart::Form::new().part("usage_file", part(Vec::new())),
        multipart::Form::new().text("usage_file", "not a file"),
        multipart::Form::new()
            .part("usage_file", part(workbook.clone()))
            .text("note", "extra"),
    ];
    for form in forms {
        let response = send(form).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        error_body(response).await;
    }
    let json_upload = h
        .http
        .post(&url)
        .header("Authorization", h.sim.api_key())
        .json(&json!({"usage_file": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_upload.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        h.sim
            .state()
            .status_history(file["id"].as_str().unwrap())
            .unwrap(),
        [FileStatus::Draft]
    );
}

#[tokio::test]
async fn broken_workbooks_end_invalid_naming_the_problem() {
    let h = Harness::start().await;
    let catalogue = h.sim.state().catalogue();
    let group = in_scope_group(&catalogue);
    let integer_item = group
        .items
        .iter()
        .find(|i| i.precision == "integer")
        .unwrap()
        .clone();
    let foreign_asset = catalogue
        .assets
        .iter()
        .find(|a| a.contract_id != group.contract_id || a.product_id != group.product_id)
        .unwrap()
        .clone();
    let base = valid_rows(&group);
    let mutated = |change: &dyn Fn(&mut Vec<UsageRow>)| {
        let mut rows = base.clone();
        change(&mut rows);
        workbook_bytes(rows).unwrap()
    };
    let mut wrong_header: Vec<&str> = COLUMNS.to_vec();
    wrong_header[5] = "qty";
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        (
            "wrong sheet name",
            raw_workbook("records", &COLUMNS, &base),
            "usage_records".into(),
        ),
        (
            "wrong header",
            raw_workbook("usage_records", &wrong_header, &base),
            "qty".into(),
        ),
        (
            "duplicate record_id",
            mutated(&|r| r[1].record_id = r[0].record_id.clone()),
            "record_id".into(),
        ),
        (
            "unknown item",
            mutated(&|r| r[0].item_search_value = Cell::text("MPN-NOPE")),
            "MPN-NOPE".into(),
        ),
        (
            "asset of another contract",
            mutated(&|r| r[0].asset_search_value = Cell::text(&foreign_asset.id)),
            foreign_asset.id.clone(),
        ),
        (
            "negative quantity",
            mutated(&|r| r[0].quantity = Cell::Number(-1.0)),
            "negative".into(),
        ),
        (
            "fractional quantity on an integer item",
            mutated(&|r| {
                r[0] = valid_row(0, &integer_item, &group.assets[0], 2.5);
            }),
            "quantity".into(),
        ),
        (
            "bad time format",
            mutated(&|r| r[0].start_time_utc = Cell::text("2024-01-01T00:00:00")),
            "start_time_utc".into(),
        ),
        (
            "time outside the period",
            mutated(&|r| r[0].end_time_utc = Cell::text("2024-02-01 00:00:00")),
            "end_time_utc".into(),
        ),
        (
            "amount set",
            mutated(&|r| r[0].amount = Cell::Number(1.0)),
            "amount".into(),
        ),
        (
            "tier set",
            mutated(&|r| r[0].tier = Cell::Number(1.0)),
            "tier".into(),
        ),
    ];
    for (case, workbook, hint) in cases {
        let file = h.process(&group, workbook).await;
        assert_eq!(file["status"], "invalid", "{case}");
        let detail = file["error_detail"].as_str().unwrap();
        assert!(detail.contains(&hint), "{case}: {detail}");
        assert!(detail.chars().count() <= 200, "{case}: {detail}");
    }
    let valid = h.process(&group, workbook_bytes(base).unwrap()).await;
    assert_eq!(valid["status"], "ready", "{}", valid["error_detail"]);
}

/// The statuses of a dozen requests while every request draws a fault.
async fn fault_statuses(h: &Harness) -> Vec<u16> {
    let mut seen = Vec::new();
    for _ in 0..12 {
        let response = h.get("accounts?limit=1").await;
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(response.headers()["retry-after"], "7");
        }
        assert!(response.headers().contains_key("connect-version"));
        error_body(response).await;
        seen.push(status.as_u16());
    }
    seen
}

#[tokio::test]
async fn faults_are_injected_deterministically() {
    let h = Harness::start().await;
    let faults = Faults {
        error_rate: 1.0,
        retry_after_secs: 7,
        latency: Duration::ZERO,
        seed: 42,
    };
    h.sim.state().set_faults(faults.clone());
    let first = fault_statuses(&h).await;
    assert!(first.iter().all(|s| *s == 429 || *s == 500), "{first:?}");
    assert!(first.contains(&429) && first.contains(&500), "{first:?}");
    h.http
        .put(h.control_url("faults"))
        .json(&json!({"error_rate": 1.0, "retry_after_secs": 7, "seed": 42}))
        .send()
        .await
        .unwrap();
    assert_eq!(h.sim.state().faults(), faults);
    assert_eq!(fault_statuses(&h).await, first);

    // Some injected 500s hit after the create took effect: the answer is lost, the file exists.
    let group = in_scope_group(&h.sim.state().catalogue());
    let attempts = 20;
    for _ in 0..attempts {
        let body = new_file_body(&group.contract_id, &group.product_id, period());
        let status = h.post_json("usage/files", body).await.status();
        assert!(status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS);
    }
    let created = h.sim.state().files().len();
    assert!(created > 0 && created < attempts, "{created} of {attempts}");

    h.sim.state().clear_faults();
    assert_eq!(h.get("accounts?limit=1").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn requests_are_counted_by_route_template() {
    let h = Harness::start().await;
    h.sim.state().reset_request_counts();
    h.get("assets?limit=1").await;
    h.get("assets/?limit=1").await;
    h.get("usage/files/UF-2024-01-0000-0000").await;
    h.get("nowhere").await;
    let counts = h.sim.state().request_counts();
    assert_eq!(counts.get("GET", "/assets"), 2);
    assert_eq!(counts.get("GET", "/usage/files/{id}"), 1);
    assert_eq!(counts.total, 4);
    let over_http: Value = h
        .http
        .get(h.control_url("requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(over_http["total"], 4);
    let state: Value = h
        .http
        .get(h.control_url("state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(state["files"].as_array().unwrap().is_empty());
}

/// Seeds through the control API; answers the summary and the installed catalogue.
async fn seed_over_http(h: &Harness, spec: &Value) -> (Value, Value) {
    let summary: Value = h
        .http
        .post(h.control_url("seed"))
        .json(spec)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let catalogue = h.http.get(h.control_url("catalogue")).send().await.unwrap();
    (summary, catalogue.json().await.unwrap())
}

#[tokio::test]
async fn seeding_is_deterministic_over_http_and_in_process() {
    let h = Harness::start().await;
    let spec = json!({"seed": 5, "contracts": 4, "products": 3, "subscriptions": 60});
    let (summary, first) = seed_over_http(&h, &spec).await;
    assert_eq!(summary["assets"], 60);
    assert_eq!(seed_over_http(&h, &spec).await.1, first);
    let spec: SeedSpec = serde_json::from_value(spec).unwrap();
    assert_eq!(h.sim.state().catalogue(), Catalogue::generate(&spec));
}

#[tokio::test]
async fn expected_outcome_matches_the_generated_usage() {
    let catalogue = Catalogue::generate(&SeedSpec {
        subscriptions: 80,
        ..SeedSpec::default()
    });
    let spec = BadRowSpec::default();
    let usage = catalogue.vendor_usage(period(), &spec).unwrap();
    assert_eq!(usage, catalogue.vendor_usage(period(), &spec).unwrap());
    let expected = &usage.expected;

    assert_eq!(usage.csv.lines().count(), expected.records + 1);
    assert_eq!(
        usage.csv.lines().next().unwrap(),
        "subscription_id,item_mpn,quantity,start_time_utc,end_time_utc,record_id,record_note"
    );
    assert!(usage.csv.contains("\"\""), "notes with quotes are escaped");
    assert_eq!(
        expected.records,
        expected.good_rows() + expected.bad.len() + expected.out_of_scope
    );
    assert!(expected.out_of_scope > 0);
    let kinds = expected.bad_by_kind();
    assert!(
        BadKind::ALL.iter().all(|kind| kinds.contains_key(kind)),
        "{kinds:?}"
    );

    for group in &expected.groups {
        let contract = catalogue.contract(&group.contract_id).unwrap();
        let product = catalogue.product(&group.product_id).unwrap();
        assert!(contract.is_active_distribution() && product.is_qt());
        let marketplace = catalogue.marketplace(&contract.marketplace_id).unwrap();
        assert_eq!(group.currency, marketplace.currency);
        for row in &group.rows {
            let asset = catalogue.asset(&row.asset_id).unwrap();
            assert_eq!(
                (&asset.contract_id, &asset.product_id),
                (&group.contract_id, &group.product_id)
            );
            let item = product.ppu_items().find(|i| i.mpn == row.item_mpn).unwrap();
            let decimals = row.quantity.split_once('.').map_or(0, |(_, f)| f.len());
            let allowed = item
                .precision
                .trim_start_matches("decimal(")
                .trim_end_matches(')');
            assert!(
                item.precision == "integer" && decimals == 0
                    || decimals <= allowed.parse().unwrap_or(0)
            );
            assert!(
                row.start >= format_time(period().start())
                    && row.end <= format_time(period().end())
            );
        }
    }
    let asset_ids: HashSet<&str> = catalogue.assets.iter().map(|a| a.id.as_str()).collect();
    for bad in &expected.bad {
        let record = &usage.records[bad.index];
        let line = usage.csv.lines().nth(bad.line as usize - 1).unwrap();
        assert!(
            line.starts_with(record.subscription_id.as_deref().unwrap_or("")),
            "{line}"
        );
        match bad.kind {
            BadKind::UnknownSubscription => {
                assert!(!asset_ids.contains(record.subscription_id.as_deref().unwrap()))
            }
            BadKind::NegativeQuantity => {
                assert!(record.quantity.as_ref().unwrap().starts_with('-'))
            }
            BadKind::MissingField => assert!([
                &record.subscription_id,
                &record.item_mpn,
                &record.quantity,
                &record.start_time_utc,
                &record.end_time_utc
            ]
            .iter()
            .any(|field| field.is_none())),
            _ => {}
        }
    }

    let array: Vec<Value> = serde_json::from_str(&usage.render(UsageFormat::Json)).unwrap();
    assert_eq!(array.len(), expected.records);
    assert_eq!(
        usage.render(UsageFormat::JsonLines).lines().count(),
        expected.records
    );

    let by_external_id = BadRowSpec {
        subscription_key: AssetCriteria::ExternalId,
        ..spec.clone()
    };
    let external = catalogue.vendor_usage(period(), &by_external_id).unwrap();
    let external_ids: HashSet<&str> = catalogue
        .assets
        .iter()
        .map(|a| a.external_id.as_str())
        .collect();
    let good_positions: HashSet<usize> = (0..external.records.len())
        .filter(|i| !external.expected.bad.iter().any(|b| b.index == *i))
        .collect();
    for index in good_positions {
        let value = external.records[index].subscription_id.as_deref().unwrap();
        assert!(external_ids.contains(value), "{value}");
    }
    let unknown_param = BadRowSpec {
        subscription_key: AssetCriteria::Parameter("nope".into()),
        ..spec
    };
    assert!(catalogue.vendor_usage(period(), &unknown_param).is_err());
}

#[tokio::test]
async fn expected_groups_upload_as_ready_files() {
    let h = Harness::start().await;
    let catalogue = h.sim.state().catalogue();
    let usage = h
        .sim
        .state()
        .vendor_usage(period(), &BadRowSpec::default())
        .unwrap();
    let group = usage
        .expected
        .groups
        .iter()
        .max_by_key(|g| g.rows.len())
        .unwrap();
    let rows: Vec<UsageRow> = group
        .rows
        .iter()
        .enumerate()
        .map(|(n, row)| UsageRow {
            record_id: Cell::text(format!("rec-{n}")),
            item_search_criteria: Cell::text("item.mpn"),
            item_search_value: Cell::text(&row.item_mpn),
            quantity: Cell::Number(row.quantity.parse().unwrap()),
            start_time_utc: Cell::text(&row.start),
            end_time_utc: Cell::text(&row.end),
            asset_search_criteria: Cell::text("parameter.tenant_id"),
            asset_search_value: Cell::text(
                catalogue
                    .asset(&row.asset_id)
                    .unwrap()
                    .param("tenant_id")
                    .unwrap(),
            ),
            ..UsageRow::default()
        })
        .collect();
    let target = Group {
        contract_id: group.contract_id.clone(),
        product_id: group.product_id.clone(),
        assets: Vec::new(),
        items: Vec::new(),
    };
    let file = h
        .process(&target, workbook_bytes(rows.clone()).unwrap())
        .await;
    assert_eq!(file["status"], "ready", "{}", file["error_detail"]);
    assert_eq!(file["currency"], group.currency.as_str());
    assert_eq!(file["records"]["valid"], rows.len());
}

#[tokio::test]
async fn vendor_usage_and_webhooks_are_served_for_source_and_alert_tests() {
    let h = Harness::start().await;
    let usage = h
        .sim
        .state()
        .vendor_usage(period(), &BadRowSpec::default())
        .unwrap();
    let url = |query: &str| h.control_url(&format!("usage?{query}"));
    let month = "from=2024-01-01&to=2024-01-31";
    assert_eq!(
        h.http.get(url(month)).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );

    h.sim
        .state()
        .serve_usage(Some(period()), usage.csv.clone(), UsageFormat::Csv);
    h.sim
        .state()
        .require_usage_auth(Some("Bearer vendor-token".into()));
    assert_eq!(
        h.http.get(url(month)).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let served = h
        .http
        .get(url(month))
        .header("Authorization", "Bearer vendor-token")
        .send()
        .await
        .unwrap();
    assert_eq!(served.headers()["content-type"], "text/csv");
    assert_eq!(served.text().await.unwrap(), usage.csv);

    h.http
        .put(h.control_url("usage-auth"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    h.http
        .put(h.control_url("usage"))
        .json(&json!({"format": "jsonl", "body": usage.json_lines()}))
        .send()
        .await
        .unwrap();
    let other_month = h
        .http
        .get(url("from=2024-03-01&to=2024-03-31"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        other_month.headers()["content-type"],
        "application/x-ndjson"
    );
    for bad in [
        "from=2024-01-01",
        "from=2024-01-31&to=2024-01-01",
        "from=2024-01-01&to=2024-02-29",
    ] {
        assert_eq!(
            h.http.get(url(bad)).send().await.unwrap().status(),
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }

    let alert = json!({"text": "3 bad records", "period": "2024-01"});
    let stored = h
        .http
        .post(h.control_url("webhook"))
        .json(&alert)
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), StatusCode::OK);
    assert_eq!(h.sim.state().webhooks(), vec![alert.clone()]);
    let listed: Vec<Value> = h
        .http
        .get(h.control_url("webhooks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed, vec![alert]);
}
