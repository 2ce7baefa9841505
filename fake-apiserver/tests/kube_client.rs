//! The fake API server driven by kube-rs itself: what the controller will rely on.
use std::time::Duration;

use fake_apiserver::{FakeApiServer, Fault};
use futures::StreamExt;
use k8s_openapi::api::{coordination::v1::Lease, core::v1::ConfigMap};
use kube::{
    api::{Patch, PatchParams, PostParams},
    runtime::{reflector, watcher, WatchStreamExt},
    Api, Client, Config,
};

fn client(server: &FakeApiServer, token: &str) -> Client {
    let mut cfg = Config::new(server.url().parse().unwrap());
    cfg.headers.push((
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    ));
    cfg.read_timeout = Some(Duration::from_secs(2));
    Client::try_from(cfg).unwrap()
}

fn cm(name: &str, v: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "vip"}},
        "data": {"k": v},
    }))
    .unwrap()
}

#[tokio::test]
async fn crud_conflicts_and_errors_are_kubernetes_shaped() {
    let s = FakeApiServer::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client(&s, "a"), "kube-system");
    let created = api
        .create(&PostParams::default(), &cm("kubevip", "1"))
        .await
        .unwrap();
    let rv1: u64 = created
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert!(created.metadata.uid.is_some());
    // 409 AlreadyExists as a Status.
    let e = api
        .create(&PostParams::default(), &cm("kubevip", "1"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, kube::Error::Api(ref s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{e:?}"
    );
    // Merge patch moves the version forward.
    let patched = api
        .patch(
            "kubevip",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"k": "2"}})),
        )
        .await
        .unwrap();
    let rv2: u64 = patched
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv1);
    // PUT with the old version: 409 Conflict.
    let mut stale = created.clone();
    stale.data = Some([("k".to_string(), "3".to_string())].into());
    let e = api
        .replace("kubevip", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(
        matches!(e, kube::Error::Api(ref s) if s.code == 409 && s.reason == "Conflict"),
        "{e:?}"
    );
    // 404 NotFound.
    let e = api.get("nope").await.unwrap_err();
    assert!(
        matches!(e, kube::Error::Api(ref s) if s.code == 404),
        "{e:?}"
    );
    // LIST with limit/continue pages through everything.
    for i in 0..5 {
        api.create(&PostParams::default(), &cm(&format!("c{i}"), "x"))
            .await
            .unwrap();
    }
    let mut names = Vec::new();
    let mut pages = Vec::new();
    let mut lp = kube::api::ListParams::default().limit(2);
    loop {
        let page = api.list(&lp).await.unwrap();
        pages.push(page.items.len());
        names.extend(page.items.iter().filter_map(|c| c.metadata.name.clone()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(pages, [2, 2, 2], "pages of at most the limit");
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 6, "every object once: {names:?}");
    // Server-side apply creates, then updates.
    let leases: Api<Lease> = Api::namespaced(client(&s, "a"), "kube-system");
    let lease: Lease = serde_json::from_value(serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "plndr-cp-lock"}, "spec": {"holderIdentity": "node1"}
    }))
    .unwrap();
    let pp = PatchParams::apply("vip").force();
    let l = leases
        .patch("plndr-cp-lock", &pp, &Patch::Apply(&lease))
        .await
        .unwrap();
    assert_eq!(l.spec.unwrap().holder_identity.as_deref(), Some("node1"));
    let rv_created = l.metadata.resource_version.clone();
    let lease: Lease = serde_json::from_value(serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "plndr-cp-lock"}, "spec": {"holderIdentity": "node2"}
    }))
    .unwrap();
    let l = leases
        .patch("plndr-cp-lock", &pp, &Patch::Apply(&lease))
        .await
        .unwrap();
    assert_eq!(l.spec.unwrap().holder_identity.as_deref(), Some("node2"));
    assert_ne!(l.metadata.resource_version, rv_created, "updated in place");
    let got = leases.get("plndr-cp-lock").await.unwrap();
    assert_eq!(got.spec.unwrap().holder_identity.as_deref(), Some("node2"));
}

/// A kube-runtime reflector over `api`, polled in the background.
fn cache(api: Api<ConfigMap>) -> (reflector::Store<ConfigMap>, tokio::task::JoinHandle<()>) {
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .applied_objects();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        // Errors (a 410 among them) are reported, then the watcher recovers: keep polling.
        while stream.next().await.is_some() {}
    });
    (reader, task)
}

fn names_in(r: &reflector::Store<ConfigMap>) -> Vec<String> {
    let mut n: Vec<String> = r
        .state()
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    n.sort();
    n
}

/// Whether the cache comes to hold exactly `want` within 15 s.
async fn holds(r: &reflector::Store<ConfigMap>, want: &[&str]) -> bool {
    tokio::time::timeout(Duration::from_secs(15), async {
        while names_in(r) != want {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn watcher_lists_watches_and_old_versions_get_410() {
    let s = FakeApiServer::start().await.unwrap();
    // A watching client ("w") and a separate writer ("good").
    let watched: Api<ConfigMap> = Api::namespaced(client(&s, "w"), "default");
    let api: Api<ConfigMap> = Api::namespaced(client(&s, "good"), "default");
    api.create(&PostParams::default(), &cm("a", "1"))
        .await
        .unwrap();
    let (reader, task) = cache(watched);
    assert!(holds(&reader, &["a"]).await, "initial list");
    api.create(&PostParams::default(), &cm("b", "1"))
        .await
        .unwrap();
    assert!(holds(&reader, &["a", "b"]).await, "watch event");
    api.delete("a", &Default::default()).await.unwrap();
    assert!(holds(&reader, &["b"]).await, "delete seen");
    // A watch from a version older than the kept history: HTTP 200 and an ERROR event
    // carrying a 410 Status, which is what makes kube-runtime's watcher list again.
    api.create(&PostParams::default(), &cm("c", "1"))
        .await
        .unwrap();
    s.compact();
    let raw: Api<ConfigMap> = Api::namespaced(client(&s, "raw"), "default");
    let mut w = raw.watch(&Default::default(), "2").await.unwrap().boxed();
    match w.next().await {
        Some(Ok(kube::api::WatchEvent::Error(e))) => assert_eq!(e.code, 410, "{e:?}"),
        other => panic!("want ERROR 410, got {other:?}"),
    }
    assert!(
        holds(&reader, &["b", "c"]).await,
        "the open watch still delivers"
    );
    let reqs = s.requests();
    assert!(reqs
        .iter()
        .any(|r| r.contains("watch=true") && r.contains("allowWatchBookmarks=true")));
    task.abort();
}

/// kube-runtime's watcher, cut off while objects change and the history is compacted,
/// meets a 410 on its next watch and recovers by listing again.
#[tokio::test]
async fn watcher_relists_after_410() {
    let s = FakeApiServer::start().await.unwrap();
    let watched: Api<ConfigMap> = Api::namespaced(client(&s, "w"), "default");
    let api: Api<ConfigMap> = Api::namespaced(client(&s, "good"), "default");
    api.create(&PostParams::default(), &cm("a", "1"))
        .await
        .unwrap();
    let (reader, task) = cache(watched);
    assert!(holds(&reader, &["a"]).await);
    s.set_fault("w", Fault::DropStreams);
    api.create(&PostParams::default(), &cm("c", "1"))
        .await
        .unwrap();
    api.delete("a", &Default::default()).await.unwrap();
    s.compact();
    s.set_fault("w", Fault::None);
    assert!(
        holds(&reader, &["c"]).await,
        "recovered: {:?} {:#?}",
        names_in(&reader),
        s.requests()
    );
    let lists = s
        .requests()
        .iter()
        .filter(|r| {
            r.starts_with("GET /api/v1/namespaces/default/configmaps?") && !r.contains("watch=")
        })
        .count();
    assert!(lists >= 2, "the 410 made the watcher list again");
    task.abort();
}

#[tokio::test]
async fn faults_per_client() {
    let s = FakeApiServer::start().await.unwrap();
    let good: Api<ConfigMap> = Api::namespaced(client(&s, "good"), "default");
    let bad: Api<ConfigMap> = Api::namespaced(client(&s, "bad"), "default");
    good.create(&PostParams::default(), &cm("x", "1"))
        .await
        .unwrap();

    s.set_fault("bad", Fault::Forbidden);
    let e = bad.get("x").await.unwrap_err();
    assert!(
        matches!(e, kube::Error::Api(ref st) if st.code == 403),
        "{e:?}"
    );

    s.set_fault("bad", Fault::BlackHole);
    let r = tokio::time::timeout(Duration::from_millis(500), bad.get("x")).await;
    assert!(
        r.is_err() || r.unwrap().is_err(),
        "a black-holed client gets no answer"
    );
    // Other clients are unaffected.
    assert!(good.get("x").await.is_ok());

    s.set_fault("bad", Fault::Slow(Duration::from_millis(300)));
    let t = std::time::Instant::now();
    bad.get("x").await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));

    // Dropped streams end an open watch.
    s.set_fault("bad", Fault::None);
    let mut w = bad.watch(&Default::default(), "0").await.unwrap().boxed();
    assert!(w.next().await.is_some(), "initial ADDED");
    s.set_fault("bad", Fault::DropStreams);
    let end = tokio::time::timeout(Duration::from_secs(3), async {
        while w.next().await.is_some() {}
    })
    .await;
    assert!(end.is_ok(), "the stream was closed by the server");
}
