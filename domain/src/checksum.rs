//! Checksums: an algorithm and the lowercase hex of its digest.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// The digest algorithms ferry computes in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChecksumAlgorithm {
    Sha256,
    Md5,
}

impl ChecksumAlgorithm {
    /// Length of the digest in hex characters.
    pub fn hex_len(self) -> usize {
        match self {
            ChecksumAlgorithm::Sha256 => 64,
            ChecksumAlgorithm::Md5 => 32,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Sha256 => "sha256",
            ChecksumAlgorithm::Md5 => "md5",
        }
    }
}

impl fmt::Display for ChecksumAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChecksumAlgorithm {
    type Err = InvalidChecksum;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace('-', "").as_str() {
            "sha256" => Ok(ChecksumAlgorithm::Sha256),
            "md5" => Ok(ChecksumAlgorithm::Md5),
            _ => Err(InvalidChecksum::UnknownAlgorithm {
                algorithm: s.to_owned(),
            }),
        }
    }
}

/// Why a string is not a usable checksum.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidChecksum {
    #[error("unknown checksum algorithm `{algorithm}`; use sha256 or md5")]
    UnknownAlgorithm { algorithm: String },
    #[error("a {algorithm} checksum has {expected} hex characters, this one has {actual}")]
    WrongLength {
        algorithm: ChecksumAlgorithm,
        expected: usize,
        actual: usize,
    },
    #[error("a {algorithm} checksum is hex (0-9, a-f); found `{found}` at position {index}")]
    NotHex {
        algorithm: ChecksumAlgorithm,
        found: char,
        index: usize,
    },
    #[error("write a checksum as ALGORITHM:HEX, e.g. sha256:9f86d0...")]
    MissingAlgorithm,
}

/// A validated checksum. The hex is stored lowercase.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Checksum {
    algorithm: ChecksumAlgorithm,
    hex: String,
}

impl Checksum {
    /// Validates `hex` (any case) as a digest of `algorithm`.
    pub fn new(algorithm: ChecksumAlgorithm, hex: &str) -> Result<Self, InvalidChecksum> {
        let hex = hex.trim();
        if hex.len() != algorithm.hex_len() {
            return Err(InvalidChecksum::WrongLength {
                algorithm,
                expected: algorithm.hex_len(),
                actual: hex.chars().count(),
            });
        }
        if let Some((index, found)) = hex.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
            return Err(InvalidChecksum::NotHex {
                algorithm,
                found,
                index,
            });
        }
        Ok(Self {
            algorithm,
            hex: hex.to_ascii_lowercase(),
        })
    }

    pub fn sha256(hex: &str) -> Result<Self, InvalidChecksum> {
        Self::new(ChecksumAlgorithm::Sha256, hex)
    }

    pub fn md5(hex: &str) -> Result<Self, InvalidChecksum> {
        Self::new(ChecksumAlgorithm::Md5, hex)
    }

    /// The checksum of a SHA-256 digest; infallible, the length is fixed.
    pub fn from_sha256_digest(digest: &[u8; 32]) -> Self {
        Self {
            algorithm: ChecksumAlgorithm::Sha256,
            hex: to_hex(digest),
        }
    }

    /// The checksum of an MD5 digest; infallible, the length is fixed.
    pub fn from_md5_digest(digest: &[u8; 16]) -> Self {
        Self {
            algorithm: ChecksumAlgorithm::Md5,
            hex: to_hex(digest),
        }
    }

    /// Builds a checksum from raw digest bytes.
    pub fn from_digest(
        algorithm: ChecksumAlgorithm,
        digest: &[u8],
    ) -> Result<Self, InvalidChecksum> {
        Self::new(algorithm, &to_hex(digest))
    }

    pub fn algorithm(&self) -> ChecksumAlgorithm {
        self.algorithm
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl FromStr for Checksum {
    type Err = InvalidChecksum;

    /// Parses `sha256:HEX` or `md5:HEX` (algorithm and hex case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (algorithm, hex) = s.split_once(':').ok_or(InvalidChecksum::MissingAlgorithm)?;
        Self::new(algorithm.trim().parse()?, hex)
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Checksum({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";

    #[test]
    fn parses_case_insensitively_and_normalises() {
        let c = Checksum::sha256(SHA).unwrap();
        assert_eq!(c.hex(), SHA.to_ascii_lowercase());
        let d: Checksum = format!("SHA-256:{SHA}").parse().unwrap();
        assert_eq!(c, d);
        let m: Checksum = "md5:D41D8CD98F00B204E9800998ECF8427E".parse().unwrap();
        assert_eq!(m.algorithm(), ChecksumAlgorithm::Md5);
        assert_eq!(m.to_string(), "md5:d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn rejects_wrong_length_and_non_hex() {
        assert_eq!(
            Checksum::sha256("abcd"),
            Err(InvalidChecksum::WrongLength {
                algorithm: ChecksumAlgorithm::Sha256,
                expected: 64,
                actual: 4
            })
        );
        // A valid MD5 is not a valid SHA-256.
        assert!(Checksum::sha256("d41d8cd98f00b204e9800998ecf8427e").is_err());
        let bad = format!("{}g", &SHA[..63]);
        assert!(matches!(
            Checksum::sha256(&bad),
            Err(InvalidChecksum::NotHex {
                found: 'g',
                index: 63,
                ..
            })
        ));
        assert!(matches!(
            "crc32:abcd".parse::<Checksum>(),
            Err(InvalidChecksum::UnknownAlgorithm { .. })
        ));
        assert_eq!(
            "abcd".parse::<Checksum>(),
            Err(InvalidChecksum::MissingAlgorithm)
        );
    }

    #[test]
    fn fixed_size_digests_need_no_validation() {
        let s = Checksum::from_sha256_digest(&[0x0f; 32]);
        assert_eq!(s, Checksum::sha256(&"0f".repeat(32)).unwrap());
        let m = Checksum::from_md5_digest(&[0xa0; 16]);
        assert_eq!(m, Checksum::md5(&"a0".repeat(16)).unwrap());
    }

    #[test]
    fn from_digest_round_trips() {
        let c = Checksum::from_digest(ChecksumAlgorithm::Md5, &[0xab; 16]).unwrap();
        assert_eq!(c.hex(), "ab".repeat(16));
        assert!(Checksum::from_digest(ChecksumAlgorithm::Md5, &[0; 3]).is_err());
    }
}
