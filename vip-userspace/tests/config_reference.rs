//! docs/configuration.md and the file format cannot drift apart: every field serde accepts in
//! vip.yaml (from `FileConfig` down, `bgp:` included) must be documented there, and every field
//! documented there must exist.
//!
//! The fields come from the JSON schema `schemars` derives on the `*File` structs and the BGP
//! config: it follows serde's own attributes (rename, alias, default, flatten,
//! deny_unknown_fields), so it names what the parser accepts, not what the Rust fields are
//! called. The documented fields are the first column of every table in the reference whose
//! header starts with `file`, written as dotted paths: `election.raft.heartbeat_ms`, list items
//! as `[]` (`services[].backends[].port`), with two shorthands the tables use: `.port` after a
//! path means its sibling (`services[].port`, `.protocol`), and `{a,b}` expands
//! (`election.{lease_duration,renew_deadline}_ms`).
//!
//! The README's minimal example is parsed too, so the first vip.yaml an operator copies works.
//!
//! Plain `cargo test -p vip-userspace --test config_reference`: no root, BPF or namespaces.
use std::collections::BTreeSet;

use serde_json::Value;
use vip_userspace::config::FileConfig;

const REFERENCE: &str = "docs/configuration.md";
const REFERENCE_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");

/// Every path of the schema, and whether it is a leaf (a value the operator writes) rather
/// than a section (`election`, `bgp.peers[].bfd`) whose fields are listed on their own.
fn schema_paths() -> Vec<(String, bool)> {
    let schema = serde_json::to_value(schemars::schema_for!(FileConfig)).expect("schema is JSON");
    let defs = schema.get("$defs").cloned().unwrap_or(Value::Null);
    let mut out = Vec::new();
    walk(&schema, &defs, "", &mut out, 0);
    out
}

/// The properties of an object schema, following `$ref` and the `anyOf`/`oneOf`/`allOf` an
/// `Option<Struct>` or a defaulted field becomes. `None`: not an object with named fields (a
/// scalar, an enum, a list of scalars, or a map such as `election.raft.peers`, whose keys are
/// the operator's).
fn properties<'a>(s: &'a Value, defs: &'a Value) -> Option<Vec<(&'a String, &'a Value)>> {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r
            .strip_prefix("#/$defs/")
            .expect("schemars refers into $defs");
        return properties(&defs[name], defs);
    }
    if let Some(p) = s.get("properties").and_then(Value::as_object) {
        return Some(p.iter().collect());
    }
    for k in ["anyOf", "oneOf", "allOf"] {
        if let Some(alts) = s.get(k).and_then(Value::as_array) {
            let mut found: Option<Vec<_>> = None;
            for a in alts {
                if let Some(p) = properties(a, defs) {
                    found.get_or_insert_with(Vec::new).extend(p);
                }
            }
            if found.is_some() {
                return found;
            }
        }
    }
    None
}

/// The item schema of a list (`Vec<T>` or `Option<Vec<T>>`), following `$ref` and `anyOf`.
fn items<'a>(s: &'a Value, defs: &'a Value) -> Option<&'a Value> {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        return items(&defs[r.strip_prefix("#/$defs/")?], defs);
    }
    if let Some(i) = s.get("items") {
        return Some(i);
    }
    for k in ["anyOf", "oneOf", "allOf"] {
        for a in s.get(k).and_then(Value::as_array).into_iter().flatten() {
            if let Some(i) = items(a, defs) {
                return Some(i);
            }
        }
    }
    None
}

fn walk(s: &Value, defs: &Value, prefix: &str, out: &mut Vec<(String, bool)>, depth: usize) {
    assert!(
        depth < 16,
        "schema nests deeper than any vip.yaml: a recursive type at {prefix}"
    );
    let Some(props) = properties(s, defs) else {
        return;
    };
    for (name, field) in props {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        if properties(field, defs).is_some() {
            out.push((path.clone(), false));
            walk(field, defs, &path, out, depth + 1);
        } else if let Some(item) = items(field, defs).filter(|i| properties(i, defs).is_some()) {
            out.push((path.clone(), false));
            walk(item, defs, &format!("{path}[]"), out, depth + 1);
        } else {
            out.push((path, true));
        }
    }
}

/// `election.{lease_duration,renew_deadline}_ms` → both paths (one brace group per path).
fn expand_braces(p: &str) -> Vec<String> {
    match (p.find('{'), p.find('}')) {
        (Some(open), Some(close)) if open < close => p[open + 1..close]
            .split(',')
            .flat_map(|alt| expand_braces(&format!("{}{}{}", &p[..open], alt, &p[close + 1..])))
            .collect(),
        _ => vec![p.to_string()],
    }
}

/// The dotted paths in the first column of the reference's `file` tables, with the line each
/// is on.
fn documented_paths(text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut in_file_table = false;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if !line.starts_with('|') {
            in_file_table = false;
            continue;
        }
        let first = line
            .trim_start_matches('|')
            .split('|')
            .next()
            .unwrap_or("")
            .trim();
        if first == "file" {
            in_file_table = true;
            continue;
        }
        if !in_file_table || first.starts_with("---") {
            continue;
        }
        // `a.b`, `.c`: `.c` is a sibling of the path before it.
        let mut last: Option<String> = None;
        for (i, cell) in first.split('`').enumerate() {
            if i % 2 == 0 || cell.is_empty() {
                continue;
            }
            let full = match (cell.strip_prefix('.'), &last) {
                (Some(sibling), Some(prev)) => match prev.rfind('.') {
                    Some(dot) => format!("{}.{sibling}", &prev[..dot]),
                    None => sibling.to_string(),
                },
                (Some(_), None) => panic!(
                    "{REFERENCE}:{}: `{cell}` continues no path before it in the cell",
                    n + 1
                ),
                (None, _) => cell.to_string(),
            };
            for p in expand_braces(&full) {
                out.push((p, n + 1));
            }
            last = Some(full);
        }
    }
    out
}

#[test]
fn every_config_field_is_documented_and_every_documented_field_exists() {
    let text = std::fs::read_to_string(REFERENCE_PATH).unwrap_or_else(|e| {
        panic!("cannot read the configuration reference {REFERENCE_PATH}: {e}")
    });
    let schema = schema_paths();
    let documented = documented_paths(&text);
    assert!(
        documented.len() > 20,
        "found only {} documented fields in {REFERENCE}: are its tables' headers still `| file |`?",
        documented.len()
    );

    let known: BTreeSet<&str> = schema.iter().map(|(p, _)| p.as_str()).collect();
    let listed: BTreeSet<&str> = documented.iter().map(|(p, _)| p.as_str()).collect();
    let missing: Vec<&str> = schema
        .iter()
        .filter(|(p, leaf)| *leaf && !listed.contains(p.as_str()))
        .map(|(p, _)| p.as_str())
        .collect();
    let extra: Vec<String> = documented
        .iter()
        .filter(|(p, _)| !known.contains(p.as_str()))
        .map(|(p, line)| format!("{p} (line {line})"))
        .collect();

    let mut msg = String::new();
    if !missing.is_empty() {
        msg += &format!(
            "\nfields vip.yaml accepts that {REFERENCE} does not document (add a row to a `file` table):\n  {}\n",
            missing.join("\n  ")
        );
    }
    if !extra.is_empty() {
        msg += &format!(
            "\nfields {REFERENCE} documents that vip.yaml does not accept (renamed or removed?):\n  {}\n",
            extra.join("\n  ")
        );
    }
    assert!(
        msg.is_empty(),
        "the configuration reference is out of step with config.rs:{msg}"
    );
}

#[test]
fn the_reference_shorthands_expand_as_read() {
    let doc = "| file | default |\n|---|---|\n\
               | `services[].port`, `.protocol` | x |\n\
               | `election.{lease_duration,renew_deadline}_ms` | y |\n\
               | | `--keep-pinned` |\n\nnot a table `ignored`\n";
    let paths: Vec<String> = documented_paths(doc).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        paths,
        [
            "services[].port",
            "services[].protocol",
            "election.lease_duration_ms",
            "election.renew_deadline_ms",
        ]
    );
}

/// The README's minimal vip.yaml is one the parser takes: an operator copies it first.
#[test]
fn the_readme_example_parses() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .expect("README has a `## Configuration` section");
    let example = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("README's Configuration section has a ```yaml example");
    let file = vip_userspace::config::parse_file(example)
        .unwrap_or_else(|e| panic!("README's example vip.yaml does not parse: {e}\n{example}"));
    assert_eq!(file.interface.as_deref(), Some("eth0"));
    assert_eq!(file.services.map(|s| s.len()), Some(1));
}
