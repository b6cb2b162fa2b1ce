//! The Prometheus exporter: the library records through the `metrics` facade; this
//! installs the recorder and renders it at `/metrics` on the admin listener.

use std::time::Duration;

use hapnd_auth::Authenticator;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Store lookups take 0.1 ms (SQLite) to the 2 s timeout.
const LOOKUP_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0,
];

/// Backends answer in a millisecond to the 30 s response timeout (or the flag's).
const UPSTREAM_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// Installs the global recorder. Must run before the authenticator is built: its metric
/// handles are registered with the recorder installed at that moment.
pub(crate) fn install() -> Result<Exporter, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("hapnd_auth_store_lookup_duration_seconds".to_owned()),
            &LOOKUP_BUCKETS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("hapnd_upstream_response_duration_seconds".to_owned()),
                &UPSTREAM_BUCKETS,
            )
        })
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    // Histograms are drained into their buckets by upkeep.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(Exporter { handle })
}

/// Renders the metrics.
#[derive(Clone)]
pub(crate) struct Exporter {
    handle: PrometheusHandle,
}

impl Exporter {
    /// The Prometheus text format, with the cached-entries and throttled-clients gauges
    /// brought up to date.
    pub(crate) fn render(&self, auth: &Authenticator) -> String {
        auth.cached_entries();
        auth.throttled_clients();
        self.handle.render()
    }
}
