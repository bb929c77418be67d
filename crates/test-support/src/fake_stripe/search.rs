//! `GET /v1/payment_intents/search` (<https://docs.stripe.com/api/payment_intents/search>) over a subset of the
//! search query language (<https://docs.stripe.com/search#search-query-language>): `metadata['key']:'value'` and
//! `status:'value'` clauses, separated by whitespace or `AND`.
//!
//! Stripe's search is eventually consistent; `Ledger::search_delay` hides PaymentIntents younger than it.

use super::{Failure, Intent, Ledger, Params, known_params};
use serde_json::{Value, json};

/// https://docs.stripe.com/api/payment_intents/search
const SEARCH_INTENT_PARAMS: &[&str] = &["expand", "limit", "page", "query"];

const URL: &str = "/v1/payment_intents/search";
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;
/// `next_page` cursors are this prefix and the offset of the next result.
const PAGE_PREFIX: &str = "fake_search_page_";

/// One clause of a query; every clause must match (`AND`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Clause {
    Metadata { key: String, value: String },
    Status(String),
}

impl Clause {
    /// Exact match, case-insensitive: what Stripe documents for metadata and `status` (token fields).
    fn matches(&self, intent: &Intent) -> bool {
        match self {
            Clause::Metadata { key, value } => intent.metadata.get(key).is_some_and(|v| v.eq_ignore_ascii_case(value)),
            Clause::Status(status) => intent.status.eq_ignore_ascii_case(status),
        }
    }
}

pub(super) fn search_intents(ledger: &Ledger, params: &Params) -> Result<Value, Failure> {
    known_params(params, SEARCH_INTENT_PARAMS)?;
    let query = params.get("query").ok_or_else(|| Failure::missing("query"))?;
    let clauses = parse_query(query).map_err(|problem| {
        Failure::validation(
            None,
            format!("Invalid search query: {problem} (query: {query})"),
            "query",
        )
    })?;
    let limit = limit(params)?;
    let offset = page_offset(params)?;
    let matching: Vec<&Intent> = ledger
        .intents
        .iter()
        .rev() // newest first
        .filter(|intent| intent.created_at.elapsed() >= ledger.search_delay)
        .filter(|intent| clauses.iter().all(|clause| clause.matches(intent)))
        .collect();
    let data: Vec<Value> = matching.iter().skip(offset).take(limit).map(|i| i.to_json()).collect();
    let next = offset + data.len();
    let has_more = next < matching.len();
    Ok(json!({
        "object": "search_result",
        "data": data,
        "has_more": has_more,
        "next_page": has_more.then(|| format!("{PAGE_PREFIX}{next}")),
        "url": URL,
    }))
}

fn limit(params: &Params) -> Result<usize, Failure> {
    let Some(raw) = params.get("limit") else {
        return Ok(DEFAULT_LIMIT);
    };
    let invalid = |message: String| Failure::validation(Some("parameter_invalid_integer"), message, "limit");
    let value: i64 = raw.parse().map_err(|_| invalid(format!("Invalid integer: {raw}")))?;
    if value < 1 {
        return Err(invalid("This value must be greater than or equal to 1.".into()));
    }
    if value > MAX_LIMIT as i64 {
        return Err(invalid(format!(
            "This value must be less than or equal to {MAX_LIMIT}."
        )));
    }
    Ok(value as usize)
}

/// The offset a `page` cursor (an earlier answer's `next_page`) stands for; 0 without one.
fn page_offset(params: &Params) -> Result<usize, Failure> {
    let Some(page) = params.get("page") else {
        return Ok(0);
    };
    page.strip_prefix(PAGE_PREFIX)
        .and_then(|offset| offset.parse().ok())
        .ok_or_else(|| {
            Failure::validation(
                None,
                format!("Invalid page: {page}. Pass the next_page of an earlier search result."),
                "page",
            )
        })
}

/// Parses the supported subset; `Err` names the problem.
fn parse_query(query: &str) -> Result<Vec<Clause>, String> {
    let mut parser = Parser {
        chars: query.chars().collect(),
        pos: 0,
    };
    let mut clauses = Vec::new();
    loop {
        parser.skip_whitespace();
        if parser.at_end() {
            break;
        }
        if !clauses.is_empty() {
            if parser.keyword("OR") {
                return Err("OR is not supported by this fake Stripe (clauses can only be joined by AND)".into());
            }
            if parser.keyword("AND") {
                parser.skip_whitespace();
                if parser.at_end() {
                    return Err("expected a clause after AND".into());
                }
            }
        }
        clauses.push(parser.clause()?);
        if !parser.at_end() && !parser.peek().is_some_and(char::is_whitespace) {
            return Err(format!("unexpected '{}' at position {}", parser.rest(), parser.pos));
        }
    }
    if clauses.is_empty() {
        return Err("the query is empty".into());
    }
    Ok(clauses)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn rest(&self) -> String {
        self.chars[self.pos..].iter().collect()
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// Consumes `word` (case-insensitive) when it stands alone, followed by whitespace or the end.
    fn keyword(&mut self, word: &str) -> bool {
        let end = self.pos + word.chars().count();
        let Some(candidate) = self.chars.get(self.pos..end) else {
            return false;
        };
        let matches = candidate.iter().collect::<String>().eq_ignore_ascii_case(word)
            && self.chars.get(end).is_none_or(|c| c.is_whitespace());
        if matches {
            self.pos = end;
        }
        matches
    }

    fn eat(&mut self, c: char) -> bool {
        let found = self.peek() == Some(c);
        if found {
            self.pos += 1;
        }
        found
    }

    /// `field:'value'`, the field being `metadata['key']` (or `metadata["key"]`) or `status`.
    fn clause(&mut self) -> Result<Clause, String> {
        let start = self.pos;
        if self.peek() == Some('-') {
            return Err(format!(
                "negation ('-') at position {start} is not supported by this fake Stripe"
            ));
        }
        let field: String = self
            .chars
            .iter()
            .skip(self.pos)
            .take_while(|c| c.is_ascii_alphanumeric() || **c == '_' || **c == '.')
            .collect();
        self.pos += field.chars().count();
        let metadata_key = match field.as_str() {
            "" => return Err(format!("expected a field at position {start}")),
            "metadata" => {
                if !self.eat('[') {
                    return Err(format!("expected [ after metadata at position {}", self.pos));
                }
                let key = self.quoted("metadata key")?;
                if !self.eat(']') {
                    return Err(format!("expected ] after the metadata key at position {}", self.pos));
                }
                Some(key)
            }
            "status" => None,
            other => {
                return Err(format!(
                    "the field '{other}' is not supported by this fake Stripe (supported: metadata['key'], status)"
                ));
            }
        };
        match self.peek() {
            Some(':') => self.pos += 1,
            Some(op @ ('~' | '>' | '<' | '=')) => {
                return Err(format!(
                    "the operator '{op}' at position {} is not valid for this field: use ':' (exact match)",
                    self.pos
                ));
            }
            _ => return Err(format!("expected ':' at position {}", self.pos)),
        }
        let value = self.quoted("value")?;
        Ok(match metadata_key {
            Some(key) => Clause::Metadata { key, value },
            None => Clause::Status(value),
        })
    }

    /// A string in `'` or `"`; a backslash escapes the next character.
    fn quoted(&mut self, what: &str) -> Result<String, String> {
        let start = self.pos;
        let quote = match self.peek() {
            Some(q @ ('\'' | '"')) => q,
            _ => return Err(format!("expected a quoted {what} at position {start}")),
        };
        self.pos += 1;
        let mut text = String::new();
        while let Some(c) = self.peek() {
            self.pos += 1;
            match c {
                '\\' => match self.peek() {
                    Some(escaped) => {
                        text.push(escaped);
                        self.pos += 1;
                    }
                    None => break,
                },
                c if c == quote => return Ok(text),
                c => text.push(c),
            }
        }
        Err(format!("unterminated {what} starting at position {start}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(key: &str, value: &str) -> Clause {
        Clause::Metadata {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn parses_the_supported_subset() {
        assert_eq!(parse_query("metadata['a']:'1'"), Ok(vec![metadata("a", "1")]));
        assert_eq!(parse_query(r#"metadata["a"]:"1""#), Ok(vec![metadata("a", "1")]));
        assert_eq!(
            parse_query("metadata['acp_attempt_id']:'pa_1' AND status:'succeeded'"),
            Ok(vec![
                metadata("acp_attempt_id", "pa_1"),
                Clause::Status("succeeded".into())
            ])
        );
        assert_eq!(
            parse_query("  status:\"canceled\"   and metadata['k']:'v w'  "),
            Ok(vec![Clause::Status("canceled".into()), metadata("k", "v w")])
        );
        assert_eq!(
            parse_query(r#"metadata['k']:'it\'s' metadata["q"]:"say \"hi\"""#),
            Ok(vec![metadata("k", "it's"), metadata("q", "say \"hi\"")])
        );
    }

    #[test]
    fn names_what_it_cannot_parse() {
        for (query, problem) in [
            ("", "empty"),
            ("   ", "empty"),
            ("metadata['a']:'1' OR status:'succeeded'", "OR"),
            ("-status:'succeeded'", "negation"),
            ("amount>1000", "'amount'"),
            ("status>'succeeded'", "operator '>'"),
            ("status:succeeded", "quoted value"),
            ("metadata[a]:'1'", "quoted metadata key"),
            ("metadata['a':'1'", "expected ]"),
            ("metadata['a']:'1", "unterminated value"),
            ("status:'succeeded' AND", "after AND"),
            ("status:'a'status:'b'", "unexpected"),
            ("metadata:'x'", "expected ["),
            (":'x'", "expected a field"),
        ] {
            let error = parse_query(query).expect_err(query);
            assert!(error.contains(problem), "{query}: {error}");
        }
    }
}
