//! Where mailgate's files live: the config file and the state directory (tokens, later the
//! spool).
//!
//! On Unix the XDG variables (`XDG_CONFIG_HOME`, `XDG_STATE_HOME`) are honoured on every platform,
//! macOS included, so that scripts and tests can point them elsewhere; without them the platform's
//! usual directories are used (`~/.config`, `~/.local/state` on Linux; `~/Library/Application
//! Support` on macOS; `%APPDATA%` and `%LOCALAPPDATA%` on Windows).

use std::path::{Path, PathBuf};

use super::ConfigError;

/// The environment variable that names the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "MAILGATE_CONFIG";

/// The config file to use: `explicit` (from `--config`), else `$MAILGATE_CONFIG`, else
/// `$XDG_CONFIG_HOME/mailgate/config.toml` (or the platform equivalent).
pub fn config_path(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let base = xdg_dir("XDG_CONFIG_HOME")
        .or_else(dirs::config_dir)
        .ok_or(ConfigError::NoHome {
            what: "config directory",
        })?;
    Ok(base.join("mailgate").join("config.toml"))
}

/// The state directory used when the config sets no `state_dir`: `$XDG_STATE_HOME/mailgate`
/// (or the platform equivalent: `~/.local/state/mailgate`, `%LOCALAPPDATA%\mailgate`, ...).
pub fn default_state_dir() -> Result<PathBuf, ConfigError> {
    let base = xdg_dir("XDG_STATE_HOME")
        .or_else(dirs::state_dir)
        .or_else(dirs::data_local_dir)
        .ok_or(ConfigError::NoHome {
            what: "state directory",
        })?;
    Ok(base.join("mailgate"))
}

/// An XDG base directory from the environment. The spec says relative values are invalid and
/// must be ignored.
#[cfg(unix)]
fn xdg_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

#[cfg(not(unix))]
fn xdg_dir(_var: &str) -> Option<PathBuf> {
    None
}

/// Expands a leading `~/` and makes a relative path relative to `base` (the config file's
/// directory), so that a config means the same wherever mailgate is started from.
pub fn resolve_path(value: &str, base: &Path) -> PathBuf {
    let expanded = match value
        .strip_prefix("~/")
        .or_else(|| value.strip_prefix("~\\"))
    {
        Some(rest) => match dirs::home_dir() {
            Some(home) => home.join(rest),
            None => PathBuf::from(value),
        },
        None if value == "~" => dirs::home_dir().unwrap_or_else(|| PathBuf::from(value)),
        None => PathBuf::from(value),
    };
    if expanded.is_absolute() {
        expanded
    } else {
        base.join(expanded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_path_wins() {
        let p = config_path(Some(Path::new("/tmp/x.toml"))).unwrap();
        assert_eq!(p, PathBuf::from("/tmp/x.toml"));
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_dir() {
        let base = Path::new("/etc/mailgate");
        assert_eq!(
            resolve_path("ca.pem", base),
            PathBuf::from("/etc/mailgate/ca.pem")
        );
        assert_eq!(
            resolve_path("/abs/ca.pem", base),
            PathBuf::from("/abs/ca.pem")
        );
    }
}
