//! Reading files of one or more `---`-separated YAML (or JSON) documents.

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
#[error("document {index}: {message}")]
pub struct DocumentError {
    /// 1-based position of the document in the file.
    pub index: usize,
    pub message: String,
}

/// The text of `path`, or of stdin when `path` is `-` (as `apply -f -`
/// and `--dataplane-file -` take it).
pub fn read_source(path: &str) -> std::io::Result<String> {
    if path == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(path)
    }
}

/// Every non-empty document of `text`, as JSON values. JSON input is YAML.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, DocumentError> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc).map_err(|e| DocumentError {
            index: i + 1,
            message: e.to_string(),
        })?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}
