//! Postgres write-ahead-log positions (LSNs) and their text form `XXX/XXXXXXXX`.
//!
//! The CDC confirms LSNs to Postgres and stamps them on events; users see them in `/health`.

use std::fmt;
use std::str::FromStr;

/// A position in the Postgres write-ahead log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// The text was not an LSN of the form `16/B374D848`.
#[derive(Debug, thiserror::Error)]
#[error("invalid LSN {0:?}: expected two hex numbers separated by '/', like 16/B374D848")]
pub struct InvalidLsn(pub String);

impl FromStr for Lsn {
    type Err = InvalidLsn;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidLsn(s.to_string());
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        for text in ["0/0", "16/B374D848", "FFFFFFFF/FFFFFFFF"] {
            let lsn: Lsn = text.parse().unwrap();
            assert_eq!(lsn.to_string(), text);
        }
        assert_eq!("1/0".parse::<Lsn>().unwrap(), Lsn(1 << 32));
    }

    #[test]
    fn rejects_malformed_text() {
        for text in ["", "16", "x/1", "1/", "/1", "1/2/3", "100000000/0"] {
            assert!(text.parse::<Lsn>().is_err(), "{text:?} parsed");
        }
    }
}
