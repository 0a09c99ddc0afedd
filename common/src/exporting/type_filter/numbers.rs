//! Number and quantity search values: a prefix, a decimal, and for quantities
//! `|system|code`. Bounds are computed exactly, as decimal digits.

use super::dates::split_prefix;
use super::values::{split_unescaped, unescape};
use super::{invalid, FilterError};
use crate::fhir::search::filter::{NumberTest, Prefix, Value};

/// A decimal: `mantissa × 10^-scale`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Decimal {
    mantissa: i128,
    scale: i32,
}

const NUMBER: &str = "a number is [prefix]-?digits[.digits][e[+-]digits] (at most 30 \
    digits), prefixes eq ne gt lt ge le sa eb ap";

impl Decimal {
    /// Parses `-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn parse(s: &str) -> Option<Decimal> {
        let (body, exp) = match s.find(['e', 'E']) {
            Some(i) => (&s[..i], s[i + 1..].parse::<i32>().ok()?),
            None => (s, 0),
        };
        if !(-300..=300).contains(&exp) {
            return None;
        }
        let (neg, body) = match body.strip_prefix('-') {
            Some(b) => (true, b),
            None => (false, body),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !all_digits(int) || !all_digits(frac) || body.ends_with('.') {
            return None;
        }
        let digits = format!("{int}{frac}");
        let significant = digits.trim_start_matches('0');
        if significant.len() > 30 {
            return None;
        }
        let mut mantissa: i128 = if significant.is_empty() {
            0
        } else {
            significant.parse().ok()?
        };
        if neg {
            mantissa = -mantissa;
        }
        Some(Decimal {
            mantissa,
            scale: frac.len() as i32 - exp,
        })
    }

    /// `self × factor / 10` (one more decimal place).
    fn tenths(self, factor: i128, add: i128) -> Decimal {
        Decimal {
            mantissa: self.mantissa * factor + add,
            scale: self.scale + 1,
        }
    }

    /// As a jsonpath number: `123`, `-5e1`, `995e-1`.
    fn text(self) -> String {
        if self.scale == 0 {
            self.mantissa.to_string()
        } else {
            format!("{}e{}", self.mantissa, -self.scale)
        }
    }
}

/// `[prefix]number`: `eq`/`ne` use the precision range (half a unit of the last digit
/// each side), `ap` ±10% of the value, the others the value itself.
pub(super) fn parse_number(piece: &str) -> Result<NumberTest, FilterError> {
    let number_like = |r: &str| r.starts_with(|c: char| c.is_ascii_digit() || c == '-');
    let (prefix, rest) = split_prefix(piece, number_like);
    let d = Decimal::parse(rest).ok_or_else(|| invalid(piece, NUMBER))?;
    let (low, high) = match prefix {
        Prefix::Ap => {
            let (a, b) = (d.tenths(9, 0), d.tenths(11, 0));
            if d.mantissa < 0 {
                (b, a)
            } else {
                (a, b)
            }
        }
        _ => (d.tenths(10, -5), d.tenths(10, 5)),
    };
    Ok(NumberTest {
        prefix,
        value: d.text(),
        low: low.text(),
        high: high.text(),
    })
}

/// `[prefix]number`, `[prefix]number|system|code` or `[prefix]number||code`.
pub(super) fn parse_quantity(piece: &str) -> Result<Value, FilterError> {
    let parts = split_unescaped(piece, '|');
    let (number, system, code) =
        match parts.as_slice() {
            [n] => (*n, None, None),
            [n, s, c] => {
                let some = |p: &str| (!p.is_empty()).then(|| unescape(p));
                (*n, some(s), some(c))
            }
            _ => return Err(invalid(
                piece,
                "a quantity is [prefix]number, [prefix]number|system|code or [prefix]number||code",
            )),
        };
    Ok(Value::Quantity {
        number: parse_number(number)?,
        system,
        code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> (Prefix, String, String, String) {
        let t = parse_number(s).unwrap();
        (t.prefix, t.value, t.low, t.high)
    }

    #[test]
    fn precision_ranges_follow_the_significant_digits() {
        let s = |x: &str| x.to_string();
        assert_eq!(n("100"), (Prefix::Eq, s("100"), s("995e-1"), s("1005e-1")));
        assert_eq!(
            n("100.00"),
            (Prefix::Eq, s("10000e-2"), s("99995e-3"), s("100005e-3"))
        );
        assert_eq!(n("1e2"), (Prefix::Eq, s("1e2"), s("5e1"), s("15e1")));
        assert_eq!(
            n("-0.5"),
            (Prefix::Eq, s("-5e-1"), s("-55e-2"), s("-45e-2"))
        );
        assert_eq!(
            n("ap100"),
            (Prefix::Ap, s("100"), s("900e-1"), s("1100e-1"))
        );
        assert_eq!(
            n("ap-10"),
            (Prefix::Ap, s("-10"), s("-110e-1"), s("-90e-1"))
        );
        assert_eq!(n("gt5").0, Prefix::Gt);
        assert_eq!(n("0").1, "0");
        assert_eq!(n("007").1, "7");
        for bad in [
            "",
            "x",
            "1.",
            ".5",
            "1e",
            "1e999",
            "+1",
            "gt",
            "1,5",
            "12ab",
            &"9".repeat(31),
        ] {
            assert!(parse_number(bad).is_err(), "{bad}");
        }
    }
}
