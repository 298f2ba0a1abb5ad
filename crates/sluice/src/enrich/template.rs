//! URL and body templates: `{column}` placeholders, `${env:NAME}` secrets, safe encoding and
//! redaction.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::error::{Error, Result};

/// Everything but RFC 3986 unreserved characters is encoded, so a value can never add a
/// path segment (`/`), a query (`?`), a fragment (`#`) or a parameter (`&`, `=`).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What secrets look like once redacted.
pub const REDACTED: &str = "***";

/// Values taken from the environment with `${env:NAME}`: never printed.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    values: Vec<String>,
    /// Every form a secret can take in text an API echoes back, longest first: as is,
    /// percent-encoded (upper and lower case hex, strict and form style), JSON-escaped and
    /// base64 (standard and URL-safe, at each of the three byte alignments).
    forms: Vec<String>,
}

/// Shortest encoded form that is redacted (shorter ones would hit ordinary text).
const MIN_FORM: usize = 6;

impl Secrets {
    /// Replaces every secret value in `text`, in any of its encodings, with `***`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in &self.forms {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), REDACTED);
            }
        }
        out
    }

    /// True when `bytes` hold a secret in any of its forms.
    pub fn found_in(&self, bytes: &[u8]) -> bool {
        let text = String::from_utf8_lossy(bytes);
        self.forms.iter().any(|v| text.contains(v.as_str()))
    }

    fn add(&mut self, value: String) -> usize {
        if let Some(i) = self.values.iter().position(|v| *v == value) {
            return i;
        }
        for form in forms_of(&value) {
            if !self.forms.contains(&form) {
                self.forms.push(form);
            }
        }
        self.forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        self.values.push(value);
        self.values.len() - 1
    }

    fn get(&self, i: usize) -> &str {
        self.values.get(i).map(String::as_str).unwrap_or_default()
    }
}

/// The forms of one secret worth redacting.
fn forms_of(secret: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    use base64::Engine;
    if secret.is_empty() {
        return Vec::new();
    }
    let mut out = vec![secret.to_string()];
    let mut push = |f: String| {
        if f.len() >= MIN_FORM && !out.contains(&f) {
            out.push(f);
        }
    };
    for set in [COMPONENT, NON_ALPHANUMERIC] {
        let upper = utf8_percent_encode(secret, set).to_string();
        push(lower_hex(&upper));
        push(upper);
    }
    let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    push(lower_hex(&form));
    push(form);
    if let Ok(json) = serde_json::to_string(secret) {
        push(json.trim_matches('"').to_string());
    }
    // Inside a longer base64 text the secret starts at any of three byte offsets: only the
    // characters that depend on the secret's bytes alone are matched.
    for engine in [&STANDARD, &URL_SAFE] {
        for offset in 0..3usize {
            let mut bytes = vec![0u8; offset];
            bytes.extend_from_slice(secret.as_bytes());
            let encoded = engine.encode(&bytes);
            let skip = if offset == 0 { 0 } else { 4 };
            let whole = bytes.len() / 3 * 4;
            if whole > skip {
                push(encoded[skip..whole].to_string());
            }
        }
    }
    out
}

/// `%2f` for `%2F`: servers echo either case.
fn lower_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut chars = encoded.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '%' {
            for h in chars.by_ref().take(2) {
                out.push(h.to_ascii_lowercase());
            }
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Lit(String),
    /// Index into the template's column list.
    Col(usize),
    /// Index into [`Secrets`].
    Secret(usize),
}

/// Where a template's output goes, which decides how values are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A URL: values percent-encoded (path segment or query component).
    Url,
    /// A request body: values as JSON.
    Body,
    /// A header value: no `{column}` placeholders.
    Header,
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    pieces: Vec<Piece>,
    /// The columns the placeholders name, in first-use order.
    pub columns: Vec<String>,
    target: Target,
}

/// One placeholder value: its text, and whether it is a JSON number or boolean (inserted
/// bare in a body). `None` is SQL NULL.
pub type Value = Option<(String, bool)>;

impl Template {
    /// The columns the placeholders of a URL and its body name, in first-use order, each
    /// once: a request's key.
    pub fn key_columns(url: &Template, body: Option<&Template>) -> Vec<String> {
        let mut columns = url.columns.clone();
        for c in body.iter().flat_map(|b| b.columns.iter()) {
            if !columns.contains(c) {
                columns.push(c.clone());
            }
        }
        columns
    }

    /// Parses `text`, looking up `${env:NAME}` now (a missing variable is an error).
    pub fn parse(text: &str, target: Target, secrets: &mut Secrets) -> Result<Template> {
        let mut pieces: Vec<Piece> = Vec::new();
        let mut columns: Vec<String> = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if let Some(after) = rest.strip_prefix("${env:") {
                let end = after
                    .find('}')
                    .ok_or_else(|| Error::Config(format!("'${{env:' is not closed in '{text}'")))?;
                let name = &after[..end];
                let value = std::env::var(name).map_err(|_| {
                    Error::Config(format!("environment variable {name} is not set"))
                })?;
                flush(&mut lit, &mut pieces);
                pieces.push(Piece::Secret(secrets.add(value)));
                rest = &after[end + 1..];
                continue;
            }
            if rest.starts_with("{{") || rest.starts_with("}}") {
                lit.push(c);
                rest = &rest[2..];
                continue;
            }
            if c == '{' {
                let name_len = rest[1..]
                    .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_' || ch == '.'))
                    .unwrap_or(rest.len() - 1);
                let name = &rest[1..1 + name_len];
                let closed = rest[1 + name_len..].starts_with('}');
                let ident = name
                    .chars()
                    .next()
                    .is_some_and(|f| f.is_ascii_alphabetic() || f == '_');
                if closed && ident {
                    if target == Target::Header {
                        return Err(Error::Config(format!(
                            "header values cannot use column placeholders ('{{{name}}}')"
                        )));
                    }
                    flush(&mut lit, &mut pieces);
                    let index = match columns.iter().position(|n| n == name) {
                        Some(i) => i,
                        None => {
                            columns.push(name.to_string());
                            columns.len() - 1
                        }
                    };
                    pieces.push(Piece::Col(index));
                    rest = &rest[name_len + 2..];
                    continue;
                }
            }
            lit.push(c);
            rest = &rest[c.len_utf8()..];
        }
        flush(&mut lit, &mut pieces);
        Ok(Template {
            pieces,
            columns,
            target,
        })
    }

    /// The scheme, host and port every request goes to: the template's literal start up to
    /// its path. `None` when a placeholder or secret comes first (a row value could then
    /// choose where the request goes).
    pub fn origin(&self) -> Option<&str> {
        let Some(Piece::Lit(first)) = self.pieces.first() else {
            return None;
        };
        let after = first.find("://")? + 3;
        match first[after..].find(['/', '?', '#']) {
            Some(end) => Some(&first[..after + end]),
            None if self.pieces.len() == 1 => Some(first),
            None => None,
        }
    }

    /// True when the template uses a secret.
    pub fn has_secret(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Secret(_)))
    }

    /// Renders with `values` (one per entry of [`Template::columns`]): the real text and
    /// the text with secrets redacted. A NULL value, or a path value that could change the
    /// path (empty, `.`, `..`), is an error naming the column.
    pub fn render(
        &self,
        values: &[Value],
        secrets: &Secrets,
    ) -> std::result::Result<(String, String), String> {
        let mut real = String::new();
        let mut shown = String::new();
        let mut in_query = false;
        for piece in &self.pieces {
            match piece {
                Piece::Lit(s) => {
                    if self.target == Target::Url && s.contains('?') {
                        in_query = true;
                    }
                    real.push_str(s);
                    shown.push_str(s);
                }
                Piece::Secret(i) => {
                    let v = secrets.get(*i);
                    match self.target {
                        Target::Url => real.extend(utf8_percent_encode(v, COMPONENT)),
                        _ => real.push_str(v),
                    }
                    shown.push_str(REDACTED);
                }
                Piece::Col(i) => {
                    let name = self.columns.get(*i).map(String::as_str).unwrap_or("?");
                    let value = values.get(*i).cloned().flatten();
                    let text = match (self.target, value) {
                        (Target::Body, None) => "null".to_string(),
                        (_, None) => return Err(format!("column '{name}' is NULL")),
                        (Target::Body, Some((v, true))) => v,
                        (Target::Body, Some((v, false))) => {
                            serde_json::Value::String(v).to_string()
                        }
                        (_, Some((v, _))) => {
                            if !in_query && (v.is_empty() || v == "." || v == "..") {
                                return Err(format!(
                                    "column '{name}' value '{v}' cannot be a URL path segment"
                                ));
                            }
                            utf8_percent_encode(&v, COMPONENT).to_string()
                        }
                    };
                    real.push_str(&text);
                    shown.push_str(&text);
                }
            }
        }
        Ok((real, shown))
    }
}

fn flush(lit: &mut String, pieces: &mut Vec<Piece>) {
    if !lit.is_empty() {
        pieces.push(Piece::Lit(std::mem::take(lit)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_is_literal_or_none() {
        let origin = |t: &str| {
            let mut s = Secrets::default();
            Template::parse(t, Target::Url, &mut s)
                .expect("parse")
                .origin()
                .map(str::to_string)
        };
        assert_eq!(
            origin("http://h:8/m/{id}?k={v}").as_deref(),
            Some("http://h:8")
        );
        assert_eq!(origin("https://h").as_deref(), Some("https://h"));
        assert_eq!(origin("https://h?x={v}").as_deref(), Some("https://h"));
        assert_eq!(origin("http://{host}/m"), None);
        assert_eq!(origin("http://h:{port}/m"), None);
        assert_eq!(origin("http://h{suffix}/m"), None);
        assert_eq!(origin("{scheme}://h/m"), None);
        assert_eq!(origin("h/m"), None);
    }

    fn url(t: &str, values: &[&str]) -> std::result::Result<String, String> {
        let mut s = Secrets::default();
        let t = Template::parse(t, Target::Url, &mut s).map_err(|e| e.to_string())?;
        let v: Vec<Value> = values
            .iter()
            .map(|v| Some((v.to_string(), false)))
            .collect();
        t.render(&v, &s).map(|(real, _)| real)
    }

    #[test]
    fn values_stay_inside_their_segment_or_component() {
        assert_eq!(
            url("http://h/m/{id}", &["a/../b"]).as_deref(),
            Ok("http://h/m/a%2F..%2Fb")
        );
        assert_eq!(
            url("http://h/m/{id}", &["x?y#z"]).as_deref(),
            Ok("http://h/m/x%3Fy%23z")
        );
        assert_eq!(
            url("http://h/m/{id}", &["a b"]).as_deref(),
            Ok("http://h/m/a%20b")
        );
        assert_eq!(
            url("http://h/m/{id}", &["é"]).as_deref(),
            Ok("http://h/m/%C3%A9")
        );
        assert_eq!(
            url("http://h/m?q={q}&l={l}", &["a&b=c", "x+y"]).as_deref(),
            Ok("http://h/m?q=a%26b%3Dc&l=x%2By")
        );
        assert!(url("http://h/m/{id}", &[".."]).is_err());
        assert!(url("http://h/m/{id}", &[""]).is_err());
        assert_eq!(
            url("http://h/m?q={q}", &[".."]).as_deref(),
            Ok("http://h/m?q=..")
        );
    }

    #[test]
    fn placeholders_and_literal_braces() {
        let mut s = Secrets::default();
        let t = Template::parse(
            r#"{"id": {id}, "n": {n}, "x": "{{lit}}"}"#,
            Target::Body,
            &mut s,
        )
        .expect("parse");
        assert_eq!(t.columns, ["id", "n"]);
        let (body, _) = t
            .render(
                &[Some(("a\"b".into(), false)), Some(("42".into(), true))],
                &s,
            )
            .expect("render");
        assert_eq!(body, r#"{"id": "a\"b", "n": 42, "x": "{lit}"}"#);
    }

    #[test]
    fn secrets_are_interpolated_and_redacted() {
        std::env::set_var("SLUICE_TEMPLATE_TEST_TOKEN", "s3cr3t-value");
        let mut s = Secrets::default();
        let t = Template::parse(
            "http://h/m/{id}?key=${env:SLUICE_TEMPLATE_TEST_TOKEN}",
            Target::Url,
            &mut s,
        )
        .expect("parse");
        let (real, shown) = t.render(&[Some(("1".into(), false))], &s).expect("render");
        assert_eq!(real, "http://h/m/1?key=s3cr3t-value");
        assert_eq!(shown, "http://h/m/1?key=***");
        assert_eq!(s.redact("error at s3cr3t-value!"), "error at ***!");
    }

    #[test]
    fn every_encoding_of_a_secret_is_redacted() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        use base64::Engine;
        let mut s = Secrets::default();
        let secret = "tok/en+with spaces&\"quotes\"é";
        s.add(secret.to_string());
        let strict = utf8_percent_encode(secret, COMPONENT).to_string();
        let echoes = [
            secret.to_string(),
            strict.clone(),
            strict.to_ascii_lowercase(),
            url::form_urlencoded::byte_serialize(secret.as_bytes()).collect(),
            serde_json::to_string(secret).expect("json"),
            STANDARD.encode(secret),
            STANDARD.encode(format!("user:{secret}")),
            STANDARD.encode(format!("ab:{secret}")),
            URL_SAFE_NO_PAD.encode(format!("x{secret}y")),
        ];
        for echo in echoes {
            let text = format!("echo: {echo} end");
            let red = s.redact(&text);
            assert!(red.contains(REDACTED), "{echo} -> {red}");
            // What is left of the echo cannot hold the secret's bytes.
            assert!(red.len() < text.len() - echo.len() / 2, "{echo} -> {red}");
            assert!(s.found_in(text.as_bytes()), "{echo}");
        }
        assert!(!s.found_in(b"an ordinary body"));
        let missing = Template::parse("${env:SLUICE_NOT_SET_ANYWHERE}", Target::Url, &mut s);
        assert!(missing.is_err());
    }
}
