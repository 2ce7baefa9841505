//! The one markdown table the bench prints: each figure beside its same-run baseline.

pub struct Row {
    pub bench: String,
    pub result: String,
    pub baseline: String,
    pub ratio: String,
    pub goal: String,
    pub met: String,
}

impl Row {
    pub fn new(bench: impl Into<String>) -> Row {
        Row {
            bench: bench.into(),
            result: String::new(),
            baseline: String::new(),
            ratio: String::new(),
            goal: String::new(),
            met: String::new(),
        }
    }

    pub fn result(mut self, s: impl Into<String>) -> Row {
        self.result = s.into();
        self
    }

    pub fn baseline(mut self, s: impl Into<String>) -> Row {
        self.baseline = s.into();
        self
    }

    pub fn ratio(mut self, r: f64) -> Row {
        self.ratio = if r >= 10.0 {
            format!("{r:.1}×")
        } else if r >= 0.1 {
            format!("{r:.2}×")
        } else {
            format!("{r:.4}×")
        };
        self
    }

    /// A goal "value ≤ limit": `value` in the unit of `shown`.
    pub fn goal_at_most(mut self, value: f64, limit: f64, shown: &str) -> Row {
        self.goal = format!("≤ {shown}");
        self.met = if value <= limit {
            "met".into()
        } else if limit > 0.0 {
            format!("**missed** by {:.0} %", (value / limit - 1.0) * 100.0)
        } else {
            // A goal of zero has no percentage to miss it by: say how many.
            format!("**missed**: {value} against {limit}")
        };
        self
    }
}

pub fn render(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str("| benchmark | result | baseline (same run) | ratio | goal | |\n");
    s.push_str("|---|---:|---:|---:|---|---|\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.bench, r.result, r.baseline, r.ratio, r.goal, r.met
        ));
    }
    s
}
