//! The OData `$filter` subset that the Azure CLI and SDKs send to Microsoft
//! Graph, evaluated against an object's Graph JSON:
//!
//! - `prop eq 'v'` (also `eq null`-free string equality),
//! - `startswith(prop,'v')`,
//! - `coll/any(x:x eq 'v')`,
//!
//! joined with `and`. String comparisons are case-insensitive, as in Graph.

use serde_json::Value;

/// One clause of a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Clause {
    /// `prop eq 'v'`.
    Eq(String, String),
    /// `startswith(prop,'v')`.
    StartsWith(String, String),
    /// `coll/any(x:x eq 'v')`.
    AnyEq(String, String),
}

/// A parsed filter: every clause must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Filter(pub(crate) Vec<Clause>);

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &str) -> bool {
        self.ws();
        let end = self.i + lit.len();
        if end <= self.s.len() && self.s[self.i..end].eq_ignore_ascii_case(lit.as_bytes()) {
            self.i = end;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, lit: &str) -> Result<(), String> {
        if self.eat(lit) {
            Ok(())
        } else {
            Err(format!("expected '{lit}' at position {}", self.i))
        }
    }

    /// A property path: letters, digits, `_`, `.` (no `/`).
    fn ident(&mut self) -> Result<String, String> {
        self.ws();
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || matches!(self.s[self.i], b'_' | b'.'))
        {
            self.i += 1;
        }
        if start == self.i {
            return Err(format!("expected a property name at position {start}"));
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    /// `'text'` with `''` as an escaped quote.
    fn string(&mut self) -> Result<String, String> {
        self.ws();
        if self.s.get(self.i) != Some(&b'\'') {
            return Err(format!("expected a quoted string at position {}", self.i));
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.s.get(self.i) {
                None => return Err("unterminated string".into()),
                Some(b'\'') if self.s.get(self.i + 1) == Some(&b'\'') => {
                    out.push(b'\'');
                    self.i += 2;
                }
                Some(b'\'') => {
                    self.i += 1;
                    break;
                }
                Some(&c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| "invalid UTF-8 in string".into())
    }

    fn keyword_eq(&mut self) -> Result<(), String> {
        self.ws();
        // `eq` must stand alone: "x eq 'v'".
        let start = self.i;
        if self.eat("eq")
            && self
                .s
                .get(self.i)
                .is_some_and(|c| c.is_ascii_whitespace() || *c == b'\'')
        {
            return Ok(());
        }
        self.i = start;
        Err(format!(
            "only the 'eq' operator is supported (position {start})"
        ))
    }

    fn clause(&mut self) -> Result<Clause, String> {
        if self.eat("startswith(") {
            let prop = self.ident()?;
            self.expect(",")?;
            let v = self.string()?;
            self.expect(")")?;
            return Ok(Clause::StartsWith(prop, v));
        }
        let prop = self.ident()?;
        self.ws();
        if self.eat("/any(") {
            let var = self.ident()?;
            self.expect(":")?;
            let var2 = self.ident()?;
            if var != var2 {
                return Err(format!("lambda variable {var2} is not {var}"));
            }
            self.keyword_eq()?;
            let v = self.string()?;
            self.expect(")")?;
            return Ok(Clause::AnyEq(prop, v));
        }
        self.keyword_eq()?;
        let v = self.string()?;
        Ok(Clause::Eq(prop, v))
    }
}

impl Filter {
    /// Parses a `$filter` value; the error says what is not supported.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let mut clauses = vec![p.clause()?];
        loop {
            p.ws();
            if p.i == p.s.len() {
                return Ok(Self(clauses));
            }
            let at = p.i;
            if !(p.eat("and") && p.s.get(p.i).is_some_and(u8::is_ascii_whitespace)) {
                return Err(format!("unsupported filter syntax at position {at}"));
            }
            clauses.push(p.clause()?);
        }
    }

    /// True when `obj` (an object's Graph JSON) satisfies every clause.
    pub(crate) fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|c| match c {
            Clause::Eq(prop, v) => lookup(obj, prop)
                .and_then(Value::as_str)
                .is_some_and(|s| s.eq_ignore_ascii_case(v)),
            Clause::StartsWith(prop, v) => lookup(obj, prop)
                .and_then(Value::as_str)
                .is_some_and(|s| s.to_lowercase().starts_with(&v.to_lowercase())),
            Clause::AnyEq(prop, v) => {
                lookup(obj, prop)
                    .and_then(Value::as_array)
                    .is_some_and(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .any(|s| s.eq_ignore_ascii_case(v))
                    })
            }
        })
    }
}

/// `a.b` or `a/b` property lookup (case-sensitive names, as Graph's are camelCase).
fn lookup<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    path.split(['.', '/']).try_fold(obj, |v, seg| v.get(seg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_what_az_sends() {
        let f = Filter::parse("appId eq '1234'").unwrap();
        assert_eq!(f.0, vec![Clause::Eq("appId".into(), "1234".into())]);
        let f = Filter::parse("startswith(displayName,'my app')").unwrap();
        assert_eq!(
            f.0,
            vec![Clause::StartsWith("displayName".into(), "my app".into())]
        );
        let f =
            Filter::parse("servicePrincipalNames/any(c:c eq 'abc') and displayName eq 'O''Brien'")
                .unwrap();
        assert_eq!(
            f.0,
            vec![
                Clause::AnyEq("servicePrincipalNames".into(), "abc".into()),
                Clause::Eq("displayName".into(), "O'Brien".into()),
            ]
        );
        for bad in [
            "",
            "appId ne 'x'",
            "appId eq x",
            "appId eq 'x' or id eq 'y'",
            "startswith(displayName,'x'",
            "appId eq 'x",
            "ids/any(a:b eq 'x')",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matches_case_insensitively() {
        let obj = json!({"appId": "ABC", "displayName": "My App", "servicePrincipalNames": ["ABC", "api://x"]});
        assert!(Filter::parse("appId eq 'abc'").unwrap().matches(&obj));
        assert!(
            Filter::parse("startswith(displayName,'my')")
                .unwrap()
                .matches(&obj)
        );
        assert!(
            Filter::parse("servicePrincipalNames/any(x:x eq 'API://X')")
                .unwrap()
                .matches(&obj)
        );
        assert!(
            !Filter::parse("appId eq 'abc' and displayName eq 'other'")
                .unwrap()
                .matches(&obj)
        );
        assert!(!Filter::parse("missing eq 'x'").unwrap().matches(&obj));
    }
}
