//! Services whose work is still ahead (auth #10). Every method answers UNIMPLEMENTED at once, so a client gets a clear error instead of a hang.

use tonic::{Request, Response, Status};

use super::status::unimplemented;
use crate::pb::etcdserverpb as rpc;

/// Writes unary methods that answer UNIMPLEMENTED.
macro_rules! pending_unary {
    ($service:literal; $($method:ident($request:ty) -> $response:ty = $name:literal;)*) => {
        // Spelled out the way `async_trait` would write it: the attribute on the impl block
        // runs before this macro expands, so it cannot rewrite these methods itself.
        $(
            fn $method<'life, 'future>(
                &'life self,
                _request: Request<$request>,
            ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<$response>, Status>> + Send + 'future>>
            where
                'life: 'future,
                Self: 'future,
            {
                Box::pin(async { Err(unimplemented(concat!($service, "/", $name))) })
            }
        )*
    };
}

/// `etcdserverpb.Auth`, until authentication is built.
pub struct PendingAuth;

#[tonic::async_trait]
impl rpc::auth_server::Auth for PendingAuth {
    pending_unary! { "Auth";
        auth_enable(rpc::AuthEnableRequest) -> rpc::AuthEnableResponse = "AuthEnable";
        auth_disable(rpc::AuthDisableRequest) -> rpc::AuthDisableResponse = "AuthDisable";
        auth_status(rpc::AuthStatusRequest) -> rpc::AuthStatusResponse = "AuthStatus";
        authenticate(rpc::AuthenticateRequest) -> rpc::AuthenticateResponse = "Authenticate";
        user_add(rpc::AuthUserAddRequest) -> rpc::AuthUserAddResponse = "UserAdd";
        user_get(rpc::AuthUserGetRequest) -> rpc::AuthUserGetResponse = "UserGet";
        user_list(rpc::AuthUserListRequest) -> rpc::AuthUserListResponse = "UserList";
        user_delete(rpc::AuthUserDeleteRequest) -> rpc::AuthUserDeleteResponse = "UserDelete";
        user_change_password(rpc::AuthUserChangePasswordRequest) -> rpc::AuthUserChangePasswordResponse = "UserChangePassword";
        user_grant_role(rpc::AuthUserGrantRoleRequest) -> rpc::AuthUserGrantRoleResponse = "UserGrantRole";
        user_revoke_role(rpc::AuthUserRevokeRoleRequest) -> rpc::AuthUserRevokeRoleResponse = "UserRevokeRole";
        role_add(rpc::AuthRoleAddRequest) -> rpc::AuthRoleAddResponse = "RoleAdd";
        role_get(rpc::AuthRoleGetRequest) -> rpc::AuthRoleGetResponse = "RoleGet";
        role_list(rpc::AuthRoleListRequest) -> rpc::AuthRoleListResponse = "RoleList";
        role_delete(rpc::AuthRoleDeleteRequest) -> rpc::AuthRoleDeleteResponse = "RoleDelete";
        role_grant_permission(rpc::AuthRoleGrantPermissionRequest) -> rpc::AuthRoleGrantPermissionResponse = "RoleGrantPermission";
        role_revoke_permission(rpc::AuthRoleRevokePermissionRequest) -> rpc::AuthRoleRevokePermissionResponse = "RoleRevokePermission";
    }
}
