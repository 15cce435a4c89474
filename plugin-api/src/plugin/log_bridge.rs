//! The log bridge: a plugin `.so` carries its own copy of `tracing`'s globals,
//! so its events would go nowhere. On the first constructor call the export
//! macro installs, inside the plugin, a subscriber that forwards every event
//! (level, target, message, fields) to the host through [`HostServices`].
//!
//! Must never install itself when the backend runs in the host's own process
//! (rlib use): there the host's subscriber already sees the events, and
//! forwarding would loop.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

use crate::abi::{HostServices, LogLevel};

/// Installs the forwarding subscriber once per plugin copy.
pub(crate) fn install(host: &Arc<HostServices>) {
    if host.is_in_process() {
        return;
    }
    let max = match host.max_log_level() {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    };
    // Fails harmlessly when a subscriber is already installed (a second
    // backend of the same plugin): the first one forwards for all.
    let _ = tracing::subscriber::set_global_default(Forwarder {
        host: Arc::clone(host),
        max,
        next_span: AtomicU64::new(1),
    });
}

struct Forwarder {
    host: Arc<HostServices>,
    max: LevelFilter,
    next_span: AtomicU64,
}

impl Subscriber for Forwarder {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.max >= *metadata.level()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max)
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed).max(1))
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut visitor = FieldText::default();
        event.record(&mut visitor);
        let meta = event.metadata();
        self.host.log(
            LogLevel::from_tracing(*meta.level()),
            meta.target(),
            &visitor.message,
            visitor.fields.trim_start(),
        );
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

/// An event's `message` and its other fields as `key=value` text.
#[derive(Default)]
struct FieldText {
    message: String,
    fields: String,
}

impl Visit for FieldText {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}
