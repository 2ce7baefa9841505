//! Objects, the global resourceVersion and the event history.
use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::patch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// "api/v1" or "apis/<group>/<version>".
    pub prefix: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub status: bool,
}

impl Resource {
    pub const fn new(
        prefix: &'static str,
        plural: &'static str,
        kind: &'static str,
        namespaced: bool,
        status: bool,
    ) -> Self {
        Self {
            prefix,
            plural,
            kind,
            namespaced,
            status,
        }
    }

    pub fn api_version(&self) -> &'static str {
        self.prefix
            .strip_prefix("apis/")
            .or_else(|| self.prefix.strip_prefix("api/"))
            .unwrap_or(self.prefix)
    }

    fn key(&self) -> String {
        format!("{}/{}", self.prefix, self.plural)
    }
}

#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub res: String,
    pub ns: String,
    pub typ: &'static str,
    pub obj: Value,
}

/// An API error, rendered as a `Status` object.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
        }
    }

    pub fn status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        })
    }
}

pub struct Store {
    rv: u64,
    uid: u64,
    /// resource key -> (namespace, name) -> object
    objects: BTreeMap<String, BTreeMap<(String, String), Value>>,
    history: Vec<Event>,
    /// Watches from a version below this get 410 Gone.
    oldest: u64,
}

fn meta(o: &Value, field: &str) -> String {
    o.pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// Label selector: `k=v`, `k==v`, `k!=v`, `k` (exists), `!k`, comma-separated (all must hold).
pub fn labels_match(obj: &Value, selector: &str) -> bool {
    let labels = obj.pointer("/metadata/labels");
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    selector
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .all(|t| {
            if let Some((k, v)) = t.split_once("!=") {
                get(k.trim()) != Some(v.trim())
            } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                get(k.trim()) == Some(v.trim())
            } else if let Some(k) = t.strip_prefix('!') {
                get(k.trim()).is_none()
            } else {
                get(t).is_some()
            }
        })
}

/// Field selector: `metadata.name=x`, `metadata.namespace=y` (and `!=`).
pub fn fields_match(obj: &Value, selector: &str) -> bool {
    selector
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .all(|t| {
            let (k, v, neg) = match t.split_once("!=") {
                Some((k, v)) => (k, v, true),
                None => match t.split_once("==").or_else(|| t.split_once('=')) {
                    Some((k, v)) => (k, v, false),
                    None => return false,
                },
            };
            let actual = obj
                .pointer(&format!("/{}", k.trim().replace('.', "/")))
                .and_then(Value::as_str)
                .unwrap_or("");
            (actual == v.trim()) != neg
        })
}

impl Store {
    pub fn new() -> Self {
        Self {
            rv: 1,
            uid: 0,
            objects: BTreeMap::new(),
            history: Vec::new(),
            oldest: 0,
        }
    }

    pub fn rv(&self) -> u64 {
        self.rv
    }

    pub fn compact(&mut self) {
        self.history.clear();
        self.oldest = self.rv;
    }

    pub fn all(&self, plural: &str) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|(k, _)| k.ends_with(&format!("/{plural}")))
            .flat_map(|(_, m)| m.values().cloned())
            .collect()
    }

    fn bucket(&mut self, res: &Resource) -> &mut BTreeMap<(String, String), Value> {
        self.objects.entry(res.key()).or_default()
    }

    /// Objects of `res` (in `ns`, or all namespaces), sorted by (namespace, name).
    pub fn list(&self, res: &Resource, ns: Option<&str>) -> Vec<Value> {
        self.objects
            .get(&res.key())
            .map(|m| {
                m.iter()
                    .filter(|((n, _), _)| ns.is_none_or(|want| want == n))
                    .map(|(_, o)| o.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One page of a list: the objects of `res` (in `ns`, if given) that `keep` selects,
    /// from the `start`-th such object, at most `limit`; only the page is copied. Also
    /// returns how many were selected in all.
    pub fn list_page(
        &self,
        res: &Resource,
        ns: Option<&str>,
        keep: impl Fn(&Value) -> bool,
        start: usize,
        limit: usize,
    ) -> (Vec<Value>, usize) {
        let mut page = Vec::new();
        let mut total = 0;
        if let Some(m) = self.objects.get(&res.key()) {
            for ((n, _), o) in m {
                if ns.is_some_and(|want| want != n) || !keep(o) {
                    continue;
                }
                if total >= start && page.len() < limit {
                    page.push(o.clone());
                }
                total += 1;
            }
        }
        (page, total)
    }

    pub fn get(&self, res: &Resource, ns: &str, name: &str) -> Option<Value> {
        self.objects
            .get(&res.key())
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
    }

    /// Events of `res` after `rv` (None: history no longer reaches back that far).
    pub fn since(&self, res: &Resource, rv: u64) -> Option<Vec<Event>> {
        if rv < self.oldest {
            return None;
        }
        let key = res.key();
        Some(
            self.history
                .iter()
                .filter(|e| e.rv > rv && e.res == key)
                .cloned()
                .collect(),
        )
    }

    fn record(&mut self, res: &Resource, ns: &str, typ: &'static str, obj: &Value) -> Event {
        let e = Event {
            rv: self.rv,
            res: res.key(),
            ns: ns.to_string(),
            typ,
            obj: obj.clone(),
        };
        self.history.push(e.clone());
        e
    }

    fn stamp(&mut self, obj: &mut Value) {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
    }

    pub fn create(
        &mut self,
        res: &Resource,
        ns: &str,
        mut obj: Value,
    ) -> Result<(Value, Event), ApiError> {
        if !obj.is_object() {
            return Err(ApiError::new(400, "BadRequest", "body must be an object"));
        }
        if obj.get("metadata").is_none() {
            obj["metadata"] = json!({});
        }
        let mut name = meta(&obj, "name");
        if name.is_empty() {
            let gen = meta(&obj, "generateName");
            if gen.is_empty() {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    "metadata.name or generateName is required",
                ));
            }
            self.uid += 1;
            name = format!("{gen}{:05x}", self.uid);
            obj["metadata"]["name"] = json!(name);
        }
        if res.namespaced {
            obj["metadata"]["namespace"] = json!(ns);
        }
        if self.get(res, ns, &name).is_some() {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", res.plural),
            ));
        }
        self.uid += 1;
        obj["metadata"]["uid"] = json!(format!("00000000-0000-0000-0000-{:012x}", self.uid));
        obj["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        obj["metadata"]["generation"] = json!(1);
        obj["kind"] = json!(res.kind);
        obj["apiVersion"] = json!(res.api_version());
        self.stamp(&mut obj);
        self.bucket(res).insert((ns.to_string(), name), obj.clone());
        let e = self.record(res, ns, "ADDED", &obj);
        Ok((obj, e))
    }

    /// PUT. `status_only`: the /status subresource, only `.status` changes; on the main
    /// resource of a kind with a status subresource, `.status` is kept as it was.
    pub fn replace(
        &mut self,
        res: &Resource,
        ns: &str,
        name: &str,
        mut obj: Value,
        status_only: bool,
    ) -> Result<(Value, Event), ApiError> {
        let Some(old) = self.get(res, ns, name) else {
            return Err(not_found(res, name));
        };
        let sent_rv = meta(&obj, "resourceVersion");
        if !sent_rv.is_empty() && sent_rv != meta(&old, "resourceVersion") {
            return Err(conflict(res, name));
        }
        let new = if status_only {
            let mut n = old.clone();
            n["status"] = obj.get("status").cloned().unwrap_or(Value::Null);
            n
        } else {
            if res.status {
                obj["status"] = old.get("status").cloned().unwrap_or(Value::Null);
            }
            for k in ["uid", "creationTimestamp", "namespace", "name"] {
                obj["metadata"][k] = old["metadata"][k].clone();
            }
            obj["kind"] = json!(res.kind);
            obj["apiVersion"] = json!(res.api_version());
            obj
        };
        Ok(self.store_update(res, ns, name, &old, new, status_only))
    }

    pub fn patch(
        &mut self,
        res: &Resource,
        ns: &str,
        name: &str,
        kind: patch::Kind,
        body: &Value,
        status_only: bool,
    ) -> Result<(Value, Event), ApiError> {
        let Some(old) = self.get(res, ns, name) else {
            if kind == patch::Kind::Apply {
                // Server-side apply creates what does not exist yet.
                let mut obj = body.clone();
                obj["metadata"]["name"] = json!(name);
                return self.create(res, ns, obj);
            }
            return Err(not_found(res, name));
        };
        let sent_rv = body
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !sent_rv.is_empty() && sent_rv != meta(&old, "resourceVersion") {
            return Err(conflict(res, name));
        }
        let mut new =
            patch::apply(kind, &old, body).map_err(|m| ApiError::new(422, "Invalid", m))?;
        if status_only {
            let mut n = old.clone();
            n["status"] = new.get("status").cloned().unwrap_or(Value::Null);
            new = n;
        } else if res.status {
            new["status"] = old.get("status").cloned().unwrap_or(Value::Null);
        }
        for k in ["uid", "creationTimestamp", "namespace", "name"] {
            new["metadata"][k] = old["metadata"][k].clone();
        }
        Ok(self.store_update(res, ns, name, &old, new, status_only))
    }

    fn store_update(
        &mut self,
        res: &Resource,
        ns: &str,
        name: &str,
        old: &Value,
        mut new: Value,
        status_only: bool,
    ) -> (Value, Event) {
        if !status_only && new.get("spec") != old.get("spec") {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            new["metadata"]["generation"] = json!(g + 1);
        }
        self.stamp(&mut new);
        self.bucket(res)
            .insert((ns.to_string(), name.to_string()), new.clone());
        let e = self.record(res, ns, "MODIFIED", &new);
        (new, e)
    }

    /// DELETE: with finalizers the object only gets a deletionTimestamp.
    pub fn delete(
        &mut self,
        res: &Resource,
        ns: &str,
        name: &str,
    ) -> Result<(Value, Event), ApiError> {
        let Some(mut obj) = self.get(res, ns, name) else {
            return Err(not_found(res, name));
        };
        let finalizers = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if finalizers {
            obj["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:01Z");
            self.stamp(&mut obj);
            self.bucket(res)
                .insert((ns.to_string(), name.to_string()), obj.clone());
            let e = self.record(res, ns, "MODIFIED", &obj);
            return Ok((obj, e));
        }
        self.bucket(res).remove(&(ns.to_string(), name.to_string()));
        self.stamp(&mut obj);
        let e = self.record(res, ns, "DELETED", &obj);
        Ok((obj, e))
    }
}

fn not_found(res: &Resource, name: &str) -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        format!("{} \"{name}\" not found", res.plural),
    )
}

fn conflict(res: &Resource, name: &str) -> ApiError {
    ApiError::new(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            res.plural
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let o = json!({"metadata": {"name": "a", "namespace": "n", "labels": {"app": "x", "tier": "be"}}});
        assert!(labels_match(&o, "app=x,tier"));
        assert!(labels_match(&o, "app==x,env!=prod,!env"));
        assert!(!labels_match(&o, "app=y"));
        assert!(fields_match(&o, "metadata.name=a"));
        assert!(!fields_match(&o, "metadata.name=b"));
        assert!(fields_match(&o, "metadata.namespace!=m"));
    }

    #[test]
    fn versions_increase_and_conflicts_are_detected() {
        let r = Resource::new("api/v1", "configmaps", "ConfigMap", true, false);
        let mut s = Store::new();
        let (a, _) = s
            .create(
                &r,
                "ns",
                json!({"metadata": {"name": "a"}, "data": {"k": "1"}}),
            )
            .unwrap();
        let rv1 = meta(&a, "resourceVersion");
        let (b, _) = s
            .replace(
                &r,
                "ns",
                "a",
                json!({"metadata": {"name": "a", "resourceVersion": rv1}, "data": {"k": "2"}}),
                false,
            )
            .unwrap();
        assert!(meta(&b, "resourceVersion").parse::<u64>().unwrap() > rv1.parse::<u64>().unwrap());
        let e = s
            .replace(
                &r,
                "ns",
                "a",
                json!({"metadata": {"name": "a", "resourceVersion": rv1}}),
                false,
            )
            .unwrap_err();
        assert_eq!(e.code, 409);
        assert_eq!(
            s.create(&r, "ns", json!({"metadata": {"name": "a"}}))
                .unwrap_err()
                .code,
            409
        );
        assert_eq!(s.since(&r, 0).unwrap().len(), 2);
        s.compact();
        assert!(s.since(&r, 0).is_none());
    }
}
