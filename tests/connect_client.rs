//! The Connect client against real servers on loopback: the built-in simulator for the REST
//! behaviour (paging, RQL, the usage-file life cycle, errors, retries), and a tiny TLS server
//! for `SSL_CERT_FILE`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;

use connect_payg::config::Secret;
use connect_payg::connect::{Asset, FileStatus, NewUsageFile, Reference, UsageFile, UsagePeriod};
use connect_payg::connect::{ClientOptions, ConnectClient, ConnectError, Query, Rql};
use connect_payg::usage::workbook::{workbook_bytes, Cell, UsageRow};
use connect_sim::catalogue::Product;
use connect_sim::{Faults, SeedSpec, SimConfig, Simulator};
use payg_shared::period::{format_time, Period};

/// Test worlds report January 2024.
fn period() -> Period {
    Period::new(2024, 1).unwrap()
}

/// Client options for tests: production behaviour, but backoff in milliseconds.
fn fast(base_url: String, api_key: &str) -> ClientOptions {
    ClientOptions {
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        ..ClientOptions::new(base_url, Secret::new(api_key))
    }
}

/// A simulator seeded with the default test world, and a client for it.
async fn simulator(page_cap: usize) -> (Simulator, ConnectClient) {
    let sim = Simulator::start(SimConfig {
        page_cap,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    sim.state().seed(&SeedSpec::default());
    let client = ConnectClient::new(fast(sim.base_url(), sim.api_key())).unwrap();
    (sim, client)
}

/// An in-scope asset and its product, as the simulator knows them.
fn reportable(sim: &Simulator) -> (connect_sim::catalogue::Asset, Product) {
    let catalogue = sim.state().catalogue();
    let asset = catalogue
        .assets
        .iter()
        .find(|asset| catalogue.in_scope(asset))
        .expect("the default world has in-scope assets")
        .clone();
    let product = catalogue.product(&asset.product_id).unwrap().clone();
    (asset, product)
}

fn new_file(contract_id: &str, product_id: &str, tag: &str) -> NewUsageFile {
    let period = period();
    NewUsageFile {
        name: format!("{product_id} {contract_id} {period}"),
        description: String::new(),
        note: Some(format!("connect_client test {tag}")),
        period: UsagePeriod::new(period.first_day(), period.last_day()),
        currency: "USD".into(),
        product: Reference::id(product_id),
        contract: Reference::id(contract_id),
        external_id: format!("{contract_id}:{product_id}:{period}:{tag}"),
    }
}

/// A workbook with one record per PPU item of `product` for `asset`; `quantity` is written as
/// given, so a fractional one makes integer items invalid.
fn workbook(asset: &connect_sim::catalogue::Asset, product: &Product, quantity: f64) -> Bytes {
    let period = period();
    let rows = product.ppu_items().map(|item| UsageRow {
        record_id: Cell::text(format!("{}-{}-{}", asset.id, item.mpn, period.compact())),
        item_search_criteria: Cell::text("item.mpn"),
        item_search_value: Cell::text(&item.mpn),
        quantity: Cell::Number(quantity),
        start_time_utc: Cell::text(format_time(period.start())),
        end_time_utc: Cell::text(format_time(period.end())),
        asset_search_criteria: Cell::text("asset.id"),
        asset_search_value: Cell::text(&asset.id),
        ..UsageRow::default()
    });
    Bytes::from(workbook_bytes(rows).unwrap())
}

/// Polls the file until the platform has finished processing it.
async fn processed(client: &ConnectClient, id: &str) -> UsageFile {
    for _ in 0..500 {
        let file = client.usage_file(id).await.unwrap();
        if file.status == FileStatus::Ready || file.status == FileStatus::Invalid {
            return file;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("usage file {id} never left processing");
}

/// A test CA and a server certificate it signed for 127.0.0.1 (valid 2000–2100).
const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBpTCCAUugAwIBAgIURZ7vHdabTaLkzSEcebWK/sUQhNUwCgYIKoZIzj0EAwIw
HzEdMBsGA1UEAwwUY29ubmVjdC1wYXlnIHRlc3QgQ0EwIBcNMjYxMTI1MDExMzQy
WhgPMjEyNjExMDEwMTEzNDJaMB8xHTAbBgNVBAMMFGNvbm5lY3QtcGF5ZyB0ZXN0
IENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEH6tCMhNGw7PJg5XhOlMLWHFd
LTryuaOTXMUUecVlaUOpuHyBXZpqhV1dCBE4+LE+PBsA6EXaqSURkyOn2ShlCqNj
MGEwHQYDVR0OBBYEFLv7YNS4EVNIDuHGiXN/hsam0jaqMB8GA1UdIwQYMBaAFLv7
YNS4EVNIDuHGiXN/hsam0jaqMA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/BAQD
AgEGMAoGCCqGSM49BAMCA0gAMEUCIDxOYGeq9CZtdapx0UAGtq2oqx9LMoiNhEEC
AgcSxf+XAiEA37FjW3cMmyzUh4EQkHa0evn8KmUJcF/bmsP42ps+7bo=
-----END CERTIFICATE-----
";
const TEST_SERVER_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBuDCCAV2gAwIBAgIBATAKBggqhkjOPQQDAjAfMR0wGwYDVQQDDBRjb25uZWN0
LXBheWcgdGVzdCBDQTAgFw0wMDAxMDEwMDAwMDBaGA8yMTAwMDEwMTAwMDAwMFow
FDESMBAGA1UEAwwJbG9jYWxob3N0MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE
2mui68WtHLvC6dlRi/t03F9IGX9WNxrcMOcj5Jvm8KyQI3rNa2ifXiDwTL/aLi9p
5/57BB+niDVQOwVegZMyhaOBkjCBjzAaBgNVHREEEzARhwR/AAABgglsb2NhbGhv
c3QwEwYDVR0lBAwwCgYIKwYBBQUHAwEwDAYDVR0TAQH/BAIwADAOBgNVHQ8BAf8E
BAMCB4AwHQYDVR0OBBYEFBuinCNXRh+de0/v/FKnKnatu0uJMB8GA1UdIwQYMBaA
FLv7YNS4EVNIDuHGiXN/hsam0jaqMAoGCCqGSM49BAMCA0kAMEYCIQDhVmdvCO2u
4H1mVVKk74Oyd10G4SMhBYU7Qd5NaaGGUgIhAKxx98XeMPOd8mLoWkadCSR4z2ES
xSqO3LNKVj+iOhhF
-----END CERTIFICATE-----
";
const TEST_SERVER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg7LUkTxHC2MSraZNf
ZDvSUUmBH+n8DH8WWZ/DFNe9w1KhRANCAATaa6Lrxa0cu8Lp2VGL+3TcX0gZf1Y3
Gtww5yPkm+bwrJAjes1raJ9eIPBMv9ouL2nn/nsEH6eINVA7BV6BkzKF
-----END PRIVATE KEY-----
";

/// Serves one HTTPS answer with the test certificate; returns the base URL.
fn one_shot_tls_server(body: &'static str) -> String {
    let certs = rustls_pemfile::certs(&mut TEST_SERVER_CERT.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut TEST_SERVER_KEY.as_bytes())
        .unwrap()
        .unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        // Refused handshakes (the client without the CA) end the connection; keep serving.
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let connection = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(connection, stream);
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(answer.as_bytes());
            let _ = tls.flush();
        }
    });
    format!("https://127.0.0.1:{port}/public/v1")
}

#[tokio::test]
async fn ssl_cert_file_adds_a_trusted_ca() {
    let base_url = one_shot_tls_server(r#"{"id": "MP-1", "currency": "EUR"}"#);
    let untrusting = ConnectClient::new(ClientOptions {
        max_attempts: 1,
        ..ClientOptions::new(&base_url, Secret::new("ApiKey SU-1:k"))
    })
    .unwrap();
    let error = untrusting.marketplace("MP-1").await.unwrap_err();
    assert!(
        matches!(error, ConnectError::Transport { .. }),
        "an unknown CA is refused: {error}"
    );

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, TEST_CA).unwrap();
    let trusting = ConnectClient::new(ClientOptions {
        extra_ca_file: Some(ca_file),
        ..ClientOptions::new(&base_url, Secret::new("ApiKey SU-1:k"))
    })
    .unwrap();
    let marketplace = trusting.marketplace("MP-1").await.unwrap();
    assert_eq!(marketplace.currency.as_deref(), Some("EUR"));
}

#[tokio::test]
async fn pages_capped_by_the_server_are_all_read() {
    let (sim, client) = simulator(10).await;
    let catalogue = sim.state().catalogue();
    let total = catalogue.assets.len();
    assert!(total > 30, "several capped pages: {total}");

    let first = client
        .list_page::<Asset>("assets", &Query::default(), 100, 0)
        .await
        .unwrap();
    assert_eq!(
        first.items.len(),
        10,
        "the server capped the page below the limit"
    );
    assert_eq!(first.range.unwrap().total, Some(total as u64));

    sim.state().reset_request_counts();
    let assets = client
        .assets(Query::default().ordering(["id"]))
        .await
        .unwrap();
    let mut ids: Vec<&str> = assets.iter().map(|a| a.id.as_str()).collect();
    let mut expected: Vec<&str> = catalogue.assets.iter().map(|a| a.id.as_str()).collect();
    expected.sort();
    assert_eq!(ids, expected, "every asset once, in order");
    assert_eq!(
        sim.state().request_count("GET", "/assets"),
        total.div_ceil(10) as u64
    );

    let streamed: Vec<Asset> = client
        .list_stream("assets", Query::default().ordering(["-id"]))
        .try_collect()
        .await
        .unwrap();
    ids = streamed.iter().map(|a| a.id.as_str()).collect();
    expected.reverse();
    assert_eq!(ids, expected);

    assert_eq!(client.count("assets", "").await.unwrap(), total as u64);
    let active = catalogue
        .assets
        .iter()
        .filter(|a| a.status == "active")
        .count();
    assert_eq!(
        client
            .count("assets", &Rql::eq("status", "active").to_string())
            .await
            .unwrap(),
        active as u64
    );
}

#[tokio::test]
async fn rql_filters_select_what_they_say() {
    let (sim, client) = simulator(100).await;
    let catalogue = sim.state().catalogue();

    let contracts = client
        .contracts(Rql::one_of("type", ["distribution"]) & Rql::one_of("status", ["active"]))
        .await
        .unwrap();
    let mut expected: Vec<&str> = catalogue
        .contracts
        .iter()
        .filter(|c| c.is_active_distribution())
        .map(|c| c.id.as_str())
        .collect();
    expected.sort();
    let got: Vec<&str> = contracts.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(got, expected);
    assert!(contracts.iter().all(|c| c.contract_type == "distribution"));

    let (asset, product) = reportable(&sim);
    let others: Vec<&str> = catalogue
        .assets
        .iter()
        .filter(|a| a.product_id == asset.product_id && a.id != asset.id)
        .map(|a| a.id.as_str())
        .take(2)
        .collect();
    let wanted: Vec<&str> = std::iter::once(asset.id.as_str())
        .chain(others.iter().copied())
        .collect();
    let found = client
        .assets(
            Query::new(Rql::eq("product.id", &asset.product_id) & Rql::one_of("id", &wanted))
                .select(["-configuration"])
                .ordering(["id"]),
        )
        .await
        .unwrap();
    let mut wanted_sorted = wanted.clone();
    wanted_sorted.sort();
    assert_eq!(
        found.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        wanted_sorted
    );
    let mine = found.iter().find(|a| a.id == asset.id).unwrap();
    assert_eq!(mine.contract.id, asset.contract_id);
    assert_eq!(mine.marketplace.id, asset.marketplace_id);
    assert_eq!(
        mine.external_id.as_deref(),
        Some(asset.external_id.as_str())
    );
    if let Some(recon) = asset.params.iter().find(|p| p.reconciliation) {
        assert_eq!(mine.reconciliation_param().unwrap().id, recon.id);
        assert_eq!(mine.param_value(&recon.id), Some(recon.value.as_str()));
    }

    let not_terminated = client
        .assets(Query::new(!Rql::eq("status", "terminated")))
        .await
        .unwrap();
    assert_eq!(
        not_terminated.len(),
        catalogue
            .assets
            .iter()
            .filter(|a| a.status != "terminated")
            .count()
    );
    let by_external_id = client
        .assets(Query::new(
            Rql::eq("external_id", &asset.external_id) | Rql::null("external_id"),
        ))
        .await
        .unwrap();
    assert_eq!(by_external_id.len(), 1);
    assert_eq!(by_external_id[0].id, asset.id);

    let remote = client.product(&product.id).await.unwrap();
    assert!(remote.is_qt());
    let items = client.product_items(&product.id).await.unwrap();
    let mut item_ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    item_ids.sort();
    let mut ppu_ids: Vec<&str> = product.ppu_items().map(|i| i.id.as_str()).collect();
    ppu_ids.sort();
    assert_eq!(item_ids, ppu_ids, "PPU items only");
    assert!(items
        .iter()
        .all(|i| i.precision.is_some() && i.mpn.is_some()));
    let not_qt = catalogue.products.iter().find(|p| !p.is_qt()).unwrap();
    assert!(!client.product(&not_qt.id).await.unwrap().is_qt());

    let marketplace = client.marketplace(&asset.marketplace_id).await.unwrap();
    assert_eq!(
        marketplace.currency.as_deref(),
        Some(
            catalogue
                .marketplace(&asset.marketplace_id)
                .unwrap()
                .currency
                .as_str()
        )
    );
}

#[tokio::test]
async fn a_usage_file_walks_its_whole_life_cycle() {
    let (sim, client) = simulator(100).await;
    let (asset, product) = reportable(&sim);
    let new = new_file(&asset.contract_id, &asset.product_id, "life");

    let created = client
        .usage_file(&client.create_usage_file(&new).await.unwrap())
        .await
        .unwrap();
    assert!(created.status == FileStatus::Draft);
    assert_eq!(
        created.external_id.as_deref(),
        Some(new.external_id.as_str())
    );
    assert_eq!(created.product_id(), Some(asset.product_id.as_str()));
    assert_eq!(created.contract_id(), Some(asset.contract_id.as_str()));
    let listed = client
        .usage_files(Rql::eq("external_id", &new.external_id) & Rql::ne("status", "deleted"))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, created.id);

    let uploading = client
        .upload_usage_file(&created.id, workbook(&asset, &product, 3.0))
        .await
        .unwrap();
    assert!(
        uploading.status.is_processing() || uploading.status == FileStatus::Ready,
        "{}",
        uploading.status
    );
    let ready = processed(&client, &created.id).await;
    assert!(ready.status == FileStatus::Ready, "{ready:?}");
    assert_eq!(
        sim.state().uploaded_rows(&created.id).unwrap().len(),
        product.ppu_items().count()
    );

    let pending = client.submit_usage_file(&created.id).await.unwrap();
    assert!(pending.status == FileStatus::Pending);
    let accepted = client
        .accept_usage_file(&created.id, "looks right")
        .await
        .unwrap();
    assert!(accepted.status == FileStatus::Accepted);
    assert_eq!(accepted.acceptance_note.as_deref(), Some("looks right"));
    let closed = client.close_usage_file(&created.id).await.unwrap();
    assert!(closed.status == FileStatus::Closed);
    let history = sim.state().status_history(&created.id).unwrap();
    assert_eq!(history.first(), Some(&FileStatus::Draft));
    assert!(
        history.ends_with(&[
            FileStatus::Ready,
            FileStatus::Pending,
            FileStatus::Accepted,
            FileStatus::Closed
        ]),
        "{history:?}"
    );
}

#[tokio::test]
async fn rejected_invalid_and_deleted_files() {
    let (sim, client) = simulator(100).await;
    let (asset, product) = reportable(&sim);

    // Rejected by the provider, then corrected and resubmitted on the same file.
    let file = client
        .usage_file(
            &client
                .create_usage_file(&new_file(&asset.contract_id, &asset.product_id, "reject"))
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    client
        .upload_usage_file(&file.id, workbook(&asset, &product, 1000.0))
        .await
        .unwrap();
    assert!(processed(&client, &file.id).await.status == FileStatus::Ready);
    client.submit_usage_file(&file.id).await.unwrap();
    let rejected = client
        .reject_usage_file(&file.id, "Quantity looks too high")
        .await
        .unwrap();
    assert!(rejected.status == FileStatus::Rejected);
    assert_eq!(
        rejected.rejection_note.as_deref(),
        Some("Quantity looks too high")
    );
    client
        .upload_usage_file(&file.id, workbook(&asset, &product, 10.0))
        .await
        .unwrap();
    assert!(processed(&client, &file.id).await.status == FileStatus::Ready);
    assert!(client.submit_usage_file(&file.id).await.unwrap().status == FileStatus::Pending);

    // An invalid workbook (fractional quantity on an integer item), then a fixed one.
    let file = client
        .usage_file(
            &client
                .create_usage_file(&new_file(&asset.contract_id, &asset.product_id, "invalid"))
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    client
        .upload_usage_file(&file.id, workbook(&asset, &product, 1.5))
        .await
        .unwrap();
    let invalid = processed(&client, &file.id).await;
    assert!(invalid.status == FileStatus::Invalid, "{invalid:?}");
    let detail = invalid.error_detail.unwrap_or_default();
    assert!(
        detail.contains("quantity"),
        "error_detail says what is wrong: {detail}"
    );
    client
        .upload_usage_file(&file.id, workbook(&asset, &product, 2.0))
        .await
        .unwrap();
    assert!(processed(&client, &file.id).await.status == FileStatus::Ready);
    let deleted = client.delete_usage_file(&file.id).await.unwrap();
    assert!(deleted.status == FileStatus::Deleted);

    // A draft can be deleted straight away.
    let draft = client
        .usage_file(
            &client
                .create_usage_file(&new_file(&asset.contract_id, &asset.product_id, "draft"))
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(client.delete_usage_file(&draft.id).await.unwrap().status == FileStatus::Deleted);
}

#[tokio::test]
async fn an_illegal_transition_is_a_clear_error_and_not_retried() {
    let (sim, client) = simulator(100).await;
    let (asset, _) = reportable(&sim);
    let draft = client
        .usage_file(
            &client
                .create_usage_file(&new_file(&asset.contract_id, &asset.product_id, "draft"))
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    sim.state().reset_request_counts();
    let error = client.submit_usage_file(&draft.id).await.unwrap_err();
    let ConnectError::Api {
        status,
        code,
        errors,
        method,
        path,
    } = &error
    else {
        panic!("expected an API error, got {error:?}");
    };
    assert_eq!((*status, method.as_str()), (400, "POST"));
    assert_eq!(path, &format!("usage/files/{}/submit", draft.id));
    assert!(code.is_some(), "{error}");
    assert!(errors.iter().any(|e| e.contains("draft")), "{error}");
    assert!(!error.is_ambiguous());
    assert_eq!(
        sim.state()
            .request_count("POST", "/usage/files/{id}/submit"),
        1,
        "a 400 is never retried"
    );

    let missing = client.usage_file("UF-2024-01-0000-0000").await.unwrap_err();
    assert_eq!(missing.status(), Some(404));
}

#[tokio::test]
async fn a_bad_key_is_a_typed_401_without_the_key() {
    let (sim, _) = simulator(100).await;
    let wrong = "ApiKey SU-000-000-001:wrong-secret";
    let client = ConnectClient::new(fast(sim.base_url(), wrong)).unwrap();
    let error = client.contracts(Rql::new()).await.unwrap_err();
    assert_eq!(error.status(), Some(401));
    assert_eq!(error.code(), Some("AUTH_001"));
    assert!(!error.to_string().contains("wrong-secret"), "{error}");
    assert!(!format!("{error:?}").contains("wrong-secret"));
    assert_eq!(
        sim.state().request_count("GET", "/contracts"),
        1,
        "no retries"
    );

    // The same pool with the right key works.
    let fixed = client.with_api_key(Secret::new(sim.api_key()));
    assert!(!fixed.contracts(Rql::new()).await.unwrap().is_empty());
}

#[tokio::test]
async fn retries_are_bounded() {
    let (sim, _) = simulator(100).await;
    let client = ConnectClient::new(ClientOptions {
        max_attempts: 3,
        ..fast(sim.base_url(), sim.api_key())
    })
    .unwrap();
    sim.state().set_faults(Faults {
        error_rate: 1.0,
        retry_after_secs: 0,
        ..Faults::default()
    });
    let error = client.contracts(Rql::new()).await.unwrap_err();
    assert!(matches!(error.status(), Some(429 | 500)), "{error}");
    assert_eq!(sim.state().request_count("GET", "/contracts"), 3);
}

/// Under heavy injected faults (429s, 500s before and *after* the request took effect) every
/// operation still ends as if nothing had gone wrong, and no create or action is duplicated.
#[tokio::test]
async fn faults_are_survived_without_duplicates() {
    let (sim, _) = simulator(10).await;
    let client = ConnectClient::new(ClientOptions {
        max_attempts: 40,
        ..fast(sim.base_url(), sim.api_key())
    })
    .unwrap();
    let (asset, product) = reportable(&sim);
    let total_assets = sim.state().catalogue().assets.len();
    for seed in 1..=8 {
        sim.state().set_faults(Faults {
            error_rate: 0.4,
            retry_after_secs: 0,
            seed,
            ..Faults::default()
        });
        sim.state().reset_request_counts();
        let tag = format!("faults-{seed}");
        let new = new_file(&asset.contract_id, &asset.product_id, &tag);

        assert_eq!(
            client.assets(Query::default()).await.unwrap().len(),
            total_assets
        );
        let file = client
            .usage_file(&client.create_usage_file(&new).await.unwrap())
            .await
            .unwrap();
        client
            .upload_usage_file(&file.id, workbook(&asset, &product, 4.0))
            .await
            .unwrap();
        assert!(processed(&client, &file.id).await.status == FileStatus::Ready);
        let pending = client.submit_usage_file(&file.id).await.unwrap();
        assert!(
            pending.status == FileStatus::Pending,
            "seed {seed}: {pending:?}"
        );

        let made: Vec<_> = sim
            .state()
            .files()
            .into_iter()
            .filter(|f| f.external_id.as_deref() == Some(new.external_id.as_str()))
            .collect();
        assert_eq!(made.len(), 1, "seed {seed}: exactly one file: {made:?}");
        let history = &made[0].history;
        assert_eq!(
            history
                .iter()
                .filter(|s| **s == FileStatus::Pending)
                .count(),
            1,
            "seed {seed}: submitted once: {history:?}"
        );
        assert!(
            sim.state().request_counts().total > 10,
            "seed {seed}: faults were injected"
        );
    }
    sim.state().clear_faults();
}

#[tokio::test]
async fn concurrency_is_limited_and_headers_are_sent() {
    use axum::http::HeaderMap;
    use axum::routing::get;

    #[derive(Default)]
    struct Seen {
        in_flight: AtomicUsize,
        most: AtomicUsize,
        headers: Mutex<Vec<HeaderMap>>,
    }
    let seen = Arc::new(Seen::default());
    let handler = {
        let seen = seen.clone();
        move |headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                seen.most.fetch_max(now, Ordering::SeqCst);
                seen.headers.lock().unwrap().push(headers);
                tokio::time::sleep(Duration::from_millis(20)).await;
                seen.in_flight.fetch_sub(1, Ordering::SeqCst);
                axum::Json(serde_json::json!({"id": "MP-1", "currency": "EUR"}))
            }
        }
    };
    let app = axum::Router::new().route("/public/v1/marketplaces/{id}", get(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/public/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let key = "ApiKey SU-1:exact value";
    let client = ConnectClient::new(ClientOptions {
        concurrency: 2,
        ..fast(base_url, key)
    })
    .unwrap()
    .with_header("EAAS_TASK_ID", "TQ-1");
    let calls = (0..8).map(|_| {
        let client = client.clone();
        async move { client.marketplace("MP-1").await }
    });
    for result in futures::future::join_all(calls).await {
        assert_eq!(result.unwrap().currency.as_deref(), Some("EUR"));
    }
    assert!(
        seen.most.load(Ordering::SeqCst) <= 2,
        "at most API_CONCURRENCY in flight"
    );

    let headers = seen.headers.lock().unwrap();
    assert_eq!(headers.len(), 8);
    let first = &headers[0];
    assert_eq!(first["authorization"], key, "the key is sent verbatim");
    assert!(first["user-agent"]
        .to_str()
        .unwrap()
        .starts_with("connect-payg/"));
    assert_eq!(first["accept"], "application/json");
    assert_eq!(first["eaas_task_id"], "TQ-1");
}

/// Whether the proxy drops a POST before forwarding it or loses the answer after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loss {
    BeforeEffect,
    AfterEffect,
}

/// A proxy in front of the simulator that answers the first POST to every path with a 500,
/// either without forwarding it or after the simulator has acted on it.
async fn lossy_proxy(target: String, loss: Loss) -> String {
    use axum::body::Body;
    use axum::extract::Request;
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};

    let failed = Arc::new(Mutex::new(std::collections::HashSet::<String>::new()));
    let http = reqwest::Client::new();
    let forward = move |request: Request| {
        let (failed, http, target) = (failed.clone(), http.clone(), target.clone());
        async move {
            let (parts, body) = request.into_parts();
            let path = parts.uri.path().to_string();
            let lose = parts.method == axum::http::Method::POST
                && failed.lock().unwrap().insert(path.clone());
            let lost = || (StatusCode::INTERNAL_SERVER_ERROR, "proxy lost it").into_response();
            if lose && loss == Loss::BeforeEffect {
                return lost();
            }
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let mut outgoing = http.request(
                parts.method.clone(),
                format!("{target}{}", parts.uri.path_and_query().unwrap()),
            );
            for (name, value) in &parts.headers {
                if name != "host" {
                    outgoing = outgoing.header(name, value);
                }
            }
            let answer = outgoing.body(body).send().await.unwrap();
            if lose {
                return lost();
            }
            let mut response = Response::builder().status(answer.status());
            for (name, value) in answer.headers() {
                response = response.header(name, value);
            }
            response
                .body(Body::from(answer.bytes().await.unwrap()))
                .unwrap()
        }
    };
    let app = axum::Router::new().fallback(forward);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}/public/v1")
}

#[tokio::test]
async fn lost_answers_to_writes_are_resolved_by_rereading() {
    for loss in [Loss::BeforeEffect, Loss::AfterEffect] {
        let (sim, _) = simulator(100).await;
        let origin = sim.base_url().trim_end_matches("/public/v1").to_string();
        let client =
            ConnectClient::new(fast(lossy_proxy(origin, loss).await, sim.api_key())).unwrap();
        let (asset, product) = reportable(&sim);
        let new = new_file(&asset.contract_id, &asset.product_id, "lossy");

        let file = client
            .usage_file(&client.create_usage_file(&new).await.unwrap())
            .await
            .unwrap();
        assert_eq!(sim.state().files().len(), 1, "{loss:?}: no duplicate file");
        // Before: the first POST never arrived and the resend created the file. After: the
        // file was found by external_id and the POST was not sent again.
        assert_eq!(
            sim.state().request_count("POST", "/usage/files"),
            1,
            "{loss:?}"
        );

        client
            .upload_usage_file(&file.id, workbook(&asset, &product, 5.0))
            .await
            .unwrap();
        assert!(processed(&client, &file.id).await.status == FileStatus::Ready);

        let pending = client.submit_usage_file(&file.id).await.unwrap();
        assert!(pending.status == FileStatus::Pending, "{loss:?}");
        assert_eq!(
            sim.state()
                .request_count("POST", "/usage/files/{id}/submit"),
            1,
            "{loss:?}: submitted exactly once"
        );

        let accepted = client.accept_usage_file(&file.id, "ok").await.unwrap();
        assert!(accepted.status == FileStatus::Accepted, "{loss:?}");
        let closed = client.close_usage_file(&file.id).await.unwrap();
        assert!(closed.status == FileStatus::Closed, "{loss:?}");

        let draft = client
            .usage_file(
                &client
                    .create_usage_file(&new_file(&asset.contract_id, &asset.product_id, "lossy-2"))
                    .await
                    .unwrap(),
            )
            .await
            .unwrap();
        let deleted = client.delete_usage_file(&draft.id).await.unwrap();
        assert!(deleted.status == FileStatus::Deleted, "{loss:?}");
        let history = sim.state().status_history(&file.id).unwrap();
        assert_eq!(
            history
                .iter()
                .filter(|s| **s == FileStatus::Pending)
                .count(),
            1,
            "{loss:?}: {history:?}"
        );
    }
}
