//! The condition language of rules: comparisons of catalogue features with
//! numbers, combined with `and`, `or`, `not` and parentheses; a null feature
//! makes its comparison unknown, never true.

use amoskys_schemas::FeatureDef;

/// A comparison operator of a rule's condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
    Ne,
}

/// A condition over one row's features. A comparison with a null feature is
/// unknown, and unknown propagates as in SQL (`and`, `or`, `not`); a rule fires
/// only when its condition is true.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Cmp { col: usize, op: Op, value: f64 },
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
}

impl Expr {
    pub(super) fn eval(&self, values: &[f64]) -> Option<bool> {
        match self {
            Expr::Cmp { col, op, value } => {
                let v = values.get(*col).copied().filter(|v| !v.is_nan())?;
                Some(match op {
                    Op::Ge => v >= *value,
                    Op::Gt => v > *value,
                    Op::Le => v <= *value,
                    Op::Lt => v < *value,
                    Op::Eq => v == *value,
                    Op::Ne => v != *value,
                })
            }
            // The right side is evaluated only when the left does not decide:
            // most rows fail a rule's first comparison.
            Expr::And(a, b) => match a.eval(values) {
                Some(false) => Some(false),
                l => match (l, b.eval(values)) {
                    (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                },
            },
            Expr::Or(a, b) => match a.eval(values) {
                Some(true) => Some(true),
                l => match (l, b.eval(values)) {
                    (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                },
            },
            Expr::Not(a) => a.eval(values).map(|b| !b),
        }
    }
}

/// Parses a rule's condition: comparisons of catalogue features with numbers
/// (`>=`, `>`, `<=`, `<`, `==`, `!=`), combined with `and`, `or`, `not` and
/// parentheses (`and` binds tighter than `or`). Returns the expression and the
/// features it names, in order of appearance.
pub fn parse_condition(text: &str, defs: &[FeatureDef]) -> Result<(Expr, Vec<String>), String> {
    let tokens = tokenize(text)?;
    let mut p = Parser {
        tokens: &tokens,
        pos: 0,
        defs,
        features: Vec::new(),
    };
    let e = p.or()?;
    if let Some(t) = p.tokens.get(p.pos) {
        return Err(format!("unexpected {t:?} after a complete condition"));
    }
    Ok((e, p.features))
}

fn tokenize(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '(' || c == ')' {
            out.push(c.to_string());
            chars.next();
        } else if "<>=!".contains(c) {
            chars.next();
            let two = chars.peek().is_some_and(|&(_, d)| d == '=');
            if two {
                chars.next();
            }
            let op = &text[i..i + if two { 2 } else { 1 }];
            if !matches!(op, ">=" | ">" | "<=" | "<" | "==" | "!=") {
                return Err(format!(
                    "unknown operator {op:?} (use >=, >, <=, <, ==, !=)"
                ));
            }
            out.push(op.to_string());
        } else if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
            // A feature name, a keyword or a number (signed, with an exponent).
            chars.next();
            let mut end = i + 1;
            while let Some(&(j, d)) = chars.peek() {
                let exponent_sign = (d == '+' || d == '-')
                    && text[i..j].ends_with(['e', 'E'])
                    && text[i..j]
                        .trim_start_matches('-')
                        .starts_with(|x: char| x.is_ascii_digit());
                if d.is_ascii_alphanumeric() || d == '_' || d == '.' || exponent_sign {
                    end = j + 1;
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(text[i..end].to_string());
        } else {
            return Err(format!("unexpected character {c:?}"));
        }
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: &'a [String],
    pos: usize,
    defs: &'a [FeatureDef],
    features: Vec<String>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.pos).map(String::as_str)
    }

    fn next(&mut self) -> Option<&str> {
        let t = self.tokens.get(self.pos).map(String::as_str);
        self.pos += 1;
        t
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut e = self.and()?;
        while self.peek() == Some("or") {
            self.pos += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.unary()?;
        while self.peek() == Some("and") {
            self.pos += 1;
            e = Expr::And(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        match self.peek() {
            Some("not") => {
                self.pos += 1;
                Ok(Expr::Not(Box::new(self.unary()?)))
            }
            Some("(") => {
                self.pos += 1;
                let e = self.or()?;
                match self.next() {
                    Some(")") => Ok(e),
                    _ => Err("a ( without its )".into()),
                }
            }
            _ => self.comparison(),
        }
    }

    fn comparison(&mut self) -> Result<Expr, String> {
        let name = self
            .next()
            .ok_or("the condition ends where a feature name should be")?
            .to_string();
        let col = self
            .defs
            .iter()
            .position(|d| d.name == name)
            .ok_or_else(|| format!("{name:?} is not a feature (docs/FEATURES.md lists them)"))?;
        let op = match self.next() {
            Some(">=") => Op::Ge,
            Some(">") => Op::Gt,
            Some("<=") => Op::Le,
            Some("<") => Op::Lt,
            Some("==") => Op::Eq,
            Some("!=") => Op::Ne,
            other => {
                return Err(format!(
                    "after {name}: expected a comparison, found {other:?}"
                ));
            }
        };
        let value: f64 = match self.next() {
            Some(t) => t
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite())
                .ok_or_else(|| format!("after {name}: {t:?} is not a number"))?,
            None => {
                return Err(format!(
                    "after {name}: the condition ends where a number should be"
                ));
            }
        };
        if !self.features.contains(&name) {
            self.features.push(name);
        }
        Ok(Expr::Cmp { col, op, value })
    }
}
