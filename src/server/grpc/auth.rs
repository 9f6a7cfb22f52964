//! The etcd Auth service: wire conversion around the server's auth calls, and the layer that
//! tells the server who is calling.
//!
//! The caller is read from the request's `token` metadata, or, for the JSON gateway, from its
//! `Authorization` header (etcd reads both), and set as the task's [`Caller`] around the whole
//! service call. Nothing here decides whether a request is allowed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::{Request, Response, Status};

use super::header_to_pb;
use crate::apply::codec::{permission_from_pb, permission_to_pb};
use crate::auth::{AuthChange, AuthError};
use crate::pb::etcdserverpb::{self as rpc, auth_server::Auth};
use crate::server::{Caller, Error, Header, Server};

/// Request metadata key of the simple token.
const TOKEN_METADATA: &str = "token";
/// The header grpc-gateway clients put the token in.
const AUTHORIZATION_HEADER: &str = "authorization";
/// Content type every gRPC call carries (with or without a `+proto` suffix).
const GRPC_CONTENT_TYPE: &str = "application/grpc";

/// The caller a request names: its token, and on a gRPC call its verified client
/// certificate's common name.
fn caller_of<B>(request: &http::Request<B>) -> Caller {
    let headers = request.headers();
    let token = headers
        .get(TOKEN_METADATA)
        .or_else(|| headers.get(AUTHORIZATION_HEADER))
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    // etcd-compat: etcd never takes the user from the certificate of a JSON gateway
    // request (its gateway dials the gRPC port with a certificate of its own), so only
    // gRPC calls are looked at.
    let is_grpc = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with(GRPC_CONTENT_TYPE));
    let common_name = if is_grpc {
        super::peer_common_name(request.extensions())
    } else {
        None
    };
    Caller { token, common_name }
}

/// Wraps a service so every call runs as the caller its headers name.
#[derive(Clone, Debug)]
pub struct CallerScope<S> {
    inner: S,
}

impl<S> CallerScope<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> CallerScope<S> {
        CallerScope { inner }
    }
}

impl<S, B> tower::Service<http::Request<B>> for CallerScope<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let caller = caller_of(&request);
        let call = self.inner.call(request);
        Box::pin(caller.scope(call))
    }
}

fn header(header: Header) -> Option<rpc::ResponseHeader> {
    Some(header_to_pb(header))
}

/// Serves `etcdserverpb.Auth`.
pub struct AuthService {
    server: Arc<Server>,
}

impl AuthService {
    /// An Auth service over `server`.
    pub fn new(server: Arc<Server>) -> AuthService {
        AuthService { server }
    }

    async fn change(&self, change: AuthChange) -> Result<Option<rpc::ResponseHeader>, Status> {
        Ok(header(self.server.auth_change(change).await?))
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        _request: Request<rpc::AuthEnableRequest>,
    ) -> Result<Response<rpc::AuthEnableResponse>, Status> {
        let header = self.change(AuthChange::Enable).await?;
        Ok(Response::new(rpc::AuthEnableResponse { header }))
    }

    async fn auth_disable(
        &self,
        _request: Request<rpc::AuthDisableRequest>,
    ) -> Result<Response<rpc::AuthDisableResponse>, Status> {
        let header = self.change(AuthChange::Disable).await?;
        Ok(Response::new(rpc::AuthDisableResponse { header }))
    }

    async fn auth_status(
        &self,
        _request: Request<rpc::AuthStatusRequest>,
    ) -> Result<Response<rpc::AuthStatusResponse>, Status> {
        let (status, header) = self.server.auth_status();
        Ok(Response::new(rpc::AuthStatusResponse {
            header: Some(header_to_pb(header)),
            enabled: status.enabled,
            auth_revision: status.revision,
        }))
    }

    async fn authenticate(
        &self,
        request: Request<rpc::AuthenticateRequest>,
    ) -> Result<Response<rpc::AuthenticateResponse>, Status> {
        let request = request.into_inner();
        let token = self
            .server
            .authenticate(&request.name, request.password)
            .await?;
        Ok(Response::new(rpc::AuthenticateResponse {
            header: Some(header_to_pb(self.server.current_header())),
            token,
        }))
    }

    async fn user_add(
        &self,
        request: Request<rpc::AuthUserAddRequest>,
    ) -> Result<Response<rpc::AuthUserAddResponse>, Status> {
        let request = request.into_inner();
        let no_password = request.options.is_some_and(|options| options.no_password);
        let password = (!no_password).then_some(request.password);
        let header = header(self.server.user_add(request.name, password).await?);
        Ok(Response::new(rpc::AuthUserAddResponse { header }))
    }

    async fn user_get(
        &self,
        request: Request<rpc::AuthUserGetRequest>,
    ) -> Result<Response<rpc::AuthUserGetResponse>, Status> {
        let (user, read) = self.server.user_get(&request.into_inner().name).await?;
        Ok(Response::new(rpc::AuthUserGetResponse {
            header: header(read),
            roles: user.roles,
        }))
    }

    async fn user_list(
        &self,
        _request: Request<rpc::AuthUserListRequest>,
    ) -> Result<Response<rpc::AuthUserListResponse>, Status> {
        let (users, read) = self.server.user_list().await?;
        Ok(Response::new(rpc::AuthUserListResponse {
            header: header(read),
            users,
        }))
    }

    async fn user_delete(
        &self,
        request: Request<rpc::AuthUserDeleteRequest>,
    ) -> Result<Response<rpc::AuthUserDeleteResponse>, Status> {
        let name = request.into_inner().name;
        let header = self.change(AuthChange::UserDelete { name }).await?;
        Ok(Response::new(rpc::AuthUserDeleteResponse { header }))
    }

    async fn user_change_password(
        &self,
        request: Request<rpc::AuthUserChangePasswordRequest>,
    ) -> Result<Response<rpc::AuthUserChangePasswordResponse>, Status> {
        let request = request.into_inner();
        let header = header(
            self.server
                .user_change_password(request.name, request.password)
                .await?,
        );
        Ok(Response::new(rpc::AuthUserChangePasswordResponse {
            header,
        }))
    }

    async fn user_grant_role(
        &self,
        request: Request<rpc::AuthUserGrantRoleRequest>,
    ) -> Result<Response<rpc::AuthUserGrantRoleResponse>, Status> {
        let request = request.into_inner();
        let header = self
            .change(AuthChange::UserGrantRole {
                user: request.user,
                role: request.role,
            })
            .await?;
        Ok(Response::new(rpc::AuthUserGrantRoleResponse { header }))
    }

    async fn user_revoke_role(
        &self,
        request: Request<rpc::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<rpc::AuthUserRevokeRoleResponse>, Status> {
        let request = request.into_inner();
        let header = self
            .change(AuthChange::UserRevokeRole {
                user: request.name,
                role: request.role,
            })
            .await?;
        Ok(Response::new(rpc::AuthUserRevokeRoleResponse { header }))
    }

    async fn role_add(
        &self,
        request: Request<rpc::AuthRoleAddRequest>,
    ) -> Result<Response<rpc::AuthRoleAddResponse>, Status> {
        let name = request.into_inner().name;
        let header = self.change(AuthChange::RoleAdd { name }).await?;
        Ok(Response::new(rpc::AuthRoleAddResponse { header }))
    }

    async fn role_get(
        &self,
        request: Request<rpc::AuthRoleGetRequest>,
    ) -> Result<Response<rpc::AuthRoleGetResponse>, Status> {
        let (permissions, read) = self.server.role_get(&request.into_inner().role).await?;
        Ok(Response::new(rpc::AuthRoleGetResponse {
            header: header(read),
            perm: permissions.iter().map(permission_to_pb).collect(),
        }))
    }

    async fn role_list(
        &self,
        _request: Request<rpc::AuthRoleListRequest>,
    ) -> Result<Response<rpc::AuthRoleListResponse>, Status> {
        let (roles, read) = self.server.role_list().await?;
        Ok(Response::new(rpc::AuthRoleListResponse {
            header: header(read),
            roles,
        }))
    }

    async fn role_delete(
        &self,
        request: Request<rpc::AuthRoleDeleteRequest>,
    ) -> Result<Response<rpc::AuthRoleDeleteResponse>, Status> {
        let name = request.into_inner().role;
        let header = self.change(AuthChange::RoleDelete { name }).await?;
        Ok(Response::new(rpc::AuthRoleDeleteResponse { header }))
    }

    async fn role_grant_permission(
        &self,
        request: Request<rpc::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<rpc::AuthRoleGrantPermissionResponse>, Status> {
        let request = request.into_inner();
        // etcd-compat: a grant without a (known) permission is refused as "permission not
        // given".
        let permission = request
            .perm
            .and_then(|perm| permission_from_pb(perm).ok())
            .ok_or(Error::Auth(AuthError::PermissionNotGiven))?;
        let header = self
            .change(AuthChange::RoleGrantPermission {
                role: request.name,
                permission,
            })
            .await?;
        Ok(Response::new(rpc::AuthRoleGrantPermissionResponse {
            header,
        }))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<rpc::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<rpc::AuthRoleRevokePermissionResponse>, Status> {
        let request = request.into_inner();
        let header = self
            .change(AuthChange::RoleRevokePermission {
                role: request.role,
                key: request.key,
                range_end: request.range_end,
            })
            .await?;
        Ok(Response::new(rpc::AuthRoleRevokePermissionResponse {
            header,
        }))
    }
}
