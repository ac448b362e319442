//! Who is calling, and what their role lets them do (CONTRACT.md §2).
//!
//! The policy: the operator may do everything everywhere; a tenant member
//! acts only inside its own tenant, with the rights of its role; a member
//! addressing another tenant's resources is told they do not exist (404),
//! never that they are forbidden (403), so existence is not revealed.

use std::fmt;
use std::sync::Arc;

/// The role a route demands, ordered from least to most privileged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads records and collections of its tenant.
    Viewer,
    /// Also writes records.
    Editor,
    /// Also manages the tenant's users, API keys and collections.
    Admin,
    /// Manages tenants; may act as admin in any tenant.
    Operator,
}

impl Role {
    /// The role's name as used in the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
            Role::Operator => "operator",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role a tenant member can hold. The operator is not a tenant member, so
/// `Operator` is not among these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TenantRole {
    /// See [`Role::Admin`].
    Admin,
    /// See [`Role::Editor`].
    Editor,
    /// See [`Role::Viewer`].
    Viewer,
}

impl TenantRole {
    /// The role's name as used in the API.
    pub const fn as_str(self) -> &'static str {
        self.role().as_str()
    }

    /// The same role in the overall order.
    pub const fn role(self) -> Role {
        match self {
            TenantRole::Admin => Role::Admin,
            TenantRole::Editor => Role::Editor,
            TenantRole::Viewer => Role::Viewer,
        }
    }

    /// Parses `admin`, `editor` or `viewer`.
    pub fn parse(s: &str) -> Option<TenantRole> {
        match s {
            "admin" => Some(TenantRole::Admin),
            "editor" => Some(TenantRole::Editor),
            "viewer" => Some(TenantRole::Viewer),
            _ => None,
        }
    }
}

/// An authenticated caller. Its names are shared (`Arc<str>`): one is
/// made for every request, and copies of it go to the resource and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The operator: manages tenants and may act in any tenant.
    Operator {
        /// The API key used.
        key_id: Arc<str>,
    },
    /// A user of one tenant, acting through one of its API keys.
    Member {
        /// The API key used.
        key_id: Arc<str>,
        /// The tenant's name.
        tenant: Arc<str>,
        /// The user's id.
        user_id: Arc<str>,
        /// The user's role.
        role: TenantRole,
    },
}

impl Principal {
    /// The caller's role in the overall order.
    pub fn role(&self) -> Role {
        match self {
            Principal::Operator { .. } => Role::Operator,
            Principal::Member { role, .. } => role.role(),
        }
    }

    /// The API key the caller used.
    pub fn key_id(&self) -> &str {
        match self {
            Principal::Operator { key_id } | Principal::Member { key_id, .. } => key_id,
        }
    }

    /// Who the caller is, as recorded on what it holds (leases): the user's
    /// id, or `operator`. Every key of one user acts as the same actor.
    pub fn actor(&self) -> &str {
        match self {
            Principal::Operator { .. } => "operator",
            Principal::Member { user_id, .. } => user_id,
        }
    }

    /// The tenant the caller belongs to, `None` for the operator.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Principal::Operator { .. } => None,
            Principal::Member { tenant, .. } => Some(tenant),
        }
    }
}

/// The outcome of an authorization check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Go on.
    Granted,
    /// The caller can see the resource but needs at least `required` (403).
    Forbidden {
        /// The least role that would be granted.
        required: Role,
    },
    /// The resource belongs to a tenant the caller cannot see (404).
    Invisible,
}

/// The `{tenant}` path segment that stands for the caller's own tenant
/// (`/v1/tenants/current/…` redirects there).
pub const CURRENT_TENANT: &str = "current";

/// Decides whether `principal` may use a route demanding `required`, when the
/// route addresses `tenant` (the `{tenant}` path segment, if any).
/// [`CURRENT_TENANT`] addresses the caller's own tenant.
pub fn authorize(principal: &Principal, tenant: Option<&str>, required: Role) -> Access {
    match principal {
        Principal::Operator { .. } => Access::Granted,
        Principal::Member { tenant: own, role, .. } => {
            if tenant.is_some_and(|t| t != &**own && t != CURRENT_TENANT) {
                Access::Invisible
            } else if role.role() >= required {
                Access::Granted
            } else {
                Access::Forbidden { required }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(tenant: &str, role: TenantRole) -> Principal {
        Principal::Member {
            key_id: "k".into(),
            tenant: tenant.into(),
            user_id: "u".into(),
            role,
        }
    }

    #[test]
    fn operator_may_do_everything_everywhere() {
        let op = Principal::Operator { key_id: "k".into() };
        for required in [Role::Viewer, Role::Editor, Role::Admin, Role::Operator] {
            assert_eq!(authorize(&op, Some("any"), required), Access::Granted);
            assert_eq!(authorize(&op, None, required), Access::Granted);
        }
    }

    #[test]
    fn members_act_by_role_in_their_own_tenant() {
        let viewer = member("acme", TenantRole::Viewer);
        let editor = member("acme", TenantRole::Editor);
        let admin = member("acme", TenantRole::Admin);
        assert_eq!(authorize(&viewer, Some("acme"), Role::Viewer), Access::Granted);
        assert_eq!(
            authorize(&viewer, Some("acme"), Role::Editor),
            Access::Forbidden { required: Role::Editor }
        );
        assert_eq!(authorize(&editor, Some("acme"), Role::Editor), Access::Granted);
        assert_eq!(
            authorize(&editor, Some("acme"), Role::Admin),
            Access::Forbidden { required: Role::Admin }
        );
        assert_eq!(authorize(&admin, Some("acme"), Role::Admin), Access::Granted);
        assert_eq!(
            authorize(&admin, None, Role::Operator),
            Access::Forbidden {
                required: Role::Operator
            }
        );
    }

    #[test]
    fn current_stands_for_the_callers_own_tenant() {
        let viewer = member("acme", TenantRole::Viewer);
        assert_eq!(authorize(&viewer, Some(CURRENT_TENANT), Role::Viewer), Access::Granted);
        assert_eq!(
            authorize(&viewer, Some(CURRENT_TENANT), Role::Editor),
            Access::Forbidden { required: Role::Editor }
        );
        assert_eq!(viewer.actor(), "u");
        assert_eq!(Principal::Operator { key_id: "k".into() }.actor(), "operator");
    }

    #[test]
    fn other_tenants_are_invisible_whatever_the_role() {
        for role in [TenantRole::Viewer, TenantRole::Editor, TenantRole::Admin] {
            let m = member("acme", role);
            for required in [Role::Viewer, Role::Editor, Role::Admin, Role::Operator] {
                assert_eq!(authorize(&m, Some("other"), required), Access::Invisible);
            }
        }
    }
}
