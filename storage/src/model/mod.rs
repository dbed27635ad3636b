//! Record types, one file per domain noun. Every record carries a version field `v`.

pub mod authorization_code;
pub mod avatar;
pub mod binding;
pub mod client;
pub mod cluster;
pub mod consent;
pub mod data_key;
pub mod email;
pub mod idempotency;
pub mod lockout;
pub mod passkey;
pub mod refresh_token;
pub mod sealed;
pub mod session;
pub mod signing_key;
pub mod tenant;
pub mod user;

pub use authorization_code::{AuthorizationCodeRecord, CodeRedemption, CodeToken, MAX_CODE_LIFETIME_MS};
pub use avatar::AvatarRecord;
pub use binding::{BindingRecord, RoleRecord, ROLE_TEMPLATES};
pub use client::{ClientKind, ClientRecord, ClientStatus};
pub use cluster::{CaRecord, ClusterRecord, JoinTokenRecord};
pub use consent::ConsentRecord;
pub use data_key::DataKeyRecord;
pub use email::{EmailPurpose, EmailTokenRecord, OutboxRecord};
pub use idempotency::IdempotentResponse;
pub use lockout::{LockoutPolicy, LockoutRecord};
pub use passkey::PasskeyRecord;
pub use refresh_token::RefreshFamilyRecord;
pub use sealed::Sealed;
pub use session::SessionRecord;
pub use signing_key::{key_states, KeyState, PublicJwk, SigningAlg, SigningKeyRecord};
pub use tenant::{TenantRecord, TenantStatus};
pub use user::{MembershipRecord, OrganizationRecord, UserRecord, UserStatus};
