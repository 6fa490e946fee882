//! Names in the standard simulated directory ([`crate::Directory::contoso`]).
//!
//! The secrets here are made up and only ever valid against the simulator.

/// The tenant's initial domain.
pub const TENANT_DOMAIN: &str = "contoso.onmicrosoft.com";
/// The tenant id.
pub const TENANT_ID: &str = "4a1c5f0e-8d2b-4c3e-9f6a-0b1c2d3e4f50";
/// A licensed user, member of both shared mailboxes, with Send As on [`SALES`] only.
pub const ALICE: &str = "alice@contoso.com";
/// A licensed user with no rights on the shared mailboxes.
pub const BOB: &str = "bob@contoso.com";
/// A shared mailbox on which [`ALICE`] has Send As.
pub const SALES: &str = "sales@contoso.com";
/// A shared mailbox of which [`ALICE`] is a member but without Send As.
pub const SUPPORT: &str = "support@contoso.com";
/// A confidential ("Web") app registration with a secret, redirect `http://localhost:3017/`,
/// admin consent for `SMTP.SendAsApp` and mailbox access to [`ALICE`] and [`SALES`].
pub const WEB_APP_ID: &str = "0d5c7a43-6f0e-4b8e-9c1d-7e2a3b4c5d6e";
/// The secret Value of [`WEB_APP_ID`].
pub const WEB_APP_SECRET: &str = "Qx58Q~sim.SecretValue-OnlyValidInTheSimulator_0123";
/// The secret ID of [`WEB_APP_ID`] (what people paste by mistake).
pub const WEB_APP_SECRET_ID: &str = "6b1f9a2e-3c4d-4e5f-8a9b-0c1d2e3f4a5b";
/// A public client ("Mobile and desktop", public client flows allowed): no secret, device code.
pub const PUBLIC_APP_ID: &str = "9e8d7c6b-5a49-4382-a1b0-c9d8e7f6a5b4";
/// The delegated SMTP scope.
pub const SMTP_SCOPE: &str = "https://outlook.office.com/SMTP.Send";
/// The app-only scope.
pub const APP_ONLY_SCOPE: &str = "https://outlook.office365.com/.default";
