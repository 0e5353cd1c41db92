//! The vocabulary every misim crate shares. Nothing here performs IO.
//!
//! - [`Clock`]: time is a dependency, so tokens and expiry are testable.
//! - [`IdGen`]: GUIDs come from an injectable generator, so tests are deterministic.
//! - [`ErrorCode`]: the small set of error classes every crate maps its errors to.
//! - [`ResourceId`]: ARM resource ids, compared case-insensitively.
//! - [`EnvSource`]: configuration reads the environment through a trait.
//! - [`time`]: Unix seconds to and from UTC calendar dates, for the timestamps services write.

mod clock;
mod env;
mod error;
mod ids;
mod resource_id;
pub mod time;

pub use clock::{
    Clock, ClockMoveError, ManualClock, SharedClock, SystemClock, VirtualClock, unix_seconds,
};
pub use env::{EnvSource, MapEnv, ProcessEnv};
pub use error::ErrorCode;
pub use ids::{IdGen, RandomIds, SeqIds, SharedIds};
pub use resource_id::{ResourceId, ResourceIdError};

/// Audiences (App ID URIs) of the resources that misim's Entra knows, and the
/// ones its resource servers accept. Compared without a trailing slash.
pub mod audiences {
    /// Azure Resource Manager as the Azure SDKs name it.
    pub const ARM: &str = "https://management.azure.com/";
    /// Azure Resource Manager as the Azure CLI names it (classic service management URI).
    pub const ARM_CLASSIC: &str = "https://management.core.windows.net/";
    /// Key Vault, as its clients and its 401 challenge name it (no trailing slash).
    pub const KEY_VAULT: &str = "https://vault.azure.net";
    /// Microsoft Graph.
    pub const GRAPH: &str = "https://graph.microsoft.com";

    /// Every resource Entra can issue tokens for.
    pub const KNOWN: &[&str] = &[ARM, ARM_CLASSIC, KEY_VAULT, GRAPH];

    /// Normalises an audience for comparison: lower case, no trailing slash.
    pub fn normalize(aud: &str) -> String {
        aud.trim_end_matches('/').to_ascii_lowercase()
    }

    /// True when `aud` names one of the ARM audiences.
    pub fn is_arm(aud: &str) -> bool {
        let a = normalize(aud);
        a == normalize(ARM) || a == normalize(ARM_CLASSIC)
    }

    /// True when `aud` names Key Vault.
    pub fn is_key_vault(aud: &str) -> bool {
        normalize(aud) == normalize(KEY_VAULT)
    }

    /// Returns the canonical known resource matching `resource`, if any.
    pub fn known(resource: &str) -> Option<&'static str> {
        let r = normalize(resource);
        KNOWN.iter().copied().find(|k| normalize(k) == r)
    }
}
