//! Prometheus counters, hand-rolled: request counts by route and status, exec counts and
//! durations; sandbox counts by state come from counters the service keeps on change.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// (method, route, status) → (count, seconds).
type RequestCounts = BTreeMap<(String, String, u16), (u64, f64)>;

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<RequestCounts>,
    execs: Mutex<ExecStats>,
    /// Requests sent on to the node holding their sandbox.
    forwarded: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct ExecStats {
    count: u64,
    timed_out: u64,
    seconds_sum: f64,
}

impl Metrics {
    pub fn observe_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let entry = requests
            .entry((method.to_string(), route.to_string(), status))
            .or_default();
        entry.0 += 1;
        entry.1 += took.as_secs_f64();
    }

    pub fn forwarded(&self) {
        self.forwarded
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn observe_exec(&self, took_ms: u64, timed_out: bool) {
        let mut execs = self.execs.lock().unwrap_or_else(|p| p.into_inner());
        execs.count += 1;
        execs.timed_out += u64::from(timed_out);
        execs.seconds_sum += took_ms as f64 / 1000.0;
    }

    /// The Prometheus text exposition, with `sandboxes` as (state, count).
    pub fn render(
        &self,
        sandboxes: &[(&str, u64)],
        requests_in_flight: usize,
        pool: &PoolView,
    ) -> String {
        let mut out = String::new();
        out.push_str("# HELP berth_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE berth_http_requests_total counter\n");
        let requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        for ((method, route, status), (count, _)) in requests.iter() {
            let _ = writeln!(out, "berth_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {count}");
        }
        out.push_str("# HELP berth_http_request_seconds_sum Time spent answering, by route.\n");
        out.push_str("# TYPE berth_http_request_seconds_sum counter\n");
        for ((method, route, status), (_, secs)) in requests.iter() {
            let _ = writeln!(out, "berth_http_request_seconds_sum{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {secs}");
        }
        drop(requests);
        let execs = self.execs.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "# HELP berth_execs_total Finished execs.\n# TYPE berth_execs_total counter\nberth_execs_total {}", execs.count);
        let _ = writeln!(out, "# HELP berth_exec_timeouts_total Execs killed at their timeout.\n# TYPE berth_exec_timeouts_total counter\nberth_exec_timeouts_total {}", execs.timed_out);
        let _ = writeln!(out, "# HELP berth_exec_seconds_sum Total exec run time.\n# TYPE berth_exec_seconds_sum counter\nberth_exec_seconds_sum {}", execs.seconds_sum);
        let forwarded = self.forwarded.load(std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(out, "# HELP berth_forwarded_requests_total Requests sent on to the node holding their sandbox.\n# TYPE berth_forwarded_requests_total counter\nberth_forwarded_requests_total {forwarded}");
        let _ = writeln!(out, "# HELP berth_sandbox_requests_in_flight Agent requests in flight.\n# TYPE berth_sandbox_requests_in_flight gauge\nberth_sandbox_requests_in_flight {requests_in_flight}");
        out.push_str("# HELP berth_sandboxes Sandboxes by state.\n# TYPE berth_sandboxes gauge\n");
        for (state, count) in sandboxes {
            let _ = writeln!(out, "berth_sandboxes{{state=\"{state}\"}} {count}");
        }
        out.push_str("# HELP berth_pool_ready Started sandboxes the warm pool holds ready, by template (not in berth_sandboxes).\n# TYPE berth_pool_ready gauge\n");
        for f in &pool.figures {
            let _ = writeln!(
                out,
                "berth_pool_ready{{template=\"{}\"}} {}",
                f.template, f.ready
            );
        }
        out.push_str("# HELP berth_pool_target Ready sandboxes the warm pool keeps, by template.\n# TYPE berth_pool_target gauge\n");
        for f in &pool.figures {
            let _ = writeln!(
                out,
                "berth_pool_target{{template=\"{}\"}} {}",
                f.template, f.target
            );
        }
        let _ = writeln!(out, "# HELP berth_pool_adopted_total Creates served by the warm pool.\n# TYPE berth_pool_adopted_total counter\nberth_pool_adopted_total {}", pool.adopted);
        let _ = writeln!(out, "# HELP berth_pool_missed_total Creates that fit the warm pool but found it empty.\n# TYPE berth_pool_missed_total counter\nberth_pool_missed_total {}", pool.missed);
        out
    }
}

/// The warm pool as `/metrics` shows it.
#[derive(Debug, Default)]
pub struct PoolView {
    pub figures: Vec<crate::sandbox::PoolFigures>,
    pub adopted: u64,
    pub missed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_includes_observed_requests_and_states() {
        let m = Metrics::default();
        m.observe_request("GET", "/v1/sandboxes", 200, Duration::from_millis(3));
        m.observe_exec(12, true);
        let pool = PoolView {
            figures: vec![crate::sandbox::PoolFigures {
                template: "python".into(),
                target: 2,
                ready: 1,
            }],
            adopted: 5,
            missed: 1,
        };
        let text = m.render(&[("running", 2)], 3, &pool);
        assert!(text.contains("berth_pool_ready{template=\"python\"} 1"));
        assert!(text.contains("berth_pool_target{template=\"python\"} 2"));
        assert!(text.contains("berth_pool_adopted_total 5"));
        assert!(text.contains(
            "berth_http_requests_total{method=\"GET\",route=\"/v1/sandboxes\",status=\"200\"} 1"
        ));
        assert!(text.contains("berth_exec_timeouts_total 1"));
        assert!(text.contains("berth_sandboxes{state=\"running\"} 2"));
        assert!(text.contains("berth_sandbox_requests_in_flight 3"));
    }
}
