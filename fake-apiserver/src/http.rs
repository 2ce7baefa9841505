//! HTTP/1.1 front: routing, list/watch, writes, fault injection.
use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::{
    body::{Frame, Incoming},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::{
    patch,
    store::{fields_match, labels_match, ApiError, Event, Resource},
    Fault, Shared, RESOURCES,
};

type Body = BoxBody<Bytes, Infallible>;

pub async fn serve(listener: tokio::net::TcpListener, sh: Arc<Shared>) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            continue;
        };
        let sh = sh.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, sh.clone()));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(sock), svc)
                .await;
        });
    }
}

fn full(code: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed());
    *r.status_mut() = code;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(e: &ApiError) -> Response<Body> {
    full(
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.status(),
    )
}

struct Target {
    res: &'static Resource,
    ns: Option<String>,
    name: Option<String>,
    status: bool,
}

fn route(path: &str) -> Option<Target> {
    let path = path.trim_start_matches('/');
    for res in RESOURCES {
        let Some(rest) = path.strip_prefix(res.prefix) else {
            continue;
        };
        let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let (ns, tail) = match segs.as_slice() {
            ["namespaces", ns, tail @ ..] if res.namespaced => (Some(ns.to_string()), tail),
            tail => (None, tail),
        };
        match tail {
            [p] if *p == res.plural => {
                return Some(Target {
                    res,
                    ns,
                    name: None,
                    status: false,
                })
            }
            [p, name] if *p == res.plural => {
                return Some(Target {
                    res,
                    ns,
                    name: Some(name.to_string()),
                    status: false,
                })
            }
            [p, name, "status"] if *p == res.plural && res.status => {
                return Some(Target {
                    res,
                    ns,
                    name: Some(name.to_string()),
                    status: true,
                })
            }
            _ => {}
        }
    }
    None
}

fn query(q: &str, key: &str) -> Option<String> {
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 3 <= b.len() => {
                let h = std::str::from_utf8(&b[i + 1..(i + 3).min(b.len())]).unwrap_or("");
                match u8::from_str_radix(h, 16) {
                    Ok(v) if h.len() == 2 => {
                        out.push(v);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(req: Request<Incoming>, sh: Arc<Shared>) -> Result<Response<Body>, Infallible> {
    let token = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    let q = req.uri().query().unwrap_or("").to_string();
    let path = req.uri().path().to_string();
    if let Ok(mut r) = sh.requests.lock() {
        r.push((token.clone(), format!("{} {path}?{q}", req.method())));
    }
    match sh.fault(&token) {
        Fault::BlackHole => std::future::pending::<()>().await,
        Fault::Slow(d) => tokio::time::sleep(d).await,
        Fault::Forbidden => {
            return Ok(error(&ApiError::new(
                403,
                "Forbidden",
                format!("user \"{token}\" cannot {} {path}", req.method()),
            )))
        }
        Fault::Hang => {
            let stream = futures::stream::pending::<Result<Frame<Bytes>, Infallible>>();
            return Ok(Response::new(BodyExt::boxed(StreamBody::new(stream))));
        }
        Fault::None | Fault::DropStreams => {}
    }
    if path == "/readyz" || path == "/livez" || path == "/healthz" {
        let unready = sh
            .unready
            .lock()
            .map(|u| u.contains(&token))
            .unwrap_or(false);
        let (code, body) = if unready && path == "/readyz" {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "[-]etcd failed: reason withheld\nreadyz check failed",
            )
        } else {
            (StatusCode::OK, "ok")
        };
        let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
        *r.status_mut() = code;
        return Ok(r);
    }
    let Some(t) = route(&path) else {
        return Ok(error(&ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )));
    };
    let method = req.method().clone();
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body: Value = match req.into_body().collect().await {
        Ok(b) => {
            let bytes = b.to_bytes();
            if bytes.is_empty() {
                Value::Null
            } else {
                match serde_json::from_slice(&bytes) {
                    Ok(v) => v,
                    Err(e) => {
                        return Ok(error(&ApiError::new(400, "BadRequest", e.to_string())));
                    }
                }
            }
        }
        Err(e) => return Ok(error(&ApiError::new(400, "BadRequest", e.to_string()))),
    };
    let ns = t.ns.clone().unwrap_or_default();
    if t.res.namespaced && t.name.is_some() && t.ns.is_none() {
        return Ok(error(&ApiError::new(404, "NotFound", "namespace required")));
    }
    let result: Result<(Value, Option<Event>), ApiError> = {
        let Ok(mut store) = sh.store.lock() else {
            return Ok(error(&ApiError::new(
                500,
                "InternalError",
                "store poisoned",
            )));
        };
        let r = match (&method, &t.name) {
            (&Method::GET, None) if query(&q, "watch").is_some_and(|w| w == "true" || w == "1") => {
                drop(store);
                return Ok(watch(&sh, &t, &q, &token));
            }
            (&Method::GET, None) => Ok((list(&store, &t, &q), None)),
            (&Method::GET, Some(name)) => store
                .get(t.res, &ns, name)
                .map(|o| (o, None))
                .ok_or_else(|| {
                    ApiError::new(
                        404,
                        "NotFound",
                        format!("{} \"{name}\" not found", t.res.plural),
                    )
                }),
            (&Method::POST, None) => store.create(t.res, &ns, body).map(|(o, e)| (o, Some(e))),
            (&Method::PUT, Some(name)) => store
                .replace(t.res, &ns, name, body, t.status)
                .map(|(o, e)| (o, Some(e))),
            (&Method::PATCH, Some(name)) => match patch::Kind::from_content_type(&content_type) {
                Some(kind) => store
                    .patch(t.res, &ns, name, kind, &body, t.status)
                    .map(|(o, e)| (o, Some(e))),
                None => Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("unsupported patch type {content_type}"),
                )),
            },
            (&Method::DELETE, Some(name)) => {
                store.delete(t.res, &ns, name).map(|(o, e)| (o, Some(e)))
            }
            _ => Err(ApiError::new(405, "MethodNotAllowed", "method not allowed")),
        };
        // Sent under the lock: watchers must see events in resourceVersion order (a watch
        // skips anything not newer than what it sent last, so two concurrent writes whose
        // events crossed here used to lose the older one).
        if let Ok((_, Some(e))) = &r {
            let _ = sh.events.send(e.clone());
        }
        r
    };
    Ok(match result {
        Ok((obj, _)) => {
            let code = if method == Method::POST {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            full(code, &obj)
        }
        Err(e) => error(&e),
    })
}

fn selected(obj: &Value, q: &str) -> bool {
    query(q, "labelSelector").is_none_or(|s| labels_match(obj, &s))
        && query(q, "fieldSelector").is_none_or(|s| fields_match(obj, &s))
}

fn list(store: &crate::store::Store, t: &Target, q: &str) -> Value {
    let start: usize = query(q, "continue")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let limit: usize = query(q, "limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    // Only the page is copied (a 10,000-object list in pages of 500 copied every object
    // for each page: quadratic, and under the store lock).
    let (page, total) = store.list_page(t.res, t.ns.as_deref(), |o| selected(o, q), start, limit);
    let end = start.saturating_add(page.len()).min(total);
    let mut meta = json!({"resourceVersion": store.rv().to_string()});
    if end < total {
        meta["continue"] = json!(end.to_string());
        meta["remainingItemCount"] = json!(total - end);
    }
    json!({
        "kind": format!("{}List", t.res.kind),
        "apiVersion": t.res.api_version(),
        "metadata": meta,
        "items": page,
    })
}

fn line(typ: &str, obj: &Value) -> Bytes {
    let mut s = json!({"type": typ, "object": obj}).to_string();
    s.push('\n');
    Bytes::from(s)
}

/// A watch: replay from `resourceVersion` (or the current state as ADDED), then live events,
/// bookmarks when allowed, until `timeoutSeconds`, a dropped stream, or a lagging reader.
fn watch(sh: &Arc<Shared>, t: &Target, q: &str, token: &str) -> Response<Body> {
    if sh.fault(token) == Fault::DropStreams {
        // Closed right after the headers, before any event: the client learns nothing new.
        return full(StatusCode::OK, &Value::Null).map(|_| Full::new(Bytes::new()).boxed());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1024);
    let res = t.res;
    let ns = t.ns.clone();
    let q = q.to_string();
    let from: Option<u64> = query(&q, "resourceVersion")
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0);
    let bookmarks = query(&q, "allowWatchBookmarks").is_some_and(|b| b == "true");
    let timeout = query(&q, "timeoutSeconds")
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(Duration::from_secs(3600), Duration::from_secs);
    // Subscribe and read the history under the store lock: nothing falls in between.
    let (initial, mut live, mut last) = {
        let Ok(store) = sh.store.lock() else {
            return error(&ApiError::new(500, "InternalError", "store poisoned"));
        };
        let live = sh.events.subscribe();
        let initial: Result<Vec<Bytes>, ()> = match from {
            None => Ok(store
                .list(res, ns.as_deref())
                .into_iter()
                .filter(|o| selected(o, &q))
                .map(|o| line("ADDED", &o))
                .collect()),
            Some(rv) => match store.since(res, rv) {
                None => Err(()),
                Some(evs) => Ok(evs
                    .into_iter()
                    .filter(|e| ns.as_deref().is_none_or(|n| n == e.ns) && selected(&e.obj, &q))
                    .map(|e| line(e.typ, &e.obj))
                    .collect()),
            },
        };
        (initial, live, store.rv())
    };
    let Ok(initial) = initial else {
        // What client-go and kube-runtime expect: HTTP 200 and an ERROR event with 410.
        let gone = ApiError::new(
            410,
            "Expired",
            "too old resource version: the history was compacted",
        );
        let body = line("ERROR", &gone.status());
        let mut r = Response::new(Full::new(body).boxed());
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        return r;
    };
    let sh2 = sh.clone();
    let token = token.to_string();
    let key_prefix = format!("{}/{}", res.prefix, res.plural);
    tokio::spawn(async move {
        for l in initial {
            if tx.send(l).await.is_err() {
                return;
            }
        }
        let mut drops = sh2.drops.subscribe();
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(sh2.bookmark_every);
        loop {
            if sh2.fault(&token) == Fault::DropStreams {
                return;
            }
            tokio::select! {
                _ = &mut deadline => return,
                _ = drops.changed() => {
                    if sh2.fault(&token) == Fault::DropStreams {
                        return;
                    }
                }
                ev = live.recv() => match ev {
                    Ok(e) => {
                        if e.res != key_prefix || e.rv <= last {
                            continue;
                        }
                        if ns.as_deref().is_some_and(|n| n != e.ns) || !selected(&e.obj, &q) {
                            continue;
                        }
                        last = e.rv;
                        if tx.send(line(e.typ, &e.obj)).await.is_err() {
                            return;
                        }
                    }
                    // A reader that fell behind ends its watch; the client watches again.
                    Err(_) => return,
                },
                _ = tick.tick() => {
                    if bookmarks {
                        let rv = sh2.store.lock().map(|s| s.rv()).unwrap_or(last);
                        let bm = json!({
                            "kind": res.kind,
                            "apiVersion": res.api_version(),
                            "metadata": {"resourceVersion": rv.to_string()},
                        });
                        if tx.send(line("BOOKMARK", &bm)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    let stream = tokio_stream_from(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> impl futures::Stream<Item = Bytes> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let t = route("/api/v1/namespaces/kube-system/configmaps/kubevip").unwrap();
        assert_eq!(
            (t.res.plural, t.ns.as_deref(), t.name.as_deref()),
            ("configmaps", Some("kube-system"), Some("kubevip"))
        );
        let t = route("/apis/coordination.k8s.io/v1/namespaces/x/leases").unwrap();
        assert_eq!(t.res.kind, "Lease");
        assert!(t.name.is_none());
        let t = route("/api/v1/namespaces/a/services/s/status").unwrap();
        assert!(t.status);
        assert!(route("/api/v1/namespaces/a/configmaps/c/status").is_none());
        assert_eq!(route("/api/v1/services").unwrap().ns, None);
        assert_eq!(percent_decode("a%3Db%2Cc"), "a=b,c");
    }
}
