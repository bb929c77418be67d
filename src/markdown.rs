//! ACP markdown rules: content is CommonMark and must not carry raw HTML (inline tags, HTML blocks, comments,
//! processing instructions). We parse rather than pattern-match, so `a < b` in prose is fine.

use pulldown_cmark::{Event, Parser};

pub fn contains_raw_html(markdown: &str) -> bool {
    Parser::new(markdown).any(|event| matches!(event, Event::Html(_) | Event::InlineHtml(_)))
}

#[cfg(test)]
mod tests {
    use super::contains_raw_html;

    #[test]
    fn refuses_tags_blocks_and_comments() {
        for bad in [
            "<script>alert(1)</script>",
            "hello <b>x</b>",
            "<div>\nblock\n</div>",
            "<!-- c -->",
            "<img src=x>",
        ] {
            assert!(contains_raw_html(bad), "{bad}");
        }
    }

    #[test]
    fn accepts_plain_commonmark() {
        for ok in [
            "**bold** and [link](https://x.example)",
            "a < b and c > d",
            "`<code>` is literal",
            "- item",
        ] {
            assert!(!contains_raw_html(ok), "{ok}");
        }
    }
}
