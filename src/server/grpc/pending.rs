//! Services whose work is still ahead (lock/election #5, auth #10). Every
//! method answers UNIMPLEMENTED at once, so a client gets a clear error instead of a hang.

use tonic::{Request, Response, Status};

use super::status::unimplemented;
use crate::pb::etcdserverpb as rpc;
use crate::pb::{v3electionpb as election, v3lockpb as lock};

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

type Empty<T> = futures::stream::Empty<Result<T, Status>>;

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

/// `v3lockpb.Lock`, until locks are built.
pub struct PendingLock;

#[tonic::async_trait]
impl lock::lock_server::Lock for PendingLock {
    pending_unary! { "Lock";
        lock(lock::LockRequest) -> lock::LockResponse = "Lock";
        unlock(lock::UnlockRequest) -> lock::UnlockResponse = "Unlock";
    }
}

/// `v3electionpb.Election`, until elections are built.
pub struct PendingElection;

#[tonic::async_trait]
impl election::election_server::Election for PendingElection {
    pending_unary! { "Election";
        campaign(election::CampaignRequest) -> election::CampaignResponse = "Campaign";
        proclaim(election::ProclaimRequest) -> election::ProclaimResponse = "Proclaim";
        leader(election::LeaderRequest) -> election::LeaderResponse = "Leader";
        resign(election::ResignRequest) -> election::ResignResponse = "Resign";
    }

    type ObserveStream = Empty<election::LeaderResponse>;

    async fn observe(
        &self,
        _request: Request<election::LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        Err(unimplemented("Election/Observe"))
    }
}
