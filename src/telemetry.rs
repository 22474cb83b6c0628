//! Logging set-up: structured logs on stderr, pretty for people or JSON for pipelines.

use tracing_subscriber::{EnvFilter, fmt};

use crate::cli::LogFormat;

/// Errors setting up telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter could not be parsed.
    #[error(
        "--log-level {filter:?} is not a valid filter ({source}); use e.g. `info` or `info,cloudoptim=debug`"
    )]
    Filter {
        /// The filter as given.
        filter: String,
        /// Why it did not parse.
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was already installed.
    #[error("logging was already initialised")]
    AlreadyInitialised,
}

/// Install the global tracing subscriber writing to stderr.
pub fn init(format: LogFormat, filter: &str) -> Result<(), TelemetryError> {
    let env_filter = EnvFilter::try_new(filter).map_err(|source| TelemetryError::Filter {
        filter: filter.to_string(),
        source,
    })?;
    let builder = fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|_| TelemetryError::AlreadyInitialised)
}
