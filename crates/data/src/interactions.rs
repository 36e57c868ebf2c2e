//! Your own interaction data: a CSV/TSV file plus a small schema that names each column's role.
//!
//! Reading happens in two steps so that other file formats can reuse the second:
//! 1. a reader turns a file into a [`RawTable`]: typed raw columns (tokens, token lists,
//!    numbers), one per described column, with the source position of every row;
//! 2. [`RawTable::encode`] builds vocabularies (or applies existing ones) and produces a
//!    [`Batch`] over a [`Schema`] derived from the roles.
//!
//! ```
//! use rec_data::interactions::InteractionSchema;
//! let schema = InteractionSchema::from_toml_str(r#"
//!     delimiter = ","
//!     like_threshold = 4.0
//!     [[columns]]
//!     name = "user"
//!     role = "user"
//!     [[columns]]
//!     name = "item"
//!     role = "item"
//!     [[columns]]
//!     name = "stars"
//!     role = "rating"
//!     [[columns]]
//!     name = "tags"
//!     role = "multi_hot"
//!     separator = "|"
//! "#).unwrap();
//! let csv = "user,item,stars,tags\nu1,i1,5,a|b\nu2,i1,2,\n";
//! let raw = schema.read_bytes(csv.as_bytes(), "example.csv").unwrap();
//! let enc = raw.encode(None).unwrap();
//! assert_eq!(enc.batch.len(), 2);
//! assert_eq!(enc.batch.label("like").unwrap(), &[1.0, 0.0]);
//! assert_eq!(enc.batch.schema.user_field.as_deref(), Some("user"));
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::batch::{Batch, Column};
use crate::encode::Vocab;
use crate::error::{DataError, Result};
use crate::schema::{FieldSpec, Schema, TaskKind, TaskSpec};
use crate::split::{Split, random_split};

/// What a column means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The user ID (at most one column): a categorical field and the schema's user field.
    User,
    /// The item ID (at most one column): a categorical field and the schema's item field.
    Item,
    /// A binary label, 0 or 1 (also `true`/`false`): a binary task.
    Label,
    /// A numeric rating, finite and not negative: a regression task (and the source of `like`
    /// with `like_threshold`).
    Rating,
    /// Unix time in seconds (at most one column): kept beside the batch for time-based splits.
    Timestamp,
    /// Any other categorical value; an empty cell is a missing value (index 0).
    Categorical,
    /// A list of categorical values in one cell, split on `separator`; may be empty.
    MultiHot,
    /// The scenario (at most one column): a categorical field without OOV slot, values
    /// `0..num_scenarios` in sorted order of the scenario names.
    Scenario,
    /// A number used as a dense feature (one float).
    Dense,
    /// A column to skip.
    Ignore,
}

/// One described column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// The column's header name (with `header = true`) or a name of your choice (without a
    /// header, columns are described in file order). It is also the field or task name.
    pub name: String,
    /// What the column means.
    pub role: Role,
    /// Separator inside a `multi_hot` cell (one character; default `|`).
    #[serde(default)]
    pub separator: Option<String>,
}

/// How to read an interaction file: the delimiter, whether there is a header, and the role of
/// each column. Loadable from TOML (unknown keys are rejected).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InteractionSchema {
    /// Field delimiter, one character; `"\t"` or `"tab"` for TSV. Default `,`.
    #[serde(default = "comma")]
    pub delimiter: String,
    /// Whether the first line names the columns (default true). With a header, columns are
    /// matched by name and undescribed columns are ignored; without one, `columns` lists every
    /// column in file order.
    #[serde(default = "yes")]
    pub header: bool,
    /// The described columns.
    pub columns: Vec<ColumnSpec>,
    /// If set, a binary task `like` = (rating >= like_threshold) is derived from the rating
    /// column.
    #[serde(default)]
    pub like_threshold: Option<f32>,
}

fn comma() -> String {
    ",".into()
}

fn yes() -> bool {
    true
}

impl InteractionSchema {
    /// Parses and validates a TOML schema.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let s: Self = toml::from_str(text)
            .map_err(|e| DataError::Invalid(format!("interaction schema: {e}")))?;
        s.validate()?;
        Ok(s)
    }

    /// Reads, parses and validates a TOML schema file.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        Self::from_toml_str(&text)
            .map_err(|e| DataError::Invalid(format!("{}: {e}", path.display())))
    }

    /// A hint for a header read as one column that holds another common delimiter (a TSV file
    /// read with `,`, a CSV file read with `tab`): which delimiter the file seems to use, and
    /// the key that sets it. Empty otherwise.
    fn delimiter_hint(&self, names: &[String]) -> String {
        let [name] = names else {
            return String::new();
        };
        let ours = self.delimiter_byte().ok().map(char::from);
        [('\t', "tab"), (',', ","), (';', ";"), ('|', "|")]
            .into_iter()
            .find(|(c, _)| Some(*c) != ours && name.contains(*c))
            .map(|(c, setting)| {
                format!(
                    " (the header was read as one column holding {c:?}: if the file is delimited by {c:?}, set delimiter = {setting:?} in the schema)"
                )
            })
            .unwrap_or_default()
    }

    /// The delimiter as a byte.
    pub fn delimiter_byte(&self) -> Result<u8> {
        match self.delimiter.as_str() {
            "tab" | "\t" => Ok(b'\t'),
            d if d.len() == 1 && d.is_ascii() => Ok(d.as_bytes()[0]),
            d => Err(DataError::Invalid(format!(
                "delimiter must be one ASCII character (or \"tab\"), got {d:?}"
            ))),
        }
    }

    /// Checks names, roles and separators.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(DataError::Invalid(format!("interaction schema: {m}")));
        self.delimiter_byte()?;
        let mut names = std::collections::HashSet::new();
        for c in &self.columns {
            if c.name.is_empty() {
                return bad("a column has an empty name".into());
            }
            if c.role != Role::Ignore && !names.insert(c.name.as_str()) {
                return bad(format!("column `{}` is described twice", c.name));
            }
            match (&c.role, &c.separator) {
                (Role::MultiHot, Some(s)) if s.chars().count() != 1 => {
                    return bad(format!("separator of `{}` must be one character", c.name));
                }
                (Role::MultiHot, _) | (_, None) => {}
                (_, Some(_)) => {
                    return bad(format!("`{}` has a separator but is not multi_hot", c.name));
                }
            }
        }
        for role in [Role::User, Role::Item, Role::Timestamp, Role::Scenario] {
            if self.columns.iter().filter(|c| c.role == role).count() > 1 {
                return bad(format!("more than one column has role {role:?}"));
            }
        }
        if let Some(t) = self.like_threshold {
            if !t.is_finite() {
                return bad(format!("like_threshold must be a finite number, not {t}"));
            }
            match self
                .columns
                .iter()
                .filter(|c| c.role == Role::Rating)
                .count()
            {
                0 => return bad("like_threshold needs a rating column".into()),
                1 => {}
                _ => {
                    return bad(
                        "like_threshold needs exactly one rating column to derive `like` from"
                            .into(),
                    );
                }
            }
            if self.columns.iter().any(|c| c.name == "like") {
                return bad(
                    "like_threshold derives a task `like`, but a column has that name".into(),
                );
            }
        }
        if !self.columns.iter().any(|c| c.role != Role::Ignore) {
            return bad("no column is described".into());
        }
        Ok(())
    }

    /// Reads a delimited file into a [`RawTable`].
    pub fn read_file(&self, path: &Path) -> Result<RawTable> {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        self.read_bytes(&bytes, path)
    }

    /// This schema for a file to score rather than to train on: with a header, the label and
    /// rating columns the header (`header_names`) lacks are skipped, and so is `like_threshold`
    /// when the rating is. Returns the schema and whether every label and rating column is
    /// there (without a header, every column must be, so it is unchanged and labelled).
    pub fn for_scoring(&self, header_names: &[String]) -> (InteractionSchema, bool) {
        let mut s = self.clone();
        if !self.header {
            return (s, true);
        }
        let mut labelled = true;
        for c in &mut s.columns {
            if matches!(c.role, Role::Label | Role::Rating)
                && !header_names.iter().any(|n| n.trim() == c.name)
            {
                if c.role == Role::Rating {
                    s.like_threshold = None;
                }
                c.role = Role::Ignore;
                labelled = false;
            }
        }
        (s, labelled)
    }

    /// A reader of delimited text (its byte order mark already stripped by the caller, once)
    /// with this schema's delimiter, every line a record (the header too), rows of any width.
    fn reader<'a>(&self, data: &'a [u8]) -> Result<csv::Reader<&'a [u8]>> {
        Ok(csv::ReaderBuilder::new()
            .delimiter(self.delimiter_byte()?)
            .has_headers(false)
            .flexible(true)
            .from_reader(data))
    }

    /// The names in the first line of delimited text (trimmed), or none for an empty text.
    pub fn header_names(&self, data: &[u8], source: &Path) -> Result<Vec<String>> {
        // A UTF-8 byte order mark is not part of the first column's name.
        let data = data.strip_prefix(crate::text::BOM).unwrap_or(data);
        let mut rdr = self.reader(data)?;
        match rdr.byte_records().next() {
            None => Ok(Vec::new()),
            Some(r) => Ok(r
                .map_err(|e| csv_err(source, e))?
                .iter()
                .map(|f| String::from_utf8_lossy(f).trim().to_string())
                .collect()),
        }
    }

    /// Reads delimited text (named `source` in errors) into a [`RawTable`].
    pub fn read_bytes(&self, data: &[u8], source: impl Into<PathBuf>) -> Result<RawTable> {
        self.validate()?;
        let source = source.into();
        // A UTF-8 byte order mark is not part of the first column's name; the record positions
        // below (line numbers) are offsets into the text without it.
        let data = data.strip_prefix(crate::text::BOM).unwrap_or(data);
        let mut rdr = self.reader(data)?;
        let mut records = rdr.byte_records();
        let described: Vec<&ColumnSpec> = self
            .columns
            .iter()
            .filter(|c| c.role != Role::Ignore)
            .collect();
        // Position in the file of each described column, and the expected field count.
        let (positions, width) = if self.header {
            let Some(h) = records.next() else {
                return Err(DataError::parse(&source, 1, "(header)", "", "empty file"));
            };
            let h = h.map_err(|e| csv_err(&source, e))?;
            let names: Vec<String> = h
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    std::str::from_utf8(f)
                        .map(|s| s.trim().to_string())
                        .map_err(|_| {
                            DataError::parse(
                                &source,
                                1,
                                format!("#{}", i + 1),
                                String::from_utf8_lossy(f),
                                "bad encoding: not UTF-8",
                            )
                        })
                })
                .collect::<Result<_>>()?;
            // A described column named twice in the header: which one is meant is a guess.
            for c in &described {
                if names.iter().filter(|n| **n == c.name).count() > 1 {
                    return Err(DataError::parse(
                        &source,
                        1,
                        &c.name,
                        names.join(","),
                        "the header names this column more than once",
                    ));
                }
            }
            let pos = described
                .iter()
                .map(|c| {
                    names.iter().position(|n| *n == c.name).ok_or_else(|| {
                        DataError::parse(
                            &source,
                            1,
                            &c.name,
                            names.join(","),
                            format!(
                                "no such column in the header{}",
                                self.delimiter_hint(&names)
                            ),
                        )
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            (pos, names.len())
        } else {
            let pos = self
                .columns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.role != Role::Ignore)
                .map(|(i, _)| i)
                .collect();
            (pos, self.columns.len())
        };

        let mut cols: Vec<RawColumn> = described.iter().map(|c| RawColumn::empty(c.role)).collect();
        let mut lines = Vec::new();
        let mut counter = LineCounter::new(data);
        for rec in records {
            let rec = rec.map_err(|e| csv_err(&source, e))?;
            let line = rec.position().map_or(0, |p| counter.line_at(p.byte()));
            // A blank line reads as one empty field; so does `""` (an empty value alone on its
            // row, as Python's csv module writes it), which is a row: its first byte is a quote.
            let start = rec.position().map_or(0, |p| p.byte() as usize);
            if rec.len() == 1
                && rec.get(0).is_some_and(|f| f.is_empty())
                && data.get(start) != Some(&b'"')
            {
                continue; // blank line
            }
            // A quote left open swallows the rest of the file into one field; quoted line
            // breaks are not used in interaction logs, so a field with one is refused.
            if let Some(i) = rec.iter().position(|f| f.contains(&b'\n')) {
                return Err(DataError::parse(
                    &source,
                    line,
                    "(row)",
                    String::from_utf8_lossy(&rec[i])
                        .lines()
                        .next()
                        .unwrap_or(""),
                    format!(
                        "field {} spans several lines: an unterminated quote? (quoted line breaks are not supported)",
                        i + 1
                    ),
                ));
            }
            if rec.len() != width {
                // The row as written: its fields joined by the delimiter (the record's bytes
                // alone run the fields together).
                let sep = char::from(self.delimiter_byte()?).to_string();
                let row: Vec<_> = rec.iter().map(String::from_utf8_lossy).collect();
                return Err(DataError::parse(
                    &source,
                    line,
                    "(row)",
                    row.join(&sep),
                    format!("expected {width} fields, found {}", rec.len()),
                ));
            }
            for ((spec, &p), col) in described.iter().zip(&positions).zip(&mut cols) {
                let raw = &rec[p];
                let cell = std::str::from_utf8(raw).map_err(|e| {
                    DataError::parse(
                        &source,
                        line,
                        &spec.name,
                        String::from_utf8_lossy(raw),
                        format!(
                            "bad encoding: not UTF-8 (invalid byte at offset {})",
                            e.valid_up_to()
                        ),
                    )
                })?;
                col.push(spec, cell.trim())
                    .map_err(|reason| DataError::parse(&source, line, &spec.name, cell, reason))?;
            }
            lines.push(line);
        }
        RawTable::new(self.clone(), source, cols, lines)
    }
}

/// Line numbers of records from their byte offsets. The csv reader numbers a record by where
/// it stood before reading it: before the `\n` of the previous record's CRLF and before any
/// blank lines, so its own numbers run early on such files. This counts the line breaks (`\n`,
/// `\r\n` or a lone `\r`) up to the record's first byte instead.
struct LineCounter<'a> {
    data: &'a [u8],
    at: usize,
    line: u64,
}

impl<'a> LineCounter<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            at: 0,
            line: 1,
        }
    }

    /// The line of the record whose reading started at byte `pos` (records in file order).
    fn line_at(&mut self, pos: u64) -> u64 {
        let d = self.data;
        let mut start = (pos as usize).clamp(self.at, d.len());
        while start < d.len() && matches!(d[start], b'\r' | b'\n') {
            start += 1;
        }
        for i in self.at..start {
            match d[i] {
                b'\n' => self.line += 1,
                b'\r' if d.get(i + 1) != Some(&b'\n') => self.line += 1,
                _ => {}
            }
        }
        self.at = start;
        self.line
    }
}

fn csv_err(source: &Path, e: csv::Error) -> DataError {
    let line = e.position().map_or(0, |p| p.line());
    DataError::parse(source, line, "(row)", "", e.to_string())
}

/// The raw values of one described column.
#[derive(Debug, Clone, PartialEq)]
pub enum RawColumn {
    /// One token per row (user, item, categorical, scenario); `""` is missing.
    Tokens(Vec<String>),
    /// A list of tokens per row (multi-hot): row `i` owns `values[offsets[i]..offsets[i+1]]`.
    TokenLists {
        /// All tokens.
        values: Vec<String>,
        /// Start of each row, plus the end.
        offsets: Vec<u32>,
    },
    /// One number per row (label, rating, dense).
    Floats(Vec<f32>),
    /// One integer per row (timestamp).
    Ints(Vec<i64>),
}

impl RawColumn {
    /// An empty column of the kind that holds `role`.
    pub fn empty(role: Role) -> Self {
        match role {
            Role::MultiHot => RawColumn::TokenLists {
                values: Vec::new(),
                offsets: vec![0],
            },
            Role::Label | Role::Rating | Role::Dense => RawColumn::Floats(Vec::new()),
            Role::Timestamp => RawColumn::Ints(Vec::new()),
            _ => RawColumn::Tokens(Vec::new()),
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            RawColumn::Tokens(v) => v.len(),
            RawColumn::TokenLists { offsets, .. } => offsets.len() - 1,
            RawColumn::Floats(v) => v.len(),
            RawColumn::Ints(v) => v.len(),
        }
    }

    /// True when the column has no row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parses one cell for `spec` and appends it; the error is the reason the cell is bad.
    pub fn push(&mut self, spec: &ColumnSpec, cell: &str) -> std::result::Result<(), String> {
        match (self, spec.role) {
            (RawColumn::Tokens(v), role) => {
                if cell.is_empty() && matches!(role, Role::User | Role::Item | Role::Scenario) {
                    return Err("empty value".into());
                }
                v.push(cell.to_string());
            }
            (RawColumn::TokenLists { values, offsets }, _) => {
                let sep = spec
                    .separator
                    .as_deref()
                    .and_then(|s| s.chars().next())
                    .unwrap_or('|');
                values.extend(
                    cell.split(sep)
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(String::from),
                );
                offsets.push(values.len() as u32);
            }
            (RawColumn::Floats(v), Role::Label) => v.push(match cell {
                "1" | "1.0" | "true" | "True" | "TRUE" => 1.0,
                "0" | "0.0" | "false" | "False" | "FALSE" => 0.0,
                _ => return Err("a label must be 0 or 1".into()),
            }),
            (RawColumn::Floats(v), role) => match cell.parse::<f32>() {
                Ok(x) if x < 0.0 && role == Role::Rating => {
                    return Err(
                        "a rating must not be negative (use role \"dense\" for a signed value)"
                            .into(),
                    );
                }
                Ok(x) if x.is_finite() => v.push(x),
                _ => return Err("not a finite number".into()),
            },
            (RawColumn::Ints(v), _) => match cell.parse::<i64>() {
                Ok(x) => v.push(x),
                Err(_) => match crate::text::exact_integer(cell) {
                    Some(Ok(x)) => v.push(x),
                    _ => return Err("not an integer timestamp".into()),
                },
            },
        }
        Ok(())
    }
}

/// A table of raw values, one [`RawColumn`] per described (non-ignored) column of its schema, in
/// schema order; independent of the file format it came from.
#[derive(Debug, Clone)]
pub struct RawTable {
    /// The schema the table was read with.
    pub schema: InteractionSchema,
    /// The source (file) name, for error messages.
    pub source: PathBuf,
    /// One column per described column of `schema`.
    pub columns: Vec<RawColumn>,
    /// Line (or row) number in the source of every row.
    pub lines: Vec<u64>,
}

/// The vocabularies of an encoded table, to encode other tables the same way.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Vocabs {
    /// Token vocabularies of the user, item, categorical and multi-hot fields, by field name.
    pub fields: BTreeMap<String, Vocab>,
    /// Scenario names, by scenario index.
    pub scenarios: Vec<String>,
}

/// An encoded table.
#[derive(Debug, Clone)]
pub struct EncodedTable {
    /// The samples.
    pub batch: Batch,
    /// The vocabularies used.
    pub vocabs: Vocabs,
    /// Timestamps of the rows, if the schema has a timestamp column.
    pub timestamps: Option<Vec<i64>>,
}

impl RawTable {
    /// A table from raw columns; checks that there is one column per described column of
    /// `schema`, each of the right kind and with one entry per line.
    pub fn new(
        schema: InteractionSchema,
        source: PathBuf,
        columns: Vec<RawColumn>,
        lines: Vec<u64>,
    ) -> Result<Self> {
        schema.validate()?;
        let described: Vec<&ColumnSpec> = schema
            .columns
            .iter()
            .filter(|c| c.role != Role::Ignore)
            .collect();
        if described.len() != columns.len() {
            return Err(DataError::Invalid(format!(
                "{}: {} raw columns for {} described columns",
                source.display(),
                columns.len(),
                described.len()
            )));
        }
        for (spec, col) in described.iter().zip(&columns) {
            if std::mem::discriminant(col) != std::mem::discriminant(&RawColumn::empty(spec.role))
                || col.len() != lines.len()
            {
                return Err(DataError::Invalid(format!(
                    "{}: raw column `{}` has the wrong kind or length",
                    source.display(),
                    spec.name
                )));
            }
        }
        Ok(Self {
            schema,
            source,
            columns,
            lines,
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// True when there is no row.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Each described column (every one but `ignore`) with its values.
    pub fn described(&self) -> impl Iterator<Item = (&ColumnSpec, &RawColumn)> {
        self.schema
            .columns
            .iter()
            .filter(|c| c.role != Role::Ignore)
            .zip(&self.columns)
    }

    /// The schema the encoded batch will have (vocabulary sizes from `vocabs`).
    pub fn batch_schema(&self, vocabs: &Vocabs) -> Schema {
        let mut s = Schema {
            num_scenarios: 1,
            ..Default::default()
        };
        for (spec, _) in self.described() {
            let size = |n: &str| vocabs.fields.get(n).map_or(1, Vocab::size);
            match spec.role {
                Role::User | Role::Item | Role::Categorical => {
                    s.fields
                        .push(FieldSpec::categorical(&spec.name, size(&spec.name)));
                    if spec.role == Role::User {
                        s.user_field = Some(spec.name.clone());
                    } else if spec.role == Role::Item {
                        s.item_field = Some(spec.name.clone());
                    }
                }
                Role::MultiHot => s
                    .fields
                    .push(FieldSpec::multi_hot(&spec.name, size(&spec.name))),
                Role::Scenario => {
                    let m = vocabs.scenarios.len().max(1);
                    s.fields.push(FieldSpec::categorical(&spec.name, m));
                    s.scenario_field = Some(spec.name.clone());
                    s.num_scenarios = m;
                }
                Role::Dense => s.fields.push(FieldSpec::dense(&spec.name, 1)),
                Role::Label => s.tasks.push(TaskSpec::new(&spec.name, TaskKind::Binary)),
                Role::Rating => s
                    .tasks
                    .push(TaskSpec::new(&spec.name, TaskKind::Regression)),
                Role::Timestamp | Role::Ignore => {}
            }
        }
        if self.schema.like_threshold.is_some() {
            s.tasks.push(TaskSpec::new("like", TaskKind::Binary));
        }
        s
    }

    /// Builds vocabularies from this table: tokens ordered by frequency (most frequent first,
    /// ties by token), scenario names sorted.
    pub fn build_vocabs(&self) -> Vocabs {
        let mut v = Vocabs::default();
        for (spec, col) in self.described() {
            match (spec.role, col) {
                (Role::Scenario, RawColumn::Tokens(t)) => {
                    let mut names = t.clone();
                    names.sort_unstable();
                    names.dedup();
                    v.scenarios = names;
                }
                (_, RawColumn::Tokens(t)) => {
                    let vocab = Vocab::by_frequency(
                        t.iter().map(String::as_str).filter(|s| !s.is_empty()),
                        1,
                    );
                    v.fields.insert(spec.name.clone(), vocab);
                }
                (_, RawColumn::TokenLists { values, .. }) => {
                    let vocab = Vocab::by_frequency(values.iter().map(String::as_str), 1);
                    v.fields.insert(spec.name.clone(), vocab);
                }
                _ => {}
            }
        }
        v
    }

    /// Encodes the table: with `vocabs`, tokens they lack become [`crate::OOV`] (an unknown
    /// scenario is an error, naming its line); without, vocabularies are built from this table.
    pub fn encode(&self, vocabs: Option<&Vocabs>) -> Result<EncodedTable> {
        if let Some(given) = vocabs {
            // A column the given vocabularies lack (renamed or added since they were built)
            // would otherwise encode as out-of-vocabulary on every row.
            for (spec, col) in self.described() {
                let tokens = matches!(col, RawColumn::Tokens(_) | RawColumn::TokenLists { .. });
                if tokens && spec.role != Role::Scenario && !given.fields.contains_key(&spec.name) {
                    let known: Vec<&str> = given.fields.keys().map(String::as_str).collect();
                    return Err(DataError::Invalid(format!(
                        "{}: column `{}` has no vocabulary among the given ones ({}): the \
                         schema changed since they were built",
                        self.source.display(),
                        spec.name,
                        known.join(", ")
                    )));
                }
            }
        }
        let vocabs = vocabs.cloned().unwrap_or_else(|| self.build_vocabs());
        let schema = Arc::new(self.batch_schema(&vocabs));
        let mut columns = Vec::new();
        let mut labels = Vec::new();
        let mut timestamps = None;
        let mut rating = None;
        for (spec, col) in self.described() {
            match (spec.role, col) {
                (Role::Scenario, RawColumn::Tokens(t)) => {
                    let ids = t
                        .iter()
                        .zip(&self.lines)
                        .map(|(s, &line)| {
                            vocabs
                                .scenarios
                                .binary_search(s)
                                .map(|i| i as u32)
                                .map_err(|_| {
                                    DataError::parse(
                                        &self.source,
                                        line,
                                        &spec.name,
                                        s,
                                        "unknown scenario",
                                    )
                                })
                        })
                        .collect::<Result<Vec<u32>>>()?;
                    columns.push(Column::Ids(ids));
                }
                (_, RawColumn::Tokens(t)) => {
                    let empty = Vocab::new();
                    let v = vocabs.fields.get(&spec.name).unwrap_or(&empty);
                    columns.push(Column::Ids(t.iter().map(|s| v.get(s)).collect()));
                }
                (_, RawColumn::TokenLists { values, offsets }) => {
                    let empty = Vocab::new();
                    let v = vocabs.fields.get(&spec.name).unwrap_or(&empty);
                    columns.push(Column::Ragged {
                        values: values.iter().map(|s| v.get(s)).collect(),
                        offsets: offsets.clone(),
                    });
                }
                (Role::Dense, RawColumn::Floats(x)) => columns.push(Column::Dense {
                    values: x.clone(),
                    dim: 1,
                }),
                (Role::Label, RawColumn::Floats(x)) => labels.push(x.clone()),
                (Role::Rating, RawColumn::Floats(x)) => {
                    labels.push(x.clone());
                    rating = Some(x);
                }
                (_, RawColumn::Ints(x)) => timestamps = Some(x.clone()),
                _ => unreachable!("RawTable::new checks column kinds"),
            }
        }
        if let (Some(th), Some(r)) = (self.schema.like_threshold, rating) {
            labels.push(r.iter().map(|&x| f32::from(u8::from(x >= th))).collect());
        }
        let batch = Batch {
            schema,
            columns,
            labels,
            weights: None,
            slices: Vec::new(),
        };
        batch.validate().map_err(DataError::Invalid)?;
        Ok(EncodedTable {
            batch,
            vocabs,
            timestamps,
        })
    }
}

impl EncodedTable {
    /// A seeded random split of the rows into train/valid/test with the given fractions.
    pub fn random_split(&self, name: &str, seed: u64, fractions: [f64; 3]) -> Split {
        let [a, b, c] = random_split(self.batch.len(), seed, fractions);
        Split {
            name: name.into(),
            seed,
            schema: self.batch.schema.clone(),
            train: self.batch.gather(&a),
            valid: self.batch.gather(&b),
            test: self.batch.gather(&c),
            vocabs: self.vocabs.fields.clone(),
            scenario_names: self.vocabs.scenarios.clone(),
            items: None,
            seq: None,
        }
    }
}
