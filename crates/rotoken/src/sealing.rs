//! Records as a store holds them: the record's encoding followed by a keyed
//! MAC that binds it to its family id, and the grant inside it sealed with
//! XChaCha20-Poly1305 under the record's identity.

use subtle::ConstantTimeEq;

use crate::error::{StoreError, corrupt};
use crate::grant::Grant;
use crate::keys::TAG16;
use crate::protocol::{Protocol, retired_grant_key};
use crate::record::FamilyRecord;
use crate::token::FamilyId;

impl Protocol {
    /// A record as stored: its encoding followed by its MAC.
    pub(crate) fn record_bytes(&self, family: &FamilyId, rec: &FamilyRecord) -> Vec<u8> {
        let mut bytes = rec.encode();
        let mac = self.keys.record_mac(family, &bytes);
        bytes.extend_from_slice(&mac);
        bytes
    }

    /// Verifies a stored record's MAC and decodes it.
    pub(crate) fn decode_record(&self, family: &FamilyId, bytes: &[u8]) -> Result<FamilyRecord, StoreError> {
        let Some(split) = bytes.len().checked_sub(TAG16) else {
            return Err(corrupt("families", format!("record of {family} is truncated")));
        };
        let (body, mac) = bytes.split_at(split);
        if !bool::from(self.keys.record_mac(family, body).ct_eq(mac)) {
            return Err(corrupt("families", format!("record of {family} fails its MAC")));
        }
        FamilyRecord::decode(body).map_err(|e| corrupt("families", format!("record of {family}: {e}")))
    }

    /// Seals a grant under the record's identity.
    pub(crate) fn seal_grant(
        &self,
        family: &FamilyId,
        rec: &FamilyRecord,
        grant: &Grant,
    ) -> Result<Vec<u8>, StoreError> {
        Ok(self
            .keys
            .seal(&grant_ad(family, rec), &crate::record::encode_grant(grant))?)
    }

    /// Opens a family's sealed grant; `None` if it was sealed with a key that
    /// has since been retired (expected only for families past their
    /// absolute lifetime, which is when keys may retire).
    pub(crate) fn grant_if_openable(&self, family: &FamilyId, rec: &FamilyRecord) -> Result<Option<Grant>, StoreError> {
        Ok(self.grant_or_missing_key(family, rec)?.ok())
    }

    /// Opens a family's sealed grant, or names the key it was sealed under
    /// when that key is no longer in the keyring.
    pub(crate) fn grant_or_missing_key(
        &self,
        family: &FamilyId,
        rec: &FamilyRecord,
    ) -> Result<Result<Grant, u32>, StoreError> {
        let pt = match self.keys.open(&grant_ad(family, rec), &rec.sealed_grant) {
            Ok(pt) => pt,
            Err(crate::SealError::UnknownKey(id)) => return Ok(Err(id)),
            Err(e) => return Err(corrupt("families", format!("grant of {family}: {e}"))),
        };
        crate::record::decode_grant(&pt)
            .map(Ok)
            .map_err(|e| corrupt("families", format!("grant of {family}: {e}")))
    }

    /// Opens the grant of a family that is still in use; a retired key is corruption here.
    pub(crate) fn open_grant(&self, family: &FamilyId, rec: &FamilyRecord) -> Result<Grant, StoreError> {
        self.grant_if_openable(family, rec)?
            .ok_or_else(|| retired_grant_key(family))
    }
}

/// Associated data of a sealed grant: the record's identity, so a grant
/// moved to another family or altered around does not open.
fn grant_ad(family: &FamilyId, rec: &FamilyRecord) -> Vec<u8> {
    let mut ad = Vec::with_capacity(128);
    ad.extend_from_slice(b"rotoken grant v1");
    ad.extend_from_slice(family.as_bytes());
    ad.extend_from_slice(&rec.subject_tag);
    ad.extend_from_slice(&rec.client_tag);
    ad.extend_from_slice(&rec.confirmation_tag.unwrap_or([0; TAG16]));
    ad.push(u8::from(rec.confirmation_tag.is_some()));
    ad.extend_from_slice(&rec.created_at.to_be_bytes());
    ad.extend_from_slice(&rec.expires_at.to_be_bytes());
    ad
}
