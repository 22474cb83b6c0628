//! A reader for the catalog's simple CSV files: a header line naming the columns, then one record per
//! line, fields separated by commas, no quoting. Every error names the file, the line and the column.

use std::str::FromStr;

use super::CatalogError;

/// One data line of a CSV file, with its fields in the order of the columns the caller asked for.
pub(super) struct Row<'a> {
    file: &'a str,
    line: usize,
    columns: &'static [&'static str],
    values: Vec<Option<&'a str>>,
}

/// Reads `text` (named `file` in errors). `columns` lists the columns the caller uses: the first
/// `required` of them must be in the header, the others may be absent (their values are `None`).
/// Columns in the header that are not listed are ignored, so a file may carry extra columns.
pub(super) fn read<'a>(
    file: &'a str,
    text: &'a str,
    columns: &'static [&'static str],
    required: usize,
) -> Result<Vec<Row<'a>>, CatalogError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')));
    let Some((_, header)) = lines.next() else {
        return Err(line_error(
            file,
            1,
            "the file is empty",
            &header_fix(columns, required),
        ));
    };
    let header: Vec<&str> = header.split(',').map(str::trim).collect();
    let mut positions = Vec::with_capacity(columns.len());
    for (i, column) in columns.iter().enumerate() {
        let position = header.iter().position(|h| h == column);
        if position.is_none() && i < required {
            let problem = format!("the header has no column `{column}`");
            return Err(line_error(
                file,
                1,
                &problem,
                &header_fix(columns, required),
            ));
        }
        positions.push(position);
    }

    let mut rows = Vec::new();
    for (line, content) in lines {
        if content.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = content.split(',').map(str::trim).collect();
        if fields.len() != header.len() {
            let problem = format!(
                "{} fields, but the header has {}",
                fields.len(),
                header.len()
            );
            let fix = "write one value per header column, separated by commas (quoted fields are not supported)";
            return Err(line_error(file, line, &problem, fix));
        }
        let values = positions.iter().map(|p| p.map(|p| fields[p])).collect();
        rows.push(Row {
            file,
            line,
            columns,
            values,
        });
    }
    Ok(rows)
}

impl<'a> Row<'a> {
    /// The 1-based line number of this record.
    pub(super) fn line(&self) -> usize {
        self.line
    }

    /// The non-empty value of column `col` (an index into the caller's `columns`).
    pub(super) fn text(&self, col: usize) -> Result<&'a str, CatalogError> {
        match self.values[col] {
            Some(value) if !value.is_empty() => Ok(value),
            _ => Err(self.error(col, "the value is empty", "fill in the value")),
        }
    }

    /// The value of an optional column, `None` when the column is absent or the value empty.
    pub(super) fn optional(&self, col: usize) -> Option<&'a str> {
        self.values[col].filter(|v| !v.is_empty())
    }

    /// The value of column `col` parsed as a number; `what` describes the expected value for the fix.
    pub(super) fn number<T: FromStr>(&self, col: usize, what: &str) -> Result<T, CatalogError> {
        let value = self.text(col)?;
        value.parse().map_err(|_| {
            self.error(
                col,
                &format!("`{value}` is not a number"),
                &format!("write {what}"),
            )
        })
    }

    /// The value of column `col` as a price: a finite number greater than zero (USD per hour).
    pub(super) fn price(&self, col: usize) -> Result<f64, CatalogError> {
        let what = "a price in USD per hour greater than zero, e.g. 0.096";
        let price: f64 = self.number(col, what)?;
        if price.is_finite() && price > 0.0 {
            Ok(price)
        } else {
            Err(self.error(
                col,
                &format!("price `{price}` is not greater than zero"),
                &format!("write {what}"),
            ))
        }
    }

    /// An error located at this line and column `col`.
    pub(super) fn error(&self, col: usize, problem: &str, fix: &str) -> CatalogError {
        CatalogError::Field {
            file: self.file.to_string(),
            line: self.line,
            column: self.columns[col].to_string(),
            problem: problem.to_string(),
            fix: fix.to_string(),
        }
    }
}

fn line_error(file: &str, line: usize, problem: &str, fix: &str) -> CatalogError {
    CatalogError::Line {
        file: file.to_string(),
        line,
        problem: problem.to_string(),
        fix: fix.to_string(),
    }
}

fn header_fix(columns: &[&str], required: usize) -> String {
    format!(
        "start the file with the header line `{}`",
        columns[..required].join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLUMNS: &[&str] = &["name", "price", "note"];

    #[test]
    fn reads_columns_by_header_name_in_any_order_and_ignores_extra_ones() {
        let rows = read(
            "f.csv",
            "extra,price,name\nx,0.5,a\n\nz,1.5,b\r\n",
            COLUMNS,
            2,
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].text(0).unwrap(), "b");
        assert_eq!(rows[1].price(1).unwrap(), 1.5);
        assert_eq!(rows[1].line(), 4);
        assert_eq!(rows[0].optional(2), None);
    }

    #[test]
    fn missing_required_column_names_the_column_and_the_header_to_write() {
        let err = read("f.csv", "name\na\n", COLUMNS, 2)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("f.csv: line 1"), "{err}");
        assert!(err.contains("`price`"), "{err}");
        assert!(err.contains("name,price"), "{err}");
    }

    #[test]
    fn wrong_field_count_names_the_line() {
        let err = read("f.csv", "name,price\na,1\nb,2,3\n", COLUMNS, 2)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("3 fields, but the header has 2"), "{err}");
    }

    #[test]
    fn bad_price_names_line_and_column() {
        let rows = read("f.csv", "name,price\na,cheap\nb,-1\n", COLUMNS, 2).unwrap();
        let err = rows[0].price(1).err().unwrap().to_string();
        assert!(err.contains("f.csv: line 2, column `price`"), "{err}");
        assert!(err.contains("`cheap` is not a number"), "{err}");
        let err = rows[1].price(1).err().unwrap().to_string();
        assert!(
            err.contains("line 3") && err.contains("not greater than zero"),
            "{err}"
        );
    }
}
