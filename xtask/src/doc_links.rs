//! A test that every relative link in README.md and docs/ leads somewhere: the file exists and,
//! when the link names a section (`file.md#section`), the file has a heading with that anchor.
//! Sections move between files as the docs grow; a link left behind is found here, not by a
//! reader.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// GitHub's anchor of a heading: of its text as shown (a link's target left out), lower case,
/// punctuation dropped (but `-` and `_`), spaces turned into `-`.
fn slug(heading: &str) -> String {
    let mut shown = String::new();
    let mut rest = heading;
    while let Some(i) = rest.find("](") {
        shown.push_str(&rest[..i]);
        rest = rest[i..].find(')').map_or("", |j| &rest[i + j + 1..]);
    }
    shown.push_str(rest);
    shown
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The lines of `text` outside fenced code blocks, with their numbers (from 1).
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push((i + 1, l));
        }
    }
    out
}

/// The anchors of a Markdown file's headings (a repeated heading gets `-1`, `-2`, ...).
fn anchors(text: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    for (_, l) in prose_lines(text) {
        let Some(h) = l.strip_prefix('#') else {
            continue;
        };
        let base = slug(h.trim_start_matches('#'));
        let mut a = base.clone();
        let mut k = 0;
        while seen.contains(&a) {
            k += 1;
            a = format!("{base}-{k}");
        }
        seen.insert(a);
    }
    seen
}

/// The targets of the inline links `[text](target)` of one line, code spans left out.
fn link_targets(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    // Every other piece between backticks is code.
    for (k, piece) in line.split('`').enumerate() {
        if k % 2 == 1 {
            continue;
        }
        let mut rest = piece;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(j) = after.find(')') else { break };
            out.push(after[..j].trim());
            rest = &after[j + 1..];
        }
    }
    out
}

/// Every broken relative link of the Markdown files under `root`, as "file:line: target (why)".
fn broken_links(root: &Path, files: &[PathBuf]) -> Vec<String> {
    let mut broken = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        let dir = file.parent().unwrap();
        let name = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        for (n, line) in prose_lines(&text) {
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") || target.is_empty() {
                    continue;
                }
                let (path, anchor) = match target.split_once('#') {
                    Some((p, a)) => (p, Some(a)),
                    None => (target, None),
                };
                let dest = if path.is_empty() {
                    file.clone()
                } else {
                    dir.join(path)
                };
                if !dest.exists() {
                    broken.push(format!("{name}:{n}: {target} (no such file)"));
                    continue;
                }
                if let Some(a) = anchor
                    && dest.extension().is_some_and(|e| e == "md")
                    && !anchors(&std::fs::read_to_string(&dest).unwrap()).contains(a)
                {
                    broken.push(format!("{name}:{n}: {target} (no such section)"));
                }
            }
        }
    }
    broken
}

fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            markdown_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "md") {
            out.push(p);
        }
    }
}

#[test]
fn every_relative_link_in_the_docs_leads_somewhere() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = vec![root.join("README.md")];
    markdown_files(&root.join("docs"), &mut files);
    assert!(files.len() > 10, "found only {files:?}");
    let broken = broken_links(root, &files);
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_link_check_finds_a_missing_file_and_a_missing_section() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a.md");
    std::fs::write(
        tmp.path().join("b.md"),
        "# Title\n## The smallest country: what was tried\n## Use it\n## Use it\n\
         ### DUPN ([docs/results/dupn.md](docs/results/dupn.md))\n",
    )
    .unwrap();
    std::fs::write(
        &a,
        "[ok](b.md#the-smallest-country-what-was-tried) [ok](b.md#use-it-1) [ok](#here)\n\
         [ok](b.md#dupn-docsresultsdupnmd)\n\
         [bad](c.md) [bad](b.md#nowhere) `[code](c.md)` [web](https://x.org/c.md)\n\
         ```\n[fenced](c.md)\n```\n# Here\n",
    )
    .unwrap();
    let broken = broken_links(tmp.path(), &[a]);
    assert_eq!(
        broken,
        vec![
            "a.md:3: c.md (no such file)".to_string(),
            "a.md:3: b.md#nowhere (no such section)".to_string()
        ]
    );
}
