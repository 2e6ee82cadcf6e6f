//! Plain-text tables for terminals and reports (comfy-table, no borders): the
//! first `left` columns align left, the rest (numbers) right.

use comfy_table::{presets, CellAlignment, ContentArrangement, Table};

/// Renders `header` and `rows` as aligned columns.
pub fn render(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>, left: usize) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().copied());
    for row in rows {
        table.add_row(row);
    }
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_cell_alignment(if i < left {
            CellAlignment::Left
        } else {
            CellAlignment::Right
        });
    }
    table
        .lines()
        .map(|l| l.trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_align() {
        let t = super::render(
            &["op", "count"],
            [
                vec!["vote.cast".to_owned(), "5".to_owned()],
                vec!["dm".to_owned(), "12345".to_owned()],
            ],
            1,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        let ends: Vec<usize> = lines.iter().map(|l| l.len()).collect();
        assert!(
            ends.iter().all(|e| *e == ends[0]),
            "numbers align right:\n{t}"
        );
        assert!(
            lines[2].starts_with(" dm") || lines[2].starts_with("dm"),
            "{t}"
        );
    }
}
