//! Expiry ahead in `serve`: the `hapnd_keys_expiring_soon{window="7d"}` gauge, kept up to
//! date by one bounded count every `--expiring-interval-secs`, never per request.

use std::time::{Duration, SystemTime};

use hapnd_auth::ExpiringKeys;

use crate::time::parse_duration;

/// The gauge's name.
pub(crate) const GAUGE: &str = "hapnd_keys_expiring_soon";

/// `--expiring-window`: how far ahead to count, and the text it was given as, which is the
/// gauge's `window` label.
#[derive(Clone, Debug)]
pub(crate) struct Window {
    label: String,
    span: Duration,
}

/// Reads `--expiring-window` (a duration such as `7d`).
pub(crate) fn parse_window(text: &str) -> Result<Window, String> {
    parse_duration(text).map(|span| Window {
        label: text.to_owned(),
        span,
    })
}

/// Counts the unrevoked keys expiring within `window` from now, every `every`, for as long
/// as the gateway runs, and sets the gauge. A failed count leaves the gauge at its last
/// value and is logged once (and its recovery once), not at every turn.
pub(crate) async fn watch_forever<S: ExpiringKeys>(store: S, window: Window, every: Duration) {
    let Window {
        label: window,
        span,
    } = window;
    let gauge = metrics::gauge!(GAUGE, "window" => window.clone());
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticks.tick().await;
        let now = SystemTime::now();
        match store.count_expiring(now, now + span).await {
            Ok(count) => {
                if failing {
                    tracing::info!(%window, count, "counting keys expiring soon works again");
                    failing = false;
                }
                gauge.set(count as f64);
            }
            Err(error) if !failing => {
                tracing::warn!(%window, %error,
                    "cannot count keys expiring soon: the gauge keeps its last value");
                failing = true;
            }
            Err(_) => {}
        }
    }
}
