//! Byte sizes as people write them: `5GiB`, `100MB`, `1.5 GiB`, `4096`.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// Why a string is not a byte size.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidByteSize {
    #[error("the size is empty; write e.g. 5GiB, 100MB or 4096")]
    Empty,
    #[error("`{input}` is not a size; write a number and a unit, e.g. 5GiB, 100MB or 4096")]
    NotANumber { input: String },
    #[error(
        "unknown unit `{unit}`; use B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)"
    )]
    UnknownUnit { unit: String },
    #[error("`{input}` is larger than ferry can count (2^64 bytes)")]
    TooLarge { input: String },
    #[error("`{input}` is not a whole number of bytes")]
    FractionalBytes { input: String },
}

/// A number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ByteSize(u64);

impl ByteSize {
    pub const fn new(bytes: u64) -> Self {
        Self(bytes)
    }

    pub const fn kib(n: u64) -> Self {
        Self(n * 1024)
    }

    pub const fn mib(n: u64) -> Self {
        Self(n * 1024 * 1024)
    }

    pub const fn gib(n: u64) -> Self {
        Self(n * 1024 * 1024 * 1024)
    }

    pub const fn as_u64(self) -> u64 {
        self.0
    }

    pub fn parse(input: &str) -> Result<Self, InvalidByteSize> {
        let s = input.trim();
        if s.is_empty() {
            return Err(InvalidByteSize::Empty);
        }
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
            .unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let number = number.replace('_', "");
        let unit = unit.trim();
        let not_a_number = || InvalidByteSize::NotANumber {
            input: input.to_owned(),
        };
        let multiplier: u128 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            "t" | "tib" => 1 << 40,
            _ => {
                return Err(InvalidByteSize::UnknownUnit {
                    unit: unit.to_owned(),
                });
            }
        };
        let (whole, frac) = match number.split_once('.') {
            Some((w, f)) => (w, f),
            None => (number.as_str(), ""),
        };
        if whole.is_empty() && frac.is_empty() || frac.contains('.') || frac.len() > 9 {
            return Err(not_a_number());
        }
        let too_large = || InvalidByteSize::TooLarge {
            input: input.to_owned(),
        };
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| too_large())?
        };
        let frac_digits = u32::try_from(frac.len()).map_err(|_| not_a_number())?;
        let frac_value: u128 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| not_a_number())?
        };
        let scale = 10u128.pow(frac_digits);
        let total_scaled = whole
            .checked_mul(scale)
            .and_then(|w| w.checked_add(frac_value))
            .and_then(|v| v.checked_mul(multiplier))
            .ok_or_else(too_large)?;
        if !total_scaled.is_multiple_of(scale) {
            return Err(InvalidByteSize::FractionalBytes {
                input: input.to_owned(),
            });
        }
        let bytes = u64::try_from(total_scaled / scale).map_err(|_| too_large())?;
        Ok(Self(bytes))
    }
}

impl FromStr for ByteSize {
    type Err = InvalidByteSize;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl From<u64> for ByteSize {
    fn from(v: u64) -> Self {
        Self(v)
    }
}

impl fmt::Display for ByteSize {
    /// Exact binary units when the value is a whole multiple (`5 GiB`),
    /// otherwise two decimals (`1.50 MiB`), or plain bytes below 1 KiB.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, size) in UNITS {
            if self.0 >= size {
                if self.0.is_multiple_of(size) {
                    return write!(f, "{} {name}", self.0 / size);
                }
                // Display only: precision loss above 2^53 bytes is irrelevant.
                #[allow(clippy::cast_precision_loss)]
                let value = self.0 as f64 / size as f64;
                return write!(f, "{value:.2} {name}");
            }
        }
        write!(f, "{} B", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        let cases = [
            ("4096", 4096),
            ("0", 0),
            ("10B", 10),
            ("5GiB", 5 << 30),
            ("5 gib", 5 << 30),
            ("100MB", 100_000_000),
            ("64MiB", 64 << 20),
            ("32k", 32 << 10),
            ("1.5KiB", 1536),
            ("1.5GB", 1_500_000_000),
            ("1_000", 1000),
            ("16TiB", 16 << 40),
        ];
        for (input, want) in cases {
            assert_eq!(ByteSize::parse(input), Ok(ByteSize::new(want)), "{input}");
        }
    }

    #[test]
    fn rejects_bad_sizes() {
        assert_eq!(ByteSize::parse(""), Err(InvalidByteSize::Empty));
        assert!(matches!(
            ByteSize::parse("GiB"),
            Err(InvalidByteSize::NotANumber { .. })
        ));
        assert!(matches!(
            ByteSize::parse("1.2.3MB"),
            Err(InvalidByteSize::NotANumber { .. })
        ));
        assert!(matches!(
            ByteSize::parse("-5MB"),
            Err(InvalidByteSize::UnknownUnit { .. })
        ));
        assert!(matches!(
            ByteSize::parse("5 parsecs"),
            Err(InvalidByteSize::UnknownUnit { .. })
        ));
        assert!(matches!(
            ByteSize::parse("99999999999TiB"),
            Err(InvalidByteSize::TooLarge { .. })
        ));
        assert!(matches!(
            ByteSize::parse("1.5B"),
            Err(InvalidByteSize::FractionalBytes { .. })
        ));
    }

    #[test]
    fn displays_readably() {
        assert_eq!(ByteSize::gib(5).to_string(), "5 GiB");
        assert_eq!(ByteSize::new(1536 * 1024).to_string(), "1.50 MiB");
        assert_eq!(ByteSize::new(12).to_string(), "12 B");
    }
}
