//! The ARM template expression language: `"[func(args).prop[0]]"` strings.
//!
//! [`parse_string`] turns a JSON string into a literal or an [`Expr`] (a
//! leading `[[` escapes the bracket); [`eval`] evaluates an expression against
//! a [`Scope`]. Every function is looked up in [`FUNCTIONS`]: an unknown one is
//! an error naming it, never a silent pass-through. Pure: no IO.

use serde_json::{Map, Value};

use super::TemplateError;
use super::budget::{Budget, size_of};

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `'text'` (with `''` unescaped).
    Str(String),
    /// An integer literal.
    Int(i64),
    /// `name(args…)`.
    Call(String, Vec<Expr>),
    /// `expr.property`.
    Prop(Box<Expr>, String),
    /// `expr[index]`.
    Index(Box<Expr>, Box<Expr>),
}

/// The functions misim evaluates (lower case).
pub const FUNCTIONS: &[&str] = &[
    "parameters",
    "variables",
    "resourceid",
    "subscriptionresourceid",
    "concat",
    "reference",
    "resourcegroup",
    "subscription",
    "format",
    "guid",
    "tolower",
    "toupper",
    "uniquestring",
    "string",
    "equals",
    "not",
    "if",
    "true",
    "false",
    "null",
    "empty",
    "length",
];

/// What an expression can see besides its arguments.
pub trait Scope {
    /// The deployment's subscription id.
    fn subscription_id(&self) -> &str;
    /// The tenant trusted by the subscription.
    fn tenant_id(&self) -> &str;
    /// The deployment's resource group (`name`, `location`).
    fn resource_group(&self) -> (&str, &str);
    /// A resolved parameter value.
    fn parameter(&self, name: &str) -> Result<Value, TemplateError>;
    /// A variable's value (evaluated on demand).
    fn variable(&self, name: &str) -> Result<Value, TemplateError>;
    /// The state of a deployed resource: `target` is an id or a template
    /// resource name; `full` selects the whole resource, else `properties`.
    fn reference(&self, target: &str, full: bool) -> Result<Value, TemplateError>;
    /// The deployment's evaluation budget.
    fn budget(&self) -> &Budget;
}

/// Longest expression ARM accepts:
/// https://learn.microsoft.com/azure/azure-resource-manager/templates/best-practices#template-limits
pub const MAX_EXPRESSION_CHARS: usize = 24_576;

fn invalid(msg: impl Into<String>) -> TemplateError {
    TemplateError::Invalid(msg.into())
}

/// Parses a JSON string value: `Ok(None)` for a literal (see [`literal`]).
pub fn parse_string(s: &str) -> Result<Option<Expr>, TemplateError> {
    if s.starts_with("[[") || !(s.starts_with('[') && s.ends_with(']')) {
        return Ok(None);
    }
    let inner = &s[1..s.len() - 1];
    let chars = inner.chars().count();
    if chars > MAX_EXPRESSION_CHARS {
        return Err(invalid(format!(
            "Deployment template validation failed: 'The template language expression is {chars} characters long; the limit is {MAX_EXPRESSION_CHARS}.'"
        )));
    }
    let mut p = Parser {
        src: inner,
        chars: inner.char_indices().collect(),
        pos: 0,
        depth: 0,
    };
    let e = p.expr().map_err(|m| {
        invalid(format!(
            "The template language expression '{inner}' is not valid: {m}"
        ))
    })?;
    p.skip_ws();
    if p.pos != p.chars.len() {
        return Err(invalid(format!(
            "The template language expression '{inner}' is not valid: unexpected text at position {}",
            p.pos
        )));
    }
    check_functions(&e)?;
    Ok(Some(e))
}

/// The literal value of a string that is not an expression (`[[x]` → `[x]`).
pub fn literal(s: &str) -> &str {
    if s.starts_with("[[") { &s[1..] } else { s }
}

fn check_functions(e: &Expr) -> Result<(), TemplateError> {
    match e {
        Expr::Str(_) | Expr::Int(_) => Ok(()),
        Expr::Call(name, args) => {
            if !FUNCTIONS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(TemplateError::UnsupportedFunction(name.clone()));
            }
            args.iter().try_for_each(check_functions)
        }
        Expr::Prop(b, _) => check_functions(b),
        Expr::Index(a, b) => {
            check_functions(a)?;
            check_functions(b)
        }
    }
}

struct Parser<'a> {
    src: &'a str,
    chars: Vec<(usize, char)>,
    pos: usize,
    /// Nesting depth of the tree built so far (calls, property and index
    /// access): parsing, checking and evaluating all recurse on it.
    depth: usize,
}

/// Deepest expression accepted. Real templates nest a handful of levels; a
/// hostile body nesting thousands would overflow the stack of every service
/// in the process.
const MAX_DEPTH: usize = 64;

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).map(|(_, c)| *c)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: char) -> Result<(), String> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!("expected '{c}' at position {}", self.pos))
        }
    }

    fn ident(&mut self) -> Result<String, String> {
        self.skip_ws();
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(format!("expected a name at position {start}"));
        }
        Ok(self.slice(start, self.pos))
    }

    fn slice(&self, from: usize, to: usize) -> String {
        let a = self.chars.get(from).map_or(self.src.len(), |(i, _)| *i);
        let b = self.chars.get(to).map_or(self.src.len(), |(i, _)| *i);
        self.src[a..b].to_owned()
    }

    fn expr(&mut self) -> Result<Expr, String> {
        let entry_depth = self.depth;
        let r = self.expr_inner();
        self.depth = entry_depth;
        r
    }

    fn deeper(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!(
                "the expression nests deeper than {MAX_DEPTH} levels"
            ));
        }
        Ok(())
    }

    fn expr_inner(&mut self) -> Result<Expr, String> {
        self.deeper()?;
        let mut e = self.primary()?;
        loop {
            self.skip_ws();
            match self.peek() {
                Some('.') => {
                    self.pos += 1;
                    self.deeper()?;
                    let name = self.ident()?;
                    e = Expr::Prop(Box::new(e), name);
                }
                Some('[') => {
                    self.pos += 1;
                    self.deeper()?;
                    let idx = self.expr()?;
                    self.eat(']')?;
                    e = Expr::Index(Box::new(e), Box::new(idx));
                }
                _ => return Ok(e),
            }
        }
    }

    fn primary(&mut self) -> Result<Expr, String> {
        self.skip_ws();
        match self.peek() {
            Some('\'') => {
                self.pos += 1;
                let mut s = String::new();
                loop {
                    match self.peek() {
                        None => return Err("unterminated string literal".into()),
                        Some('\'') if self.chars.get(self.pos + 1).map(|c| c.1) == Some('\'') => {
                            s.push('\'');
                            self.pos += 2;
                        }
                        Some('\'') => {
                            self.pos += 1;
                            return Ok(Expr::Str(s));
                        }
                        Some(c) => {
                            s.push(c);
                            self.pos += 1;
                        }
                    }
                }
            }
            Some(c) if c.is_ascii_digit() || c == '-' => {
                let start = self.pos;
                self.pos += 1;
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.pos += 1;
                }
                let text = self.slice(start, self.pos);
                text.parse()
                    .map(Expr::Int)
                    .map_err(|_| format!("'{text}' is not an integer"))
            }
            Some(_) => {
                let name = self.ident()?;
                self.eat('(')?;
                let mut args = Vec::new();
                self.skip_ws();
                if self.peek() == Some(')') {
                    self.pos += 1;
                    return Ok(Expr::Call(name, args));
                }
                loop {
                    args.push(self.expr()?);
                    self.skip_ws();
                    match self.peek() {
                        Some(',') => self.pos += 1,
                        Some(')') => {
                            self.pos += 1;
                            return Ok(Expr::Call(name, args));
                        }
                        _ => return Err(format!("expected ',' or ')' at position {}", self.pos)),
                    }
                }
            }
            None => Err("unexpected end of expression".into()),
        }
    }
}

/// The string form ARM uses when a value meets a string function.
pub fn to_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn want_str<'v>(f: &str, v: &'v Value) -> Result<&'v str, TemplateError> {
    v.as_str().ok_or_else(|| {
        invalid(format!(
            "The template function '{f}' expects a string argument, got {}",
            abbreviate(v)
        ))
    })
}

fn arity(f: &str, args: &[Value], min: usize, max: usize) -> Result<(), TemplateError> {
    if args.len() < min || args.len() > max {
        return Err(invalid(format!(
            "The template function '{f}' takes {min}..{max} arguments, got {}",
            args.len()
        )));
    }
    Ok(())
}

/// Evaluates an expression within the scope's [`Budget`].
pub fn eval(e: &Expr, scope: &dyn Scope) -> Result<Value, TemplateError> {
    eval_sized(e, scope).map(|(v, _)| v)
}

/// [`eval`], also returning the value's [`size_of`]. Every value is charged
/// to the budget as it is materialised.
fn eval_sized(e: &Expr, scope: &dyn Scope) -> Result<(Value, usize), TemplateError> {
    let budget = scope.budget();
    let _level = budget.enter()?;
    budget.charge(1)?;
    let v = match e {
        Expr::Str(s) => {
            budget.charge(s.len())?;
            return Ok((Value::String(s.clone()), s.len() + 2));
        }
        Expr::Int(i) => return Ok((Value::from(*i), 8)),
        Expr::Call(name, raw_args) => {
            // The arguments together are bounded like one value, so a call
            // never holds (or concatenates) more than that.
            let mut args = Vec::with_capacity(raw_args.len());
            let mut total = 0usize;
            for a in raw_args {
                let (v, n) = eval_sized(a, scope)?;
                total = total.saturating_add(n);
                budget.check_size(total)?;
                args.push(v);
            }
            if name.eq_ignore_ascii_case("variables") {
                // Kept out of `call` (whose frame is large in debug builds):
                // chains of variables recurse through here.
                arity(name, &args, 1, 1)?;
                scope.variable(want_str(name, &args[0])?)?
            } else {
                call(name, &args, scope)?
            }
        }
        other => eval_access(other, scope)?,
    };
    let n = size_of(&v);
    budget.check_size(n)?;
    budget.charge(n)?;
    Ok((v, n))
}

/// `expr.property` and `expr[index]`.
fn eval_access(e: &Expr, scope: &dyn Scope) -> Result<Value, TemplateError> {
    match e {
        Expr::Prop(base, name) => {
            let v = eval(base, scope)?;
            let obj = v.as_object().ok_or_else(|| {
                invalid(format!(
                    "The language expression property '{name}' can't be evaluated: the value is not an object"
                ))
            })?;
            obj.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .ok_or_else(|| {
                    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
                    invalid(format!(
                        "The language expression property '{name}' doesn't exist, available properties are '{}'.",
                        keys.join(", ")
                    ))
                })
        }
        Expr::Index(base, idx) => {
            let v = eval(base, scope)?;
            let i = eval(idx, scope)?;
            match (&v, &i) {
                (Value::Array(a), Value::Number(n)) => n
                    .as_u64()
                    .and_then(|n| a.get(usize::try_from(n).ok()?))
                    .cloned()
                    .ok_or_else(|| invalid(format!("The index {n} is out of range"))),
                (Value::Object(o), Value::String(k)) => o
                    .iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| {
                        invalid(format!(
                            "The language expression property '{k}' doesn't exist"
                        ))
                    }),
                _ => Err(invalid(format!(
                    "cannot index {} with {}",
                    abbreviate(&v),
                    abbreviate(&i)
                ))),
            }
        }
        Expr::Str(_) | Expr::Int(_) | Expr::Call(..) => eval(e, scope),
    }
}

/// A value for an error message: never the whole of a large one.
pub(crate) fn abbreviate(v: &Value) -> String {
    const MAX: usize = 120;
    let text = v.to_string();
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text,
    }
}

// long: the table of template functions, one arm each.
fn call(name: &str, args: &[Value], scope: &dyn Scope) -> Result<Value, TemplateError> {
    let f = name.to_ascii_lowercase();
    let s = |i: usize| want_str(name, &args[i]);
    match f.as_str() {
        "parameters" => {
            arity(name, args, 1, 1)?;
            scope.parameter(s(0)?)
        }
        "variables" => {
            arity(name, args, 1, 1)?;
            scope.variable(s(0)?)
        }
        "resourceid" | "subscriptionresourceid" => {
            let texts = args
                .iter()
                .map(|a| want_str(name, a).map(str::to_owned))
                .collect::<Result<Vec<_>, _>>()?;
            resource_id(&texts, f == "subscriptionresourceid", scope).map(Value::String)
        }
        "concat" => {
            if !args.is_empty() && args.iter().all(Value::is_array) {
                Ok(Value::Array(
                    args.iter()
                        .flat_map(|a| a.as_array().cloned().unwrap_or_default())
                        .collect(),
                ))
            } else {
                Ok(Value::String(args.iter().map(to_text).collect()))
            }
        }
        "reference" => {
            arity(name, args, 1, 3)?;
            let full = match args.get(2) {
                None => false,
                Some(v) if want_str(name, v)?.eq_ignore_ascii_case("full") => true,
                Some(v) => {
                    return Err(invalid(format!(
                        "reference: unknown option {}",
                        abbreviate(v)
                    )));
                }
            };
            scope.reference(s(0)?, full)
        }
        "resourcegroup" => {
            arity(name, args, 0, 0)?;
            let (rg, location) = scope.resource_group();
            let sub = scope.subscription_id();
            Ok(serde_json::json!({
                "id": format!("/subscriptions/{sub}/resourceGroups/{rg}"),
                "name": rg, "type": "Microsoft.Resources/resourceGroups",
                "location": location, "properties": {"provisioningState": "Succeeded"},
            }))
        }
        "subscription" => {
            arity(name, args, 0, 0)?;
            let sub = scope.subscription_id();
            Ok(serde_json::json!({
                "id": format!("/subscriptions/{sub}"), "subscriptionId": sub,
                "tenantId": scope.tenant_id(), "displayName": "Sim Subscription",
            }))
        }
        "format" => {
            arity(name, args, 1, usize::MAX)?;
            format_net(s(0)?, &args[1..], scope.budget()).map(Value::String)
        }
        "guid" => {
            arity(name, args, 1, usize::MAX)?;
            let texts = args
                .iter()
                .map(|a| want_str(name, a))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Value::String(deterministic_guid(&texts.join("-"))))
        }
        "uniquestring" => {
            arity(name, args, 1, usize::MAX)?;
            let texts = args
                .iter()
                .map(|a| want_str(name, a))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Value::String(unique_string(&texts.join("-"))))
        }
        "tolower" => {
            arity(name, args, 1, 1)?;
            Ok(Value::String(s(0)?.to_lowercase()))
        }
        "toupper" => {
            arity(name, args, 1, 1)?;
            Ok(Value::String(s(0)?.to_uppercase()))
        }
        "string" => {
            arity(name, args, 1, 1)?;
            Ok(Value::String(to_text(&args[0])))
        }
        "equals" => {
            arity(name, args, 2, 2)?;
            Ok(Value::Bool(json_eq(&args[0], &args[1])))
        }
        "not" => {
            arity(name, args, 1, 1)?;
            let b = args[0]
                .as_bool()
                .ok_or_else(|| invalid("The template function 'not' expects a boolean"))?;
            Ok(Value::Bool(!b))
        }
        "if" => {
            arity(name, args, 3, 3)?;
            let b = args[0]
                .as_bool()
                .ok_or_else(|| invalid("The template function 'if' expects a boolean condition"))?;
            Ok(if b { args[1].clone() } else { args[2].clone() })
        }
        "true" => Ok(Value::Bool(true)),
        "false" => Ok(Value::Bool(false)),
        "null" => Ok(Value::Null),
        "empty" => {
            arity(name, args, 1, 1)?;
            Ok(Value::Bool(match &args[0] {
                Value::Null => true,
                Value::String(s) => s.is_empty(),
                Value::Array(a) => a.is_empty(),
                Value::Object(o) => o.is_empty(),
                _ => false,
            }))
        }
        "length" => {
            arity(name, args, 1, 1)?;
            let n = match &args[0] {
                Value::String(s) => s.chars().count(),
                Value::Array(a) => a.len(),
                Value::Object(o) => o.len(),
                other => {
                    return Err(invalid(format!(
                        "length: unsupported value {}",
                        abbreviate(other)
                    )));
                }
            };
            Ok(Value::from(n))
        }
        _ => Err(TemplateError::UnsupportedFunction(name.to_owned())),
    }
}

/// `equals`: structural comparison (strings compare ordinally, as in ARM).
fn json_eq(a: &Value, b: &Value) -> bool {
    a == b
}

/// `resourceId([sub], [rg], type, names…)`: the first argument with a `/` is the type.
fn resource_id(
    args: &[String],
    sub_level: bool,
    scope: &dyn Scope,
) -> Result<String, TemplateError> {
    let ti = args.iter().position(|a| a.contains('/')).ok_or_else(|| {
        invalid("The template function 'resourceId' needs a resource type such as 'Microsoft.Compute/virtualMachines'")
    })?;
    let ty = &args[ti];
    let names = &args[ti + 1..];
    let mut ty_segs = ty.split('/');
    let ns = ty_segs.next().unwrap_or_default();
    let ty_segs: Vec<&str> = ty_segs.collect();
    if ty_segs.is_empty() || ty_segs.len() != names.len() {
        return Err(invalid(format!(
            "Unable to evaluate template language function 'resourceId': the type '{ty}' requires {} resource name argument(s).",
            ty_segs.len()
        )));
    }
    let (sub, rg) = match (sub_level, &args[..ti]) {
        (false, []) => (
            scope.subscription_id().to_owned(),
            Some(scope.resource_group().0.to_owned()),
        ),
        (false, [rg]) => (scope.subscription_id().to_owned(), Some(rg.clone())),
        (false, [sub, rg]) => (sub.clone(), Some(rg.clone())),
        (true, []) => (scope.subscription_id().to_owned(), None),
        (true, [sub]) => (sub.clone(), None),
        _ => {
            return Err(invalid(
                "The template function 'resourceId' was given too many scope arguments",
            ));
        }
    };
    let mut id = format!("/subscriptions/{sub}");
    if let Some(rg) = rg {
        id.push_str(&format!("/resourceGroups/{rg}"));
    }
    id.push_str(&format!("/providers/{ns}"));
    for (t, n) in ty_segs.iter().zip(names) {
        id.push_str(&format!("/{t}/{n}"));
    }
    Ok(id)
}

/// .NET composite formatting: `{0}`, `{1:fmt}` (format ignored), `{{`, `}}`.
///
/// The only function whose value can outgrow its arguments many times over
/// (every placeholder repeats an argument), so it checks the size as it
/// writes: 8,000 `{0}` of a 1 MB argument would otherwise build 8 GB before
/// the value is measured.
fn format_net(fmt: &str, args: &[Value], budget: &Budget) -> Result<String, TemplateError> {
    let mut out = String::new();
    let mut it = fmt.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '{' if it.peek() == Some(&'{') => {
                it.next();
                out.push('{');
            }
            '}' if it.peek() == Some(&'}') => {
                it.next();
                out.push('}');
            }
            '{' => {
                let mut spec = String::new();
                for d in it.by_ref() {
                    if d == '}' {
                        break;
                    }
                    spec.push(d);
                }
                let index = spec.split([':', ',']).next().unwrap_or("").trim();
                let v = index
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| args.get(i))
                    .ok_or_else(|| invalid(format!("format: no argument for '{{{spec}}}'")))?;
                match v {
                    Value::String(s) => out.push_str(s),
                    other => out.push_str(&to_text(other)),
                }
                budget.check_size(out.len())?;
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

/// `guid()`: a name-based (v5, SHA-1) UUID in ARM's namespace
/// `11fb06fb-712d-4ddd-98c7-e71bbd588830` over the `-`-joined arguments.
pub fn deterministic_guid(name: &str) -> String {
    const NS: [u8; 16] = [
        0x11, 0xfb, 0x06, 0xfb, 0x71, 0x2d, 0x4d, 0xdd, 0x98, 0xc7, 0xe7, 0x1b, 0xbd, 0x58, 0x88,
        0x30,
    ];
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(&NS);
    ctx.update(name.as_bytes());
    let d = ctx.finish();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `uniqueString()`: 13 lower-case base32 characters derived from a hash of
/// the `-`-joined arguments. Deterministic, but not bit-identical to Azure's.
pub fn unique_string(input: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let d = ring::digest::digest(&ring::digest::SHA256, input.as_bytes());
    let mut n = u64::from_be_bytes(d.as_ref()[..8].try_into().expect("sha256 has 32 bytes"));
    let mut out = String::with_capacity(13);
    for _ in 0..13 {
        out.push(ALPHABET[(n >> 59) as usize] as char);
        n <<= 5;
    }
    out
}

/// Evaluates every expression string inside a JSON value (object keys are
/// kept), within the scope's [`Budget`].
pub fn eval_value(v: &Value, scope: &dyn Scope) -> Result<Value, TemplateError> {
    let (v, _) = eval_value_sized(v, scope)?;
    // Every value leaving the engine passes here (a variable's too, before
    // it is nested in others); measuring it costs less than its size, which
    // was charged.
    scope.budget().check_nesting(&v)?;
    Ok(v)
}

fn eval_value_sized(v: &Value, scope: &dyn Scope) -> Result<(Value, usize), TemplateError> {
    let budget = scope.budget();
    let _level = budget.enter()?;
    budget.charge(1)?;
    Ok(match v {
        Value::String(s) => {
            // Parsing is work too.
            budget.charge(s.len())?;
            match parse_string(s)? {
                Some(e) => eval_sized(&e, scope)?,
                None => {
                    let text = literal(s);
                    (Value::String(text.to_owned()), text.len() + 2)
                }
            }
        }
        Value::Array(a) => {
            let mut out = Vec::with_capacity(a.len());
            let mut total = 2usize;
            for x in a {
                let (v, n) = eval_value_sized(x, scope)?;
                total = total.saturating_add(n + 1);
                budget.check_size(total)?;
                out.push(v);
            }
            (Value::Array(out), total)
        }
        Value::Object(o) => {
            let mut m = Map::new();
            let mut total = 2usize;
            for (k, x) in o {
                let (v, n) = eval_value_sized(x, scope)?;
                total = total.saturating_add(k.len() + 4 + n);
                budget.check_size(total)?;
                m.insert(k.clone(), v);
            }
            (Value::Object(m), total)
        }
        other => (other.clone(), size_of(other)),
    })
}

/// Parses every expression string in a JSON value (syntax and function names).
pub fn validate_value(v: &Value) -> Result<(), TemplateError> {
    match v {
        Value::String(s) => parse_string(s).map(|_| ()),
        Value::Array(a) => a.iter().try_for_each(validate_value),
        Value::Object(o) => o.values().try_for_each(validate_value),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hostile_nesting_is_an_invalid_template_not_a_stack_overflow() {
        let deep = format!("[{}'x'{}]", "concat(".repeat(100_000), ")".repeat(100_000));
        assert!(matches!(
            parse_string(&deep),
            Err(TemplateError::Invalid(_))
        ));
        let chain = format!("[parameters('vmName'){}]", ".a".repeat(100_000));
        assert!(matches!(
            parse_string(&chain),
            Err(TemplateError::Invalid(_))
        ));
        let fine = format!("[{}'x'{}]", "concat(".repeat(20), ")".repeat(20));
        assert!(parse_string(&fine).unwrap().is_some());
    }

    struct Fake(Budget);

    impl Scope for Fake {
        fn budget(&self) -> &Budget {
            &self.0
        }
        fn subscription_id(&self) -> &str {
            "sub1"
        }
        fn tenant_id(&self) -> &str {
            "tid1"
        }
        fn resource_group(&self) -> (&str, &str) {
            ("rg1", "eastus")
        }
        fn parameter(&self, name: &str) -> Result<Value, TemplateError> {
            match name {
                "vmName" => Ok(json!("myVM")),
                "n" => Ok(json!(3)),
                "wide" => Ok(json!("x".repeat(32 * 1024))),
                _ => Err(invalid(format!("no parameter {name}"))),
            }
        }
        fn variable(&self, name: &str) -> Result<Value, TemplateError> {
            match name {
                "nic" => Ok(json!("myNic")),
                "list" => Ok(json!(["a", "b"])),
                _ => Err(invalid(format!("no variable {name}"))),
            }
        }
        fn reference(&self, target: &str, full: bool) -> Result<Value, TemplateError> {
            let p = json!({"vmId": "v-1", "hardwareProfile": {"vmSize": "B1s"}});
            if full {
                Ok(json!({"id": target, "identity": {"principalId": "p-1"}, "properties": p}))
            } else {
                Ok(p)
            }
        }
    }

    fn ev(s: &str) -> Result<Value, TemplateError> {
        eval_value(&json!(s), &Fake(Budget::default()))
    }

    #[test]
    fn evaluates_the_table() {
        let vm = "/subscriptions/sub1/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/myVM";
        let cases: Vec<(&str, Value)> = vec![
            ("plain text", json!("plain text")),
            ("[[not an expression]", json!("[not an expression]")),
            ("['it''s']", json!("it's")),
            ("[parameters('vmName')]", json!("myVM")),
            ("[variables('nic')]", json!("myNic")),
            ("[variables('list')[1]]", json!("b")),
            (
                "[concat('a', parameters('vmName'), 'NSG')]",
                json!("amyVMNSG"),
            ),
            (
                "[concat(variables('list'), variables('list'))]",
                json!(["a", "b", "a", "b"]),
            ),
            ("[concat('n=', parameters('n'))]", json!("n=3")),
            (
                "[resourceId('Microsoft.Compute/virtualMachines', parameters('vmName'))]",
                json!(vm),
            ),
            (
                "[resourceId('other', 'Microsoft.Network/virtualNetworks/subnets', 'v', 's')]",
                json!(
                    "/subscriptions/sub1/resourceGroups/other/providers/Microsoft.Network/virtualNetworks/v/subnets/s"
                ),
            ),
            (
                "[resourceId('s2', 'g2', 'Microsoft.KeyVault/vaults', 'kv')]",
                json!("/subscriptions/s2/resourceGroups/g2/providers/Microsoft.KeyVault/vaults/kv"),
            ),
            (
                "[subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'g')]",
                json!("/subscriptions/sub1/providers/Microsoft.Authorization/roleDefinitions/g"),
            ),
            (
                "[reference(resourceId('Microsoft.Compute/virtualMachines', 'myVM'), '2019-07-01', 'Full').identity.principalId]",
                json!("p-1"),
            ),
            (
                "[reference('myVM', '2019-07-01').hardwareProfile.vmSize]",
                json!("B1s"),
            ),
            (
                "[reference('myVM').HARDWAREPROFILE['vmSize']]",
                json!("B1s"),
            ),
            ("[resourceGroup().location]", json!("eastus")),
            (
                "[resourceGroup().id]",
                json!("/subscriptions/sub1/resourceGroups/rg1"),
            ),
            ("[subscription().subscriptionId]", json!("sub1")),
            ("[subscription().tenantId]", json!("tid1")),
            (
                "[format('{0}-{1}-{{x}}', 'a', parameters('n'))]",
                json!("a-3-{x}"),
            ),
            ("[toLower('AbC')]", json!("abc")),
            ("[toUpper(concat('a', toLower('B')))]", json!("AB")),
            (
                "[if(equals(parameters('n'), 3), 'yes', 'no')]",
                json!("yes"),
            ),
            ("[not(empty(parameters('vmName')))]", json!(true)),
            ("[length(variables('list'))]", json!(2)),
            ("[ string( 42 ) ]", json!("42")),
        ];
        for (input, want) in cases {
            assert_eq!(ev(input).unwrap(), want, "{input}");
        }
    }

    /// Peak resident memory of this test process so far, in bytes
    /// (nextest runs each test in its own process).
    #[cfg(target_os = "linux")]
    fn peak_rss() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|l| l.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
            .unwrap();
        kb * 1024
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn format_stops_at_the_value_limit_instead_of_building_the_whole_string() {
        // 8,000 placeholders (an expression of 24,000 characters) of a 32 KB
        // argument would be 256 MB; with a 1 MB argument, 8 GB.
        let e = format!("[format('{}', parameters('wide'))]", "{0}".repeat(8_000));
        let budget = Budget::default();
        match eval_value(&json!(e), &Fake(budget)) {
            Err(TemplateError::Budget(m)) => {
                assert!(
                    m.contains("produces a value larger than 4194304 bytes"),
                    "{m}"
                )
            }
            other => panic!("{:?}", other.map(|v| abbreviate(&v))),
        }
        let peak = peak_rss();
        assert!(peak < 96 * 1024 * 1024, "peak resident memory {peak} bytes");
    }

    #[test]
    fn guid_and_unique_string_are_deterministic() {
        let a = ev("[guid('a', 'b')]").unwrap();
        assert_eq!(a, ev("[guid(concat('a', '-', 'b'))]").unwrap());
        assert_ne!(a, ev("[guid('a', 'c')]").unwrap());
        let g = a.as_str().unwrap();
        assert_eq!(g.len(), 36);
        assert_eq!(&g[14..15], "5", "version 5");
        let u = ev("[uniqueString(resourceGroup().id)]").unwrap();
        let u = u.as_str().unwrap();
        assert_eq!(u.len(), 13);
        assert!(
            u.chars()
                .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c))
        );
        assert_eq!(u, unique_string("/subscriptions/sub1/resourceGroups/rg1"));
    }

    #[test]
    fn unsupported_functions_are_named() {
        for (input, name) in [
            ("[listKeys('x', '2020-01-01')]", "listKeys"),
            ("[concat('a', utcNow())]", "utcNow"),
            ("[reference(deployment().name)]", "deployment"),
        ] {
            match ev(input) {
                Err(TemplateError::UnsupportedFunction(n)) => assert_eq!(n, name, "{input}"),
                other => panic!("{input}: {other:?}"),
            }
            assert!(validate_value(&json!({"x": [input]})).is_err());
        }
        let msg = TemplateError::UnsupportedFunction("utcNow".into()).to_string();
        assert_eq!(
            msg,
            "The template function 'utcNow' is not supported by misim."
        );
    }

    #[test]
    fn syntax_and_evaluation_errors() {
        for bad in [
            "[concat('a']",
            "['unterminated]",
            "[parameters('x') junk]",
            "[resourceId('Microsoft.Compute/virtualMachines')]",
            "[reference('vm', '1', 'Full').identity.nope]",
            "[parameters('missing')]",
            "[format('{3}', 'a')]",
            "[.x]",
        ] {
            assert!(
                matches!(ev(bad), Err(TemplateError::Invalid(_))),
                "{bad}: {:?}",
                ev(bad)
            );
        }
    }

    const CASES: u32 = 512;

    /// Expression text from the language's own tokens, so that cases reach
    /// evaluation rather than stopping at the first character.
    fn expression() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let token = prop::sample::select(vec![
            "concat(",
            "format(",
            "if(",
            "equals(",
            "not(",
            "length(",
            "empty(",
            "toLower(",
            "string(",
            "guid(",
            "uniqueString(",
            "resourceId(",
            "reference(",
            "variables(",
            "parameters(",
            "resourceGroup()",
            "subscription()",
            "true()",
            "null()",
            "utcNow()",
            "'vmName'",
            "'list'",
            "'n'",
            "'{0}{1}'",
            "'Microsoft.A/b'",
            "'Full'",
            "'",
            "''",
            "1",
            "-1",
            "99999999999999999999",
            ",",
            ")",
            "(",
            "[",
            "]",
            ".",
            ".id",
            "[0]",
            " ",
            "x",
        ]);
        proptest::collection::vec(token, 0..24).prop_map(|t| format!("[{}]", t.concat()))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(CASES))]

        #[test]
        fn any_expression_evaluates_or_is_an_invalid_template(e in expression(), raw in "\\PC{0,48}") {
            for text in [e, format!("[{raw}]"), raw] {
                match eval_value(&json!(text), &Fake(Budget::default())) {
                    Ok(_)
                    | Err(TemplateError::Invalid(_))
                    | Err(TemplateError::UnsupportedFunction(_))
                    | Err(TemplateError::Budget(_)) => {}
                    Err(other) => proptest::prop_assert!(false, "{}: {:?}", text, other),
                }
            }
        }
    }

    #[test]
    fn property_case_counts() {
        eprintln!("template expression property: {CASES} cases");
    }
}
