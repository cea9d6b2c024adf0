//! Plain-text output for people: aligned columns, nothing fancy.

/// Lays rows out in columns separated by two spaces. Columns listed in
/// `right` are right-aligned (numbers).
pub fn columns(rows: &[Vec<String>], right: &[usize]) -> String {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..width)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            let pad = widths[c].saturating_sub(cell.chars().count());
            let last = c + 1 == row.len();
            if right.contains(&c) {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                if !last {
                    line.push_str(&" ".repeat(pad));
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The first sentence of a description, for one-line listings.
pub fn first_sentence(text: &str) -> &str {
    match text.find(": ").into_iter().chain(text.find(". ")).min() {
        Some(end) => &text[..end],
        None => text.trim_end_matches('.'),
    }
}

/// Words wrapped at `width` columns, each line after the first indented.
pub fn wrap(words: &[String], width: usize, indent: usize) -> String {
    let mut out = String::new();
    let mut line_len = 0;
    for word in words {
        if line_len > 0 && line_len + 1 + word.len() > width {
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            line_len = 0;
        } else if line_len > 0 {
            out.push(' ');
            line_len += 1;
        }
        out.push_str(word);
        line_len += word.len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_trim() {
        let rows = vec![
            vec!["ID".to_string(), "N".to_string(), "NOTE".to_string()],
            vec!["long-id".to_string(), "128".to_string(), String::new()],
        ];
        assert_eq!(columns(&rows, &[1]), "ID         N  NOTE\nlong-id  128\n");
    }

    #[test]
    fn first_sentence_stops_at_a_colon_or_full_stop() {
        assert_eq!(first_sentence("Fast rings: v1 plus more."), "Fast rings");
        assert_eq!(first_sentence("One. Two."), "One");
        assert_eq!(first_sentence("Only one."), "Only one");
    }

    #[test]
    fn wrap_breaks_between_words() {
        let words: Vec<String> = ["aaa", "bbb", "ccc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(wrap(&words, 7, 2), "aaa bbb\n  ccc");
    }
}
