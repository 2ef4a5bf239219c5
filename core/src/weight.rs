//! Weights: parts per million on the wire, percent with up to four decimals for people.
//!
//! Integers all the way: `0.05%` is exactly 500 ppm, and a split's total is compared exactly,
//! never as a float.

use std::fmt;

/// The whole of a function's traffic, in parts per million.
pub const TOTAL_PPM: u32 = 1_000_000;

/// Why a percentage could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeightError {
    /// Not a decimal number.
    #[error("weight {0:?} is not a percentage (expected a number like 10, 0.05 or 12.5%)")]
    NotANumber(String),
    /// A minus sign.
    #[error("weight {0:?} is negative")]
    Negative(String),
    /// More than four decimals cannot be expressed in parts per million.
    #[error("weight {0:?} has more than four decimals (the finest step is 0.0001%)")]
    TooPrecise(String),
    /// Above 100%.
    #[error("weight {0:?} is above 100%")]
    AboveHundred(String),
}

/// Reads a percentage such as `10`, `0.05`, `12.3456` or `50%` into parts per million.
///
/// ```
/// use switchyard_core::weight::parse_percent;
/// assert_eq!(parse_percent("0.05"), Ok(500));
/// assert_eq!(parse_percent("100%"), Ok(1_000_000));
/// assert!(parse_percent("0.00001").is_err());
/// ```
pub fn parse_percent(text: &str) -> Result<u32, WeightError> {
    let raw = text.trim();
    let number = raw.strip_suffix('%').unwrap_or(raw);
    if number.starts_with('-') {
        return Err(WeightError::Negative(text.to_string()));
    }
    let (whole, frac) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits_only(whole) || !digits_only(frac) {
        return Err(WeightError::NotANumber(text.to_string()));
    }
    if number.ends_with('.') && frac.is_empty() && number.contains('.') {
        return Err(WeightError::NotANumber(text.to_string()));
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > 4 {
        return Err(WeightError::TooPrecise(text.to_string()));
    }
    let whole = whole.trim_start_matches('0');
    if whole.len() > 3 {
        return Err(WeightError::AboveHundred(text.to_string()));
    }
    let whole: u32 = if whole.is_empty() {
        0
    } else {
        whole
            .parse()
            .map_err(|_| WeightError::NotANumber(text.to_string()))?
    };
    let mut frac_ppm: u32 = 0;
    for (i, b) in frac.bytes().enumerate() {
        frac_ppm += u32::from(b - b'0') * 10u32.pow(3 - i as u32);
    }
    let ppm = whole * 10_000 + frac_ppm;
    if ppm > TOTAL_PPM {
        return Err(WeightError::AboveHundred(text.to_string()));
    }
    Ok(ppm)
}

/// A weight in parts per million, displayed as a percentage without trailing zeros
/// (`500` shows as `0.05%`, `1000000` as `100%`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Percent(pub u32);

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 10_000;
        let frac = self.0 % 10_000;
        if frac == 0 {
            write!(f, "{whole}%")
        } else {
            let digits = format!("{frac:04}");
            write!(f, "{whole}.{}%", digits.trim_end_matches('0'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_read_exactly_into_ppm() {
        let cases = [
            ("10", 100_000),
            ("10%", 100_000),
            ("0.05", 500),
            ("0.1", 1_000),
            ("99.9", 999_000),
            ("12.3456", 123_456),
            ("100", 1_000_000),
            ("100.0000", 1_000_000),
            ("0", 0),
            ("000.5", 5_000),
            (".5", 5_000),
            (" 7 ", 70_000),
            ("0.00010", 1),
        ];
        for (text, ppm) in cases {
            assert_eq!(parse_percent(text), Ok(ppm), "{text}");
        }
    }

    #[test]
    fn malformed_percentages_are_refused_with_the_reason() {
        use WeightError::*;
        type Expected = fn(String) -> WeightError;
        let cases: [(&str, Expected); 13] = [
            ("-1", Negative),
            ("-0.5", Negative),
            ("100.0001", AboveHundred),
            ("101", AboveHundred),
            ("1000000", AboveHundred),
            ("0.00001", TooPrecise),
            ("1.23456", TooPrecise),
            ("", NotANumber),
            ("abc", NotANumber),
            ("1e3", NotANumber),
            ("1.2.3", NotANumber),
            ("5.", NotANumber),
            ("٣", NotANumber),
        ];
        for (text, err) in cases {
            assert_eq!(parse_percent(text), Err(err(text.to_string())), "{text}");
        }
    }

    #[test]
    fn percent_displays_without_trailing_zeros() {
        assert_eq!(Percent(500).to_string(), "0.05%");
        assert_eq!(Percent(100_000).to_string(), "10%");
        assert_eq!(Percent(123_450).to_string(), "12.345%");
        assert_eq!(Percent(1).to_string(), "0.0001%");
        assert_eq!(Percent(1_000_000).to_string(), "100%");
        assert_eq!(Percent(0).to_string(), "0%");
    }

    #[test]
    fn every_weight_displays_and_parses_back_to_itself() {
        // All 1,000,001 of them: cheap, and no sample can miss a rounding edge.
        let mut shown = String::new();
        for ppm in 0..=TOTAL_PPM {
            use std::fmt::Write;
            shown.clear();
            write!(shown, "{}", Percent(ppm)).expect("formatting into a String");
            assert_eq!(parse_percent(&shown), Ok(ppm), "{shown}");
            // Without the percent sign too, as the CLI's VERSION=PERCENT reads it.
            assert_eq!(parse_percent(&shown[..shown.len() - 1]), Ok(ppm), "{shown}");
        }
    }
}
