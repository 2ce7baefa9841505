//! Shared by the tests that drive vip's electors against the in-process API server (no root).

/// A kube client of the in-process API server, as the node `token` (the server applies
/// faults per bearer token).
pub fn kube_client(server: &fake_apiserver::FakeApiServer, token: &str) -> kube::Client {
    let mut cfg = kube::Config::new(server.url().parse().unwrap());
    cfg.headers.push((
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    ));
    kube::Client::try_from(cfg).unwrap()
}
