//! Maglev in userspace: table build time and churn when one backend is added or removed,
//! each beside plain mod-N hashing of the same table size.
use std::{hint::black_box, time::Instant};

use anyhow::Result;
use vip_userspace::maglev::{build, extra_churn, size_for, Entry, DEFAULT_M};

use crate::table::Row;

fn backends(n: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| Entry {
            id: format!("198.51.{}.{}:8080", i / 250, i % 250 + 1),
            weight: 1,
        })
        .collect()
}

/// slot -> backend index by `slot % N`: what "hash mod N" gives for hash values 0..M.
fn mod_n(n: usize, m: u32) -> Vec<u32> {
    (0..m).map(|s| s % n as u32).collect()
}

/// Mean time of `f` over `runs` runs (after one warm-up), in microseconds.
fn time_us<T>(runs: usize, mut f: impl FnMut() -> T) -> f64 {
    black_box(f());
    let t = Instant::now();
    for _ in 0..runs {
        black_box(f());
    }
    t.elapsed().as_secs_f64() * 1e6 / runs as f64
}

/// Mean extra churn over `samples` single-backend changes, half removals of one of the N
/// (spread over the list), half additions of a new backend (each a different one, inserted at
/// a different position: mod-N depends on the position, Maglev does not): slots that moved
/// without belonging to the changed backend.
fn churn(n: usize, samples: usize, table: impl Fn(&[Entry]) -> Result<Vec<u32>>) -> Result<f64> {
    let base = backends(n);
    let t0 = table(&base)?;
    let half = samples / 2;
    let mut total = 0.0;
    for k in 0..half {
        let gone = base[k * n / half].id.clone();
        let b2: Vec<Entry> = base.iter().filter(|e| e.id != gone).cloned().collect();
        let t2 = table(&b2)?;
        total += extra_churn(&t0, &base, &t2, &b2, &gone);

        let new = Entry {
            id: format!("203.0.113.{}:8080", k + 1),
            weight: 1,
        };
        let mut b2 = base.clone();
        b2.insert(k * n / half, new.clone());
        let t2 = table(&b2)?;
        total += extra_churn(&t0, &base, &t2, &b2, &new.id);
    }
    Ok(total / (2 * half) as f64)
}

pub fn run(quick: bool, rows: &mut Vec<Row>) -> Result<()> {
    let m = DEFAULT_M;
    for n in [10usize, 100, 1000] {
        let b = backends(n);
        let runs = match (quick, n) {
            (true, _) => 3,
            (false, 1000) => 10,
            _ => 20,
        };
        let mg = time_us(runs, || build(&b, m));
        let md = time_us(runs * 10, || mod_n(n, m));
        rows.push(
            Row::new(format!("Maglev table build, N={n}, M={m}"))
                .result(format!("{:.0} µs", mg))
                .baseline(format!("mod-N fill {:.0} µs", md))
                .ratio(mg / md),
        );
    }
    let samples = if quick { 4 } else { 20 };
    for (n, goal) in [(10usize, Some(0.003)), (100, Some(0.006)), (1000, None)] {
        let mg = churn(n, samples, |e| Ok(build(e, m)?))?;
        let md = churn(n, samples, |e| Ok(mod_n(e.len(), m)))?;
        let mut row = Row::new(format!(
            "Maglev extra churn, ±1 backend of N={n} (mean of {samples})"
        ))
        .result(format!("{:.3} %", mg * 100.0))
        .baseline(format!("mod-N {:.1} %", md * 100.0))
        .ratio(mg / md);
        if let Some(g) = goal {
            row = row.goal_at_most(mg, g, &format!("{:.1} %", g * 100.0));
        }
        rows.push(row);
    }
    // `maglev_sizing: by-need`: the table a service of N backends gets, kept across the ±1
    // change (the daemon keeps it unless the count crosses a size step). Less memory, more
    // disruption: no goal, the trade-off is documented.
    for n in [10usize, 100] {
        let sm = size_for(n, m);
        let mg = churn(n, samples, |e| Ok(build(e, sm)?))?;
        let md = churn(n, samples, |e| Ok(mod_n(e.len(), sm)))?;
        rows.push(
            Row::new(format!(
                "Maglev extra churn, by-need table M={sm}, ±1 backend of N={n} (mean of {samples})"
            ))
            .result(format!("{:.3} %", mg * 100.0))
            .baseline(format!("mod-N {:.1} %", md * 100.0))
            .ratio(mg / md),
        );
    }
    Ok(())
}
