//! Config loading shared by every role: TOML into serde structs with documented defaults,
//! then validation whose errors name the file and the field.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::Error;

/// A config problem in one field, before the file name is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into() }
    }
}

/// Checks a config after it is parsed and flags are applied.
pub trait Validate {
    fn validate(&self) -> Result<(), FieldError>;
}

/// `Err(FieldError)` unless `ok`.
pub fn ensure(ok: bool, field: &str, message: impl Into<String>) -> Result<(), FieldError> {
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(field, message))
    }
}

/// Parse a TOML config file. Unknown keys are errors when the struct says
/// `deny_unknown_fields` (every role's config does: a typo must not be silently ignored).
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
        file: path.to_owned(),
        field: "(file)".into(),
        message: e.to_string(),
    })?;
    parse(path, &text)
}

/// Load `path`, or the defaults when there is none, without validating: a role applies
/// its command-line flags first, then validates.
pub fn load_or_default<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T, Error> {
    match path {
        Some(p) => load(p),
        None => Ok(T::default()),
    }
}

/// Parse TOML text; `path` is only used to name the source in errors.
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, Error> {
    toml::from_str(text).map_err(|e| {
        let span = e.span().map(|s| line_of(text, s.start)).map(|l| format!("line {l}")).unwrap_or_default();
        Error::Config {
            file: path.to_owned(),
            field: if span.is_empty() { "(parse)".into() } else { span },
            message: e.message().to_owned(),
        }
    })
}

/// Run validation, attaching the file name to the error.
pub fn validated<T: Validate>(path: &Path, config: T) -> Result<T, Error> {
    config.validate().map_err(|e| Error::Config { file: path.to_owned(), field: e.field, message: e.message })?;
    Ok(config)
}

fn line_of(text: &str, byte: usize) -> usize {
    text[..byte.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Demo {
        listen: String,
        workers: u32,
    }

    impl Validate for Demo {
        fn validate(&self) -> Result<(), FieldError> {
            ensure(self.workers > 0, "workers", "must be at least 1")
        }
    }

    #[test]
    fn errors_name_file_and_field() {
        let p = Path::new("demo.toml");
        let err = parse::<Demo>(p, "listen = \"x\"\nwrokers = 3\n").unwrap_err().to_string();
        assert!(err.contains("demo.toml") && err.contains("line 2") && err.contains("wrokers"), "{err}");
        let d: Demo = parse(p, "listen = \"x\"").unwrap();
        let err = validated(p, d).unwrap_err().to_string();
        assert_eq!(err, "demo.toml: workers: must be at least 1");
        let err = load::<Demo>(Path::new("/nonexistent/x.toml")).unwrap_err().to_string();
        assert!(err.starts_with("/nonexistent/x.toml: (file):"), "{err}");
    }
}
