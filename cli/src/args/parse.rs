//! Value parsers for flags: durations, identities, sizes and labels.

pub(super) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    ferrofab_pki::parse_duration(s).map_err(|e| e.to_string())
}

pub(super) fn parse_identity(s: &str) -> Result<ferrofab_pki::Identity, String> {
    s.parse().map_err(|e: ferrofab_pki::PkiError| e.to_string())
}

/// Validates a size but keeps the user's spelling, so diffs and stored
/// specs read the way they were written.
pub(super) fn parse_size_arg(s: &str) -> Result<String, String> {
    ferrofab_types::size::parse_size(s)
        .map(|_| s.trim().to_owned())
        .map_err(|e| e.to_string())
}

/// `key=value`, with a non-empty key.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}
