//! Accounts, provider presets and where files live.
