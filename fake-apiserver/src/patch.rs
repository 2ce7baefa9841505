//! PATCH bodies: JSON merge patch (RFC 7386; strategic merge and server-side apply are
//! treated as merges here), and JSON patch (RFC 6902: add, replace, remove, test).
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Merge,
    Json,
    Apply,
}

impl Kind {
    pub fn from_content_type(ct: &str) -> Option<Kind> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                Some(Kind::Merge)
            }
            "application/json-patch+json" => Some(Kind::Json),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Kind::Apply),
            _ => None,
        }
    }
}

pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn unescape(s: &str) -> String {
    s.replace("~1", "/").replace("~0", "~")
}

fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops.as_array().ok_or("a JSON patch is an array")?;
    for op in ops {
        let kind = op.get("op").and_then(Value::as_str).ok_or("op missing")?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or("path missing")?;
        let (parent, last) = path.rsplit_once('/').ok_or("bad path")?;
        let last = unescape(last);
        match kind {
            "test" => {
                if doc.pointer(path) != op.get("value") {
                    return Err(format!("test failed at {path}"));
                }
            }
            "remove" => {
                let p = doc.pointer_mut(parent).ok_or("no such parent")?;
                match p {
                    Value::Object(m) => {
                        m.remove(&last).ok_or("no such member")?;
                    }
                    Value::Array(a) => {
                        let i: usize = last.parse().map_err(|_| "bad index")?;
                        if i >= a.len() {
                            return Err("index out of range".into());
                        }
                        a.remove(i);
                    }
                    _ => return Err("parent is not a container".into()),
                }
            }
            "add" | "replace" => {
                let v = op.get("value").cloned().ok_or("value missing")?;
                let p = doc.pointer_mut(parent).ok_or("no such parent")?;
                match p {
                    Value::Object(m) => {
                        if kind == "replace" && !m.contains_key(&last) {
                            return Err(format!("replace of missing {path}"));
                        }
                        m.insert(last, v);
                    }
                    Value::Array(a) => {
                        if last == "-" {
                            a.push(v);
                        } else {
                            let i: usize = last.parse().map_err(|_| "bad index")?;
                            if kind == "replace" {
                                *a.get_mut(i).ok_or("index out of range")? = v;
                            } else if i <= a.len() {
                                a.insert(i, v);
                            } else {
                                return Err("index out of range".into());
                            }
                        }
                    }
                    _ => return Err("parent is not a container".into()),
                }
            }
            other => return Err(format!("unsupported op {other}")),
        }
    }
    Ok(())
}

pub fn apply(kind: Kind, old: &Value, body: &Value) -> Result<Value, String> {
    let mut new = old.clone();
    match kind {
        Kind::Merge | Kind::Apply => merge(&mut new, body),
        Kind::Json => json_patch(&mut new, body)?,
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_and_json_patch() {
        let old = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        let m = apply(Kind::Merge, &old, &json!({"a": {"b": null, "d": 3}})).unwrap();
        assert_eq!(m, json!({"a": {"c": 2, "d": 3}, "l": [1, 2]}));
        let j = apply(
            Kind::Json,
            &old,
            &json!([{"op": "replace", "path": "/a/b", "value": 9}, {"op": "add", "path": "/l/-", "value": 3}, {"op": "remove", "path": "/a/c"}]),
        )
        .unwrap();
        assert_eq!(j, json!({"a": {"b": 9}, "l": [1, 2, 3]}));
        assert!(apply(
            Kind::Json,
            &old,
            &json!([{"op": "test", "path": "/a/b", "value": 5}])
        )
        .is_err());
    }
}
