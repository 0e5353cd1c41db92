//! Finds long functions in Rust source without parsing it fully: a line-based scan that
//! knows enough about comments, string and character literals to match braces, and skips
//! `#[cfg(test)]` modules and test functions.

/// A function whose body spans more lines than the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LongFn {
    /// The function's name.
    pub name: String,
    /// 1-based line of the `fn` keyword.
    pub line: usize,
    /// Lines from the `fn` line to the closing brace, both included.
    pub lines: usize,
    /// The comment lines or attributes right above it carry a `// long:` reason.
    pub justified: bool,
}

/// Every function in `source` (outside test code) longer than `limit` lines.
pub fn long_functions(source: &str, limit: usize) -> Vec<LongFn> {
    let lines: Vec<&str> = source.lines().collect();
    let depths = brace_depths(&lines);
    let mut found = Vec::new();
    let mut skip_until = 0;
    for (i, line) in lines.iter().enumerate() {
        if i < skip_until {
            continue;
        }
        let attrs = attributes_above(&lines, i);
        if is_test_attribute(&attrs) && starts_item(line) {
            // A test module or function: skip it whole.
            skip_until = end_of_item(&lines, &depths, i).map_or(i + 1, |e| e + 1);
            continue;
        }
        let Some(name) = fn_name(line) else { continue };
        let Some(end) = end_of_item(&lines, &depths, i) else {
            continue;
        };
        let len = end - i + 1;
        if len > limit {
            found.push(LongFn {
                name,
                line: i + 1,
                lines: len,
                justified: comment_block_above(&lines, i)
                    .iter()
                    .any(|l| l.trim_start().starts_with("// long:")),
            });
        }
    }
    found
}

/// The attribute lines directly above line `i` (doc comments and comments between them allowed).
fn attributes_above<'a>(lines: &[&'a str], i: usize) -> Vec<&'a str> {
    comment_block_above(lines, i)
        .into_iter()
        .filter(|l| l.trim_start().starts_with("#["))
        .collect()
}

/// The contiguous attribute and comment lines directly above line `i`.
fn comment_block_above<'a>(lines: &[&'a str], i: usize) -> Vec<&'a str> {
    let mut out = Vec::new();
    for l in lines[..i].iter().rev() {
        let t = l.trim_start();
        if t.starts_with("//") || t.starts_with("#[") {
            out.push(*l);
        } else {
            break;
        }
    }
    out
}

fn is_test_attribute(attrs: &[&str]) -> bool {
    attrs.iter().any(|a| {
        let a = a.trim();
        a == "#[test]" || a.ends_with("::test]") || a.starts_with("#[cfg(test)]")
    })
}

/// Whether `line` starts a module or function (what a test attribute can sit on).
fn starts_item(line: &str) -> bool {
    let rest = strip_qualifiers(line.trim_start());
    rest.starts_with("mod ") || rest.starts_with("fn ")
}

/// `name` when `line` declares `fn name`.
fn fn_name(line: &str) -> Option<String> {
    let rest = strip_qualifiers(line.trim_start()).strip_prefix("fn ")?;
    let name: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// Drops visibility and function qualifiers: `pub(crate) async unsafe fn` → `fn`.
fn strip_qualifiers(mut s: &str) -> &str {
    loop {
        let before = s;
        if let Some(r) = s.strip_prefix("pub(")
            && let Some(close) = r.find(')')
        {
            s = r[close + 1..].trim_start();
        }
        for q in [
            "pub ",
            "async ",
            "const ",
            "unsafe ",
            "extern \"C\" ",
            "default ",
        ] {
            if let Some(r) = s.strip_prefix(q) {
                s = r.trim_start();
            }
        }
        if s == before {
            return s;
        }
    }
}

/// The 0-based line that closes the item starting at line `start`: the first line, once the
/// item's first `{` has opened, where the brace depth is back where it was before the item.
/// `None` for a declaration without a body (`fn f();`) or an unbalanced file.
fn end_of_item(lines: &[&str], depths: &[Depth], start: usize) -> Option<usize> {
    let base = if start == 0 {
        0
    } else {
        depths[start - 1].after
    };
    let mut opened = false;
    for (j, line) in lines.iter().enumerate().skip(start) {
        opened |= depths[j].max > base;
        if opened && depths[j].after <= base {
            return Some(j);
        }
        if !opened && code_of(line).trim_end().ends_with(';') {
            return None;
        }
    }
    None
}

/// The brace depth after a line, and the highest it reached within it.
#[derive(Debug, Clone, Copy)]
struct Depth {
    after: i64,
    max: i64,
}

/// Per line: the brace depth after it and the highest within it, ignoring braces in
/// comments, strings and character literals.
fn brace_depths(lines: &[&str]) -> Vec<Depth> {
    let mut depth = 0i64;
    let mut in_block_comment = 0u32;
    let mut in_string: Option<usize> = None; // raw-string hashes, or usize::MAX for "..."
    let mut out = Vec::with_capacity(lines.len());
    for line in lines {
        let mut max = depth;
        let b = line.as_bytes();
        let mut k = 0;
        while k < b.len() {
            if in_block_comment > 0 {
                if b[k..].starts_with(b"*/") {
                    in_block_comment -= 1;
                    k += 2;
                } else if b[k..].starts_with(b"/*") {
                    in_block_comment += 1;
                    k += 2;
                } else {
                    k += 1;
                }
                continue;
            }
            if let Some(hashes) = in_string {
                if hashes == usize::MAX {
                    match b[k] {
                        b'\\' => k += 2,
                        b'"' => {
                            in_string = None;
                            k += 1;
                        }
                        _ => k += 1,
                    }
                } else if b[k] == b'"'
                    && b[k + 1..].iter().take_while(|c| **c == b'#').count() >= hashes
                {
                    in_string = None;
                    k += 1 + hashes;
                } else {
                    k += 1;
                }
                continue;
            }
            match b[k] {
                b'/' if b.get(k + 1) == Some(&b'/') => break,
                b'/' if b.get(k + 1) == Some(&b'*') => {
                    in_block_comment += 1;
                    k += 2;
                }
                b'"' => {
                    in_string = Some(usize::MAX);
                    k += 1;
                }
                b'r' if is_raw_string_start(b, k) => {
                    let hashes = b[k + 1..].iter().take_while(|c| **c == b'#').count();
                    in_string = Some(hashes);
                    k += 2 + hashes;
                }
                b'\'' => k += char_literal_len(b, k),
                b'{' => {
                    depth += 1;
                    max = max.max(depth);
                    k += 1;
                }
                b'}' => {
                    depth -= 1;
                    k += 1;
                }
                _ => k += 1,
            }
        }
        out.push(Depth { after: depth, max });
    }
    out
}

/// `r"` or `r#…"` not part of an identifier (`br"` counts too).
fn is_raw_string_start(b: &[u8], k: usize) -> bool {
    let prev_ident = k > 0 && {
        let p = b[k - 1];
        (p.is_ascii_alphanumeric() || p == b'_') && p != b'b'
    };
    if prev_ident {
        return false;
    }
    let hashes = b[k + 1..].iter().take_while(|c| **c == b'#').count();
    b.get(k + 1 + hashes) == Some(&b'"')
}

/// Bytes to skip at a `'`: a whole character literal (`'{'`, `'\''`, `'\u{7b}'`), or just the
/// quote of a lifetime or label.
fn char_literal_len(b: &[u8], k: usize) -> usize {
    if b.get(k + 1) == Some(&b'\\') {
        // An escape: up to the closing quote.
        return b[k + 2..]
            .iter()
            .position(|c| *c == b'\'')
            .map_or(1, |p| p + 3);
    }
    // One (possibly multi-byte) character, then a quote.
    let ch_len = match b.get(k + 1) {
        Some(c) if *c < 0x80 => 1,
        Some(c) if *c >= 0xF0 => 4,
        Some(c) if *c >= 0xE0 => 3,
        Some(_) => 2,
        None => return 1,
    };
    if b.get(k + 1 + ch_len) == Some(&b'\'') {
        ch_len + 2
    } else {
        1
    }
}

/// The line without a trailing `//` comment (roughly: good enough for `;` and braces).
fn code_of(line: &str) -> &str {
    line.split("//").next().unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: usize) -> String {
        (0..n).map(|i| format!("    let x{i} = {i};\n")).collect()
    }

    #[test]
    fn finds_long_functions_and_their_reasons() {
        let src = format!(
            "fn short() {{\n{}}}\n\n/// Docs.\n// long: one table\n#[inline]\npub(crate) async fn justified() {{\n{}}}\n\npub fn long<T>(t: T)\nwhere\n    T: Clone,\n{{\n{}}}\n",
            body(3),
            body(10),
            body(10)
        );
        let found = long_functions(&src, 8);
        assert_eq!(
            found,
            [
                LongFn {
                    name: "justified".into(),
                    line: 10,
                    lines: 12,
                    justified: true
                },
                LongFn {
                    name: "long".into(),
                    line: 23,
                    lines: 15,
                    justified: false
                },
            ]
        );
    }

    #[test]
    fn braces_in_literals_and_comments_do_not_count() {
        let src = format!(
            "fn tricky() {{\n    let a = '{{';\n    let b = \"}}}}\\\"{{\";\n    let c = r#\"}}\"#;\n    // }}\n    /* }} */\n    let d: &'static str = \"x\";\n{}}}\nfn after() {{\n{}}}\n",
            body(10),
            body(2)
        );
        let found = long_functions(&src, 8);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].name.as_str(), found[0].lines), ("tricky", 18));
    }

    #[test]
    fn test_code_and_declarations_are_skipped() {
        let src = format!(
            "trait T {{\n    fn declared(&self);\n}}\n#[cfg(test)]\nmod tests {{\n    fn helper() {{\n{}    }}\n}}\n#[tokio::test]\nasync fn a_test() {{\n{}}}\n",
            body(10),
            body(10)
        );
        assert_eq!(long_functions(&src, 8), []);
    }
}
