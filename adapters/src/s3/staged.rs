//! What an S3 multipart upload checkpoints: its id, part size and completed
//! parts. The domain carries it as an opaque `StagedState` (kind
//! `multipart`, a JSON token); only this adapter reads it.

use serde::{Deserialize, Serialize};

use ferry_domain::StagedState;

/// One completed part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    pub number: u32,
    pub size: u64,
    pub etag: String,
}

/// A multipart upload that can be taken up again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultipartState {
    pub upload_id: String,
    pub part_size: u64,
    /// In order, numbered 1..n.
    pub parts: Vec<PartRecord>,
}

impl MultipartState {
    /// The `StagedState` kind of S3 uploads.
    pub const KIND: &'static str = "multipart";

    /// Bytes the completed parts hold.
    pub fn committed(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum()
    }

    /// As the domain carries it.
    pub fn to_staged(&self) -> StagedState {
        let token = serde_json::to_string(self).unwrap_or_default();
        StagedState::new(Self::KIND, self.committed(), token)
    }

    /// Reads a `StagedState` this adapter made; the error says what is
    /// wrong (another adapter's state, a damaged token, parts out of order,
    /// sizes that do not add up).
    pub fn from_staged(staged: &StagedState) -> Result<Self, String> {
        if staged.kind() != Self::KIND {
            return Err(format!(
                "a {} checkpoint is not an S3 upload",
                staged.kind()
            ));
        }
        let state: Self = serde_json::from_str(staged.token())
            .map_err(|e| format!("damaged S3 upload state: {e}"))?;
        state.validate()?;
        if state.committed() != staged.committed() {
            return Err("the parts' sizes do not add up to the committed bytes".into());
        }
        Ok(state)
    }

    /// Parts numbered 1..n in order.
    pub fn validate(&self) -> Result<(), String> {
        let in_order = self
            .parts
            .iter()
            .enumerate()
            .all(|(i, p)| usize::try_from(p.number).ok() == Some(i + 1));
        if in_order {
            Ok(())
        } else {
            Err("multipart parts are not numbered 1..n in order".into())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn part(number: u32, size: u64) -> PartRecord {
        PartRecord {
            number,
            size,
            etag: format!("\"e{number}\""),
        }
    }

    #[test]
    fn parts_are_numbered_in_order_and_summed() {
        let ok = MultipartState {
            upload_id: "u".into(),
            part_size: 30,
            parts: vec![part(1, 30), part(2, 30)],
        };
        let staged = ok.to_staged();
        assert_eq!((staged.kind(), staged.committed()), ("multipart", 60));
        assert_eq!(MultipartState::from_staged(&staged).unwrap(), ok);
        let gap = MultipartState {
            parts: vec![part(1, 30), part(3, 30)],
            ..ok.clone()
        };
        assert!(
            MultipartState::from_staged(&gap.to_staged())
                .unwrap_err()
                .contains("1..n")
        );
        let other = StagedState::new("temp_file", 60, "{}");
        assert!(MultipartState::from_staged(&other).is_err());
        let lying = StagedState::new("multipart", 61, ok.to_staged().token());
        assert!(MultipartState::from_staged(&lying).is_err());
    }
}
