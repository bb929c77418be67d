//! The feed quality report: what an agent choosing products from the feed would miss or misread, computed only
//! from the feed's own fields (`acp-merchant catalog check FILE`, `GET /admin/catalog/quality`).
//!
//! Each finding names a rule of [`RULES`] (the README's "Feed quality" table is checked against it), the JSONPath
//! inside the product's feed line, and for variant rules the variant. Severities: `error` only when the line
//! violates the feed schema (the import would refuse it), `warning` for data an agent needs and lacks or cannot
//! trust, `info` for recommendations. A product's score is 100 − 40 per error − 10 per warning − 2 per info,
//! never below 0.

use std::collections::BTreeSet;

use serde::Serialize;

use super::feed::{Barcode, Description, Media, Product, Variant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Info => "info",
        }
    }

    fn penalty(self) -> u32 {
        match self {
            Self::Error => 40,
            Self::Warning => 10,
            Self::Info => 2,
        }
    }
}

/// One rule of the report: its id, severity and what it checks.
pub struct Rule {
    pub id: &'static str,
    pub severity: Severity,
    pub checks: &'static str,
}

/// Recommended title length, in characters.
pub const TITLE_CHARS: std::ops::RangeInclusive<usize> = 70..=90;
/// Recommended description length, in characters of its text.
pub const DESCRIPTION_CHARS: std::ops::RangeInclusive<usize> = 200..=300;

pub const RULES: &[Rule] = &[
    Rule {
        id: "schema",
        severity: Severity::Error,
        checks: "the line is a feed Product as the 2026-04-17 feed schema defines it (the import refuses it otherwise)",
    },
    Rule {
        id: "title_missing",
        severity: Severity::Warning,
        checks: "the product has a title",
    },
    Rule {
        id: "title_length",
        severity: Severity::Info,
        checks: "the product title has 70 to 90 characters",
    },
    Rule {
        id: "description_missing",
        severity: Severity::Warning,
        checks: "the product has a description",
    },
    Rule {
        id: "description_length",
        severity: Severity::Info,
        checks: "the product description's text (plain, else markdown, else HTML without tags) has 200 to 300 characters",
    },
    Rule {
        id: "image_missing",
        severity: Severity::Warning,
        checks: "the product or one of its variants has a media item of type `image`",
    },
    Rule {
        id: "media_not_https",
        severity: Severity::Warning,
        checks: "every media URL starts with `https://`",
    },
    Rule {
        id: "media_shape",
        severity: Severity::Info,
        checks: "an image whose width and height are given is square (1:1) or portrait 4:5",
    },
    Rule {
        id: "price_missing",
        severity: Severity::Warning,
        checks: "every variant has a price",
    },
    Rule {
        id: "price_currency_mismatch",
        severity: Severity::Warning,
        checks: "a variant's list_price is in the currency of its price",
    },
    Rule {
        id: "list_price_below_price",
        severity: Severity::Warning,
        checks: "a variant's list_price is not below its price",
    },
    Rule {
        id: "availability_missing",
        severity: Severity::Warning,
        checks: "every variant has availability with `available` or `status`",
    },
    Rule {
        id: "availability_inconsistent",
        severity: Severity::Warning,
        checks: "`available: true` is not paired with status out_of_stock or discontinued, nor `available: false` with in_stock or limited_stock",
    },
    Rule {
        id: "category_missing",
        severity: Severity::Warning,
        checks: "every variant has at least one category",
    },
    Rule {
        id: "barcode_missing",
        severity: Severity::Info,
        checks: "every variant has a barcode",
    },
    Rule {
        id: "barcode_invalid",
        severity: Severity::Warning,
        checks: "a GTIN, EAN or UPC barcode is all digits, of a length its type allows (GTIN 8, 12, 13 or 14; EAN 8 or 13; UPC 12)",
    },
    Rule {
        id: "barcode_check_digit",
        severity: Severity::Warning,
        checks: "a GTIN, EAN or UPC barcode's last digit is its GS1 check digit",
    },
    Rule {
        id: "variant_options_inconsistent",
        severity: Severity::Warning,
        checks: "every variant of a product with several names the same option dimensions (the set of `variant_options` names) as its first variant",
    },
];

fn severity_of(rule: &str) -> Severity {
    RULES
        .iter()
        .find(|r| r.id == rule)
        .map_or(Severity::Warning, |r| r.severity)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: &'static str,
    pub severity: Severity,
    /// JSONPath inside the product's feed line.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant_id: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProductReport {
    /// `None` when the line has no string `id` to name it by.
    pub product_id: Option<String>,
    /// The line of the checked file (absent for the stored catalog).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub score: u32,
    pub findings: Vec<Finding>,
}

impl ProductReport {
    fn new(product_id: Option<String>, line: Option<usize>, findings: Vec<Finding>) -> Self {
        let penalty: u32 = findings.iter().map(|f| f.severity.penalty()).sum();
        Self {
            product_id,
            line,
            score: 100u32.saturating_sub(penalty),
            findings,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub products: usize,
    pub variants: usize,
    pub errors: usize,
    pub warnings: usize,
    pub infos: usize,
    /// The products' mean score, rounded down (100 for an empty feed).
    pub score: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub summary: Summary,
    pub products: Vec<ProductReport>,
}

impl Report {
    fn new(products: Vec<ProductReport>, variants: usize) -> Self {
        let count = |s: Severity| {
            products
                .iter()
                .flat_map(|p| &p.findings)
                .filter(|f| f.severity == s)
                .count()
        };
        let total: u64 = products.iter().map(|p| u64::from(p.score)).sum();
        let score = if products.is_empty() {
            100
        } else {
            u32::try_from(total / products.len() as u64).unwrap_or(100)
        };
        Self {
            summary: Summary {
                products: products.len(),
                variants,
                errors: count(Severity::Error),
                warnings: count(Severity::Warning),
                infos: count(Severity::Info),
                score,
            },
            products,
        }
    }

    /// Whether any line violates the feed schema.
    pub fn has_errors(&self) -> bool {
        self.summary.errors > 0
    }

    /// The report as lines of text: each product with findings, then the summary.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for p in self.products.iter().filter(|p| !p.findings.is_empty()) {
            let name = p.product_id.as_deref().unwrap_or("(no id)");
            let line = p.line.map(|l| format!(" (line {l})")).unwrap_or_default();
            out.push_str(&format!("{name}{line}: score {}\n", p.score));
            for f in &p.findings {
                out.push_str(&format!(
                    "  {:<8} {:<29} {}: {}\n",
                    f.severity.as_str(),
                    f.rule,
                    f.path,
                    f.message
                ));
            }
        }
        let s = &self.summary;
        out.push_str(&format!(
            "{} products, {} variants: {} errors, {} warnings, {} infos; score {}\n",
            s.products, s.variants, s.errors, s.warnings, s.infos, s.score
        ));
        out
    }
}

/// The report of a JSONL feed file: a line that is not a valid feed Product gets one `schema` error (at the first
/// violation, as the import would name it) and no other finding.
pub fn check_feed(text: &str) -> Report {
    let mut variants = 0;
    let products = super::numbered_lines(text)
        .map(|(line, raw)| match super::parse_line(raw, super::feed::check) {
            Ok(product) => {
                variants += product.variants.len();
                ProductReport::new(Some(product.id.clone()), Some(line), findings(&product))
            }
            Err((path, message)) => {
                let id = serde_json::from_str::<serde_json::Value>(raw)
                    .ok()
                    .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_owned));
                ProductReport::new(id, Some(line), vec![finding("schema", path, None, message)])
            }
        })
        .collect();
    Report::new(products, variants)
}

/// The report of products already parsed (the stored catalog).
pub fn check_products(products: &[Product]) -> Report {
    let variants = products.iter().map(|p| p.variants.len()).sum();
    let reports = products
        .iter()
        .map(|p| ProductReport::new(Some(p.id.clone()), None, findings(p)))
        .collect();
    Report::new(reports, variants)
}

fn finding(rule: &'static str, path: String, variant: Option<&Variant>, message: impl Into<String>) -> Finding {
    Finding {
        rule,
        severity: severity_of(rule),
        path,
        variant_id: variant.map(|v| v.id.clone()),
        message: message.into(),
    }
}

/// Every finding of one valid product, product rules first, then each variant's in feed order.
pub fn findings(product: &Product) -> Vec<Finding> {
    let mut out = Vec::new();
    title(product, &mut out);
    description(product, &mut out);
    media(product, &mut out);
    for (i, v) in product.variants.iter().enumerate() {
        variant(v, &format!("$.variants[{i}]"), &mut out);
    }
    variant_options(product, &mut out);
    out
}

fn title(product: &Product, out: &mut Vec<Finding>) {
    match &product.title {
        None => out.push(finding(
            "title_missing",
            "$.title".into(),
            None,
            "the product has no title",
        )),
        Some(t) if !TITLE_CHARS.contains(&t.chars().count()) => out.push(finding(
            "title_length",
            "$.title".into(),
            None,
            format!("{} characters; 70 to 90 are recommended", t.chars().count()),
        )),
        Some(_) => {}
    }
}

fn description(product: &Product, out: &mut Vec<Finding>) {
    let Some(d) = &product.description else {
        out.push(finding(
            "description_missing",
            "$.description".into(),
            None,
            "the product has no description",
        ));
        return;
    };
    let chars = description_text(d).chars().count();
    if !DESCRIPTION_CHARS.contains(&chars) {
        out.push(finding(
            "description_length",
            "$.description".into(),
            None,
            format!("{chars} characters of text; 200 to 300 are recommended"),
        ));
    }
}

/// The text a reader sees: the plain form, else the markdown source, else the HTML without its tags.
fn description_text(d: &Description) -> String {
    if let Some(plain) = &d.plain {
        return plain.trim().to_owned();
    }
    if let Some(markdown) = &d.markdown {
        return markdown.trim().to_owned();
    }
    let html = d.html.as_deref().unwrap_or("");
    let mut text = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.trim().to_owned()
}

fn media(product: &Product, out: &mut Vec<Finding>) {
    let product_media = product
        .media
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, m)| (format!("$.media[{i}]"), None, m));
    let variant_media = product.variants.iter().enumerate().flat_map(|(j, v)| {
        v.media
            .iter()
            .flatten()
            .enumerate()
            .map(move |(i, m)| (format!("$.variants[{j}].media[{i}]"), Some(v), m))
    });
    let mut any_image = false;
    for (at, variant, m) in product_media.chain(variant_media) {
        any_image |= m.kind == "image";
        media_item(m, &at, variant, out);
    }
    if !any_image {
        out.push(finding(
            "image_missing",
            "$.media".into(),
            None,
            "neither the product nor a variant has an image",
        ));
    }
}

fn media_item(m: &Media, at: &str, variant: Option<&Variant>, out: &mut Vec<Finding>) {
    if !m.url.starts_with("https://") {
        out.push(finding(
            "media_not_https",
            format!("{at}.url"),
            variant,
            "the URL is not https",
        ));
    }
    if let (true, Some(w), Some(h)) = (m.kind == "image", m.width, m.height)
        && w > 0
        && h > 0
        && w != h
        && w * 5 != h * 4
    {
        out.push(finding(
            "media_shape",
            at.to_owned(),
            variant,
            format!("{w}×{h} is neither 1:1 nor 4:5"),
        ));
    }
}

fn variant(v: &Variant, at: &str, out: &mut Vec<Finding>) {
    price(v, at, out);
    availability(v, at, out);
    if v.categories.as_ref().is_none_or(Vec::is_empty) {
        out.push(finding(
            "category_missing",
            format!("{at}.categories"),
            Some(v),
            "the variant has no category",
        ));
    }
    match v.barcodes.as_deref() {
        None | Some([]) => out.push(finding(
            "barcode_missing",
            format!("{at}.barcodes"),
            Some(v),
            "the variant has no barcode",
        )),
        Some(barcodes) => {
            for (i, b) in barcodes.iter().enumerate() {
                barcode(b, &format!("{at}.barcodes[{i}].value"), v, out);
            }
        }
    }
}

fn price(v: &Variant, at: &str, out: &mut Vec<Finding>) {
    let Some(price) = &v.price else {
        out.push(finding(
            "price_missing",
            format!("{at}.price"),
            Some(v),
            "the variant has no price",
        ));
        return;
    };
    let Some(list) = &v.list_price else { return };
    if list.currency != price.currency {
        out.push(finding(
            "price_currency_mismatch",
            format!("{at}.list_price.currency"),
            Some(v),
            format!("list_price is in {}, price in {}", list.currency, price.currency),
        ));
    } else if list.amount < price.amount {
        out.push(finding(
            "list_price_below_price",
            format!("{at}.list_price.amount"),
            Some(v),
            format!("list_price {} is below price {}", list.amount, price.amount),
        ));
    }
}

fn availability(v: &Variant, at: &str, out: &mut Vec<Finding>) {
    let path = format!("{at}.availability");
    let Some(a) = v
        .availability
        .as_ref()
        .filter(|a| a.available.is_some() || a.status.is_some())
    else {
        out.push(finding(
            "availability_missing",
            path,
            Some(v),
            "the variant has no availability",
        ));
        return;
    };
    let contradicts = match (a.available, a.status.as_deref()) {
        (Some(true), Some(status @ ("out_of_stock" | "discontinued"))) => Some(("true", status)),
        (Some(false), Some(status @ ("in_stock" | "limited_stock"))) => Some(("false", status)),
        _ => None,
    };
    if let Some((available, status)) = contradicts {
        out.push(finding(
            "availability_inconsistent",
            path,
            Some(v),
            format!("available is {available} but status is {status}"),
        ));
    }
}

/// The digit counts a barcode type allows, for the types checked (GS1 numbering); `None` for any other type.
fn gs1_lengths(kind: &str) -> Option<&'static [usize]> {
    let kind: String = kind
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_uppercase();
    match kind.as_str() {
        "GTIN" => Some(&[8, 12, 13, 14]),
        "GTIN8" | "EAN8" => Some(&[8]),
        "GTIN12" | "UPC" | "UPCA" => Some(&[12]),
        "EAN" => Some(&[8, 13]),
        "GTIN13" | "EAN13" => Some(&[13]),
        "GTIN14" => Some(&[14]),
        _ => None,
    }
}

fn barcode(b: &Barcode, at: &str, v: &Variant, out: &mut Vec<Finding>) {
    let Some(lengths) = gs1_lengths(&b.kind) else { return };
    if !b.value.bytes().all(|c| c.is_ascii_digit()) || !lengths.contains(&b.value.len()) {
        let allowed: Vec<String> = lengths.iter().map(ToString::to_string).collect();
        out.push(finding(
            "barcode_invalid",
            at.to_owned(),
            Some(v),
            format!("a {} barcode is {} digits", b.kind, allowed.join(" or ")),
        ));
        return;
    }
    let digits: Vec<u32> = b.value.bytes().map(|c| u32::from(c - b'0')).collect();
    let (body, check) = digits.split_at(digits.len() - 1);
    let expected = gs1_check_digit(body);
    if check[0] != expected {
        out.push(finding(
            "barcode_check_digit",
            at.to_owned(),
            Some(v),
            format!("the check digit is {}, {expected} expected", check[0]),
        ));
    }
}

/// GS1's mod-10 check digit: from the right, digits weigh 3, 1, 3, …
pub fn gs1_check_digit(body: &[u32]) -> u32 {
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| if i % 2 == 0 { d * 3 } else { *d })
        .sum();
    (10 - sum % 10) % 10
}

fn variant_options(product: &Product, out: &mut Vec<Finding>) {
    if product.variants.len() < 2 {
        return;
    }
    let names = |v: &Variant| -> BTreeSet<String> {
        v.variant_options
            .iter()
            .flatten()
            .map(|o| o.name.trim().to_lowercase())
            .collect()
    };
    let first = names(&product.variants[0]);
    for (i, v) in product.variants.iter().enumerate().skip(1) {
        let these = names(v);
        if these != first {
            out.push(finding(
                "variant_options_inconsistent",
                format!("$.variants[{i}].variant_options"),
                Some(v),
                format!(
                    "options [{}] differ from the first variant's [{}]",
                    these.into_iter().collect::<Vec<_>>().join(", "),
                    first.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gs1_check_digits_match_published_codes() {
        // GS1's own examples: GTIN-13 4006381333931, GTIN-12 036000291452, GTIN-8 96385074, GTIN-14 10012345678902.
        for code in ["4006381333931", "036000291452", "96385074", "10012345678902"] {
            let digits: Vec<u32> = code.bytes().map(|c| u32::from(c - b'0')).collect();
            let (body, check) = digits.split_at(digits.len() - 1);
            assert_eq!(gs1_check_digit(body), check[0], "{code}");
        }
    }

    #[test]
    fn every_rule_is_named_once() {
        let ids: BTreeSet<&str> = RULES.iter().map(|r| r.id).collect();
        assert_eq!(ids.len(), RULES.len());
        assert!(
            RULES
                .iter()
                .filter(|r| r.severity == Severity::Error)
                .all(|r| r.id == "schema")
        );
    }

    #[test]
    fn the_readme_documents_every_rule_with_its_severity() {
        let readme = include_str!("../../README.md");
        let section = readme.split("### Feed quality").nth(1).expect("a Feed quality section");
        for rule in RULES {
            let row = format!("| `{}` | {} |", rule.id, rule.severity.as_str());
            assert!(section.contains(&row), "README lacks {row}");
        }
    }

    #[test]
    fn scores_fall_by_severity_and_stop_at_zero() {
        let f = |rule| finding(rule, "$".into(), None, "");
        assert_eq!(
            ProductReport::new(None, None, vec![f("title_length"), f("price_missing")]).score,
            88
        );
        assert_eq!(ProductReport::new(None, None, vec![f("schema"); 3]).score, 0);
    }
}
