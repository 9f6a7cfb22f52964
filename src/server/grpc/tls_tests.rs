//! The client port's TLS path (handshake, then the authority repair) hands request handlers
//! the verified client certificate: [`client_common_name`] sees its common name.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use tonic::{Request, Response, Status};

use super::{client_common_name, tls_incoming};
use crate::pb::v3lockpb::lock_client::LockClient;
use crate::pb::v3lockpb::lock_server::{Lock, LockServer};
use crate::pb::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use crate::tls::{ALPN_CLIENT_PORT, ClientTls, TlsInfo, server_config};

/// Answers a lock request with the caller's certificate common name as the key.
struct CommonNameEcho;

#[tonic::async_trait]
impl Lock for CommonNameEcho {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let name = client_common_name(&request).unwrap_or_default();
        Ok(Response::new(LockResponse {
            header: None,
            key: name.into_bytes().into(),
        }))
    }

    async fn unlock(
        &self,
        _request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        Err(Status::unimplemented("not part of this test"))
    }
}

fn leaf(common_name: &str, issuer: &CertifiedIssuer<'_, KeyPair>) -> (String, String) {
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn handlers_see_the_verified_client_common_name() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let ca_file = write("ca.pem", &ca.pem());
    let (server_cert, server_key) = leaf("server", &ca);
    let (client_cert, client_key) = leaf("alice", &ca);
    let info = TlsInfo {
        cert_file: Some(write("server.pem", &server_cert)),
        key_file: Some(write("server-key.pem", &server_key)),
        trusted_ca_file: Some(ca_file.clone()),
        client_cert_auth: true,
    };
    let config = server_config(&info, ALPN_CLIENT_PORT).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(LockServer::new(CommonNameEcho))
            .serve_with_incoming_shutdown(tls_incoming(listener, Arc::clone(&config)), async {
                let _ = stopped.await;
            }),
    );

    let client_cert_file = write("client.pem", &client_cert);
    let client_key_file = write("client-key.pem", &client_key);
    let tls = ClientTls::from_files(&ca_file, Some((&client_cert_file, &client_key_file))).unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(tls.tonic_config())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let answer = LockClient::new(channel)
        .lock(LockRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.key.as_ref(), b"alice");

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
