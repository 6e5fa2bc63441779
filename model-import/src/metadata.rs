//! Ultralytics export metadata (`names`, `imgsz`, `stride`, `task`, `version`).

use serde::{Deserialize, Serialize};

use crate::ImportError;

/// What Ultralytics writes into `metadata_props` of an exported model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMetadata {
    /// Class names, indexed by class id.
    pub names: Vec<String>,
    /// Network input size `[height, width]`.
    pub imgsz: [usize; 2],
    /// Largest feature stride.
    pub stride: usize,
    /// Ultralytics task (`detect`, `segment`, ...).
    pub task: String,
    /// Ultralytics version that exported the model, if recorded.
    pub version: Option<String>,
    /// Free-text description, if recorded.
    pub description: Option<String>,
}

impl ModelMetadata {
    /// Builds metadata from the raw key/value pairs; `input_hw` comes from the graph's input
    /// shape and is used when `imgsz` is absent.
    pub fn from_props(
        props: &[(String, String)],
        input_hw: Option<[usize; 2]>,
    ) -> Result<Self, ImportError> {
        let get = |key: &str| {
            props
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let names = match get("names") {
            Some(text) => parse_names(text)?,
            None => Vec::new(),
        };
        let imgsz = match get("imgsz") {
            Some(text) => parse_imgsz(text)?,
            None => {
                let size = input_hw.unwrap_or([640, 640]);
                for side in size {
                    check_input_side(side).map_err(|e| {
                        ImportError::Metadata(format!("the graph's input shape: {e}"))
                    })?;
                }
                size
            }
        };
        let stride = get("stride")
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(32);
        Ok(Self {
            names,
            imgsz,
            stride,
            task: get("task").unwrap_or("detect").to_string(),
            version: get("version").map(str::to_string),
            description: get("description").map(str::to_string),
        })
    }
}

/// Parses the Python dict literal Ultralytics stores, e.g. `{0: 'person', 1: "people's"}`.
pub fn parse_names(text: &str) -> Result<Vec<String>, ImportError> {
    let bad = |why: &str| ImportError::Metadata(format!("'names' is not a class dict ({why})"));
    let mut chars = text.trim().chars().peekable();
    if chars.next() != Some('{') {
        return Err(bad("missing '{'"));
    }
    let mut entries: Vec<(usize, String)> = Vec::new();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        match chars.peek() {
            Some('}') => break,
            None => return Err(bad("missing '}'")),
            _ => {}
        }
        let mut digits = String::new();
        while let Some(c) = chars.peek().filter(|c| c.is_ascii_digit()) {
            digits.push(*c);
            chars.next();
        }
        let id: usize = digits
            .parse()
            .map_err(|_| bad("class id is not a number"))?;
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some(':') {
            return Err(bad("missing ':'"));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let quote = chars
            .next()
            .filter(|c| *c == '\'' || *c == '"')
            .ok_or_else(|| bad("class name is not quoted"))?;
        let mut name = String::new();
        loop {
            match chars.next() {
                Some('\\') => name.push(chars.next().ok_or_else(|| bad("dangling escape"))?),
                Some(c) if c == quote => break,
                Some(c) => name.push(c),
                None => return Err(bad("unterminated class name")),
            }
        }
        entries.push((id, name));
    }
    entries.sort_by_key(|(id, _)| *id);
    if entries.iter().enumerate().any(|(i, (id, _))| i != *id) {
        return Err(bad("class ids are not 0..n"));
    }
    Ok(entries.into_iter().map(|(_, name)| name).collect())
}

/// Largest network input side accepted (activation memory grows with its square: 4096
/// took a server to 4.6 GB).
pub const MAX_INPUT_SIDE: usize = 2048;

/// Checks a network input side: a positive multiple of the largest stride (32), at most
/// [`MAX_INPUT_SIDE`].
pub fn check_input_side(side: usize) -> Result<(), String> {
    if side == 0 || !side.is_multiple_of(32) || side > MAX_INPUT_SIDE {
        return Err(format!(
            "input size {side} is not a positive multiple of 32 up to {MAX_INPUT_SIDE}"
        ));
    }
    Ok(())
}

/// Parses `[640, 640]` or `640`; each side must pass [`check_input_side`].
fn parse_imgsz(text: &str) -> Result<[usize; 2], ImportError> {
    let numbers: Vec<usize> = text
        .trim_matches(|c: char| c == '[' || c == ']' || c == '(' || c == ')' || c.is_whitespace())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|_| ImportError::Metadata(format!("'imgsz' is not a size: {text}")))?;
    let size = match numbers.as_slice() {
        [s] => [*s, *s],
        [h, w] => [*h, *w],
        _ => {
            return Err(ImportError::Metadata(format!(
                "'imgsz' is not a size: {text}"
            )));
        }
    };
    for side in size {
        check_input_side(side)
            .map_err(|e| ImportError::Metadata(format!("'imgsz' {text}: {e}")))?;
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_dict_with_both_quote_styles() {
        let names = parse_names(r#"{0: 'person', 1: "people's", 2: 'traffic light'}"#).unwrap();
        assert_eq!(names, vec!["person", "people's", "traffic light"]);
    }

    #[test]
    fn names_with_gaps_are_refused() {
        assert!(parse_names("{0: 'a', 2: 'b'}").is_err());
        assert!(parse_names("['a', 'b']").is_err());
    }

    #[test]
    fn imgsz_forms() {
        assert_eq!(parse_imgsz("[320, 320]").unwrap(), [320, 320]);
        assert_eq!(parse_imgsz("640").unwrap(), [640, 640]);
        assert_eq!(parse_imgsz("[384, 640]").unwrap(), [384, 640]);
        assert!(parse_imgsz("big").is_err());
        // Sizes that once panicked the loader (a zero chunk size; a concatenation of
        // mismatched feature maps) or exhausted memory.
        for bad in ["[0, 0]", "[321, 319]", "[8192, 8192]"] {
            let err = parse_imgsz(bad).unwrap_err().to_string();
            assert!(
                err.contains("not a positive multiple of 32"),
                "{bad}: {err}"
            );
        }
    }
}
