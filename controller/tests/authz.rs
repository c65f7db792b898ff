//! Authorization and authentication negatives.

use ferrofab_proto::v1::admin_service_client::AdminServiceClient;
use ferrofab_proto::v1::agent_service_client::AgentServiceClient;
use ferrofab_proto::v1::*;
use ferrofab_testkit::prelude::*;
use tonic::Code;

#[tokio::test]
async fn tenant_is_confined_to_its_own_volumes_and_quota() {
    let (ctl, mut admin) = Controller::with_basic_layout(Options::default()).await;
    admin
        .create(tenant("other", "", 1, &[]))
        .await
        .expect("other");
    admin
        .create(volume("theirs", "other", "1GiB", "p1"))
        .await
        .expect("theirs");

    let mut lab = ctl.admin_as("tenant:lab").await;
    lab.create(volume("mine", "lab", "1GiB", "p1"))
        .await
        .expect("own create");
    let e = lab
        .delete::<Volume>("theirs")
        .await
        .expect_err("foreign delete");
    // Another tenant's volume is answered as a missing one (issue 12).
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), "volume \"theirs\" not found");
    let e = lab.get::<Volume>("theirs").await.expect_err("foreign get");
    assert_eq!(e.code(), Code::NotFound);
    let e = lab
        .create(volume("sneaky", "other", "1GiB", "p1"))
        .await
        .expect_err("foreign create");
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        e.message().contains("tenant:lab") && e.message().contains("CreateVolume"),
        "{}",
        e.message()
    );
    let list = lab
        .list_volumes(ListVolumesRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.items.len(), 1, "sees only its own");
    let e = lab
        .create(pool("px", "s1", "1GiB", &[]))
        .await
        .expect_err("admin only");
    assert_eq!(e.code(), Code::PermissionDenied);

    let mut other = ctl.admin_as("tenant:other").await;
    let e = other
        .create(volume("more", "other", "1GiB", "p1"))
        .await
        .expect_err("over quota");
    assert_eq!(e.code(), Code::ResourceExhausted);
}

#[tokio::test]
async fn node_sees_only_its_own_state() {
    let (ctl, mut admin) = Controller::with_basic_layout(Options::default()).await;
    let mut ws1 = ctl.agent_as("node:ws1").await;
    let e = ws1
        .watch_desired_state(WatchDesiredStateRequest {
            node: "s1".into(),
            ..Default::default()
        })
        .await
        .expect_err("other node");
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("node:ws1"), "{}", e.message());
    let e = ws1
        .report_status(ReportStatusRequest {
            node: "s1".into(),
            ..Default::default()
        })
        .await
        .expect_err("report other");
    assert_eq!(e.code(), Code::PermissionDenied);
    let mut ws1_admin = ctl.admin_as("node:ws1").await;
    let e = ws1_admin.desired_state("s1").await.expect_err("get other");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = ws1_admin
        .create(volume("v", "lab", "1GiB", "p1"))
        .await
        .expect_err("node creating volume");
    assert_eq!(e.code(), Code::PermissionDenied);
    // A node may request an attachment for itself, not for another node.
    admin
        .create(volume("v", "lab", "1GiB", "p1"))
        .await
        .expect("v");
    ws1_admin
        .create(attachment("v-ws1", "v", "ws1"))
        .await
        .expect("self attach");
    admin.create(workstation("ws2")).await.expect("ws2");
    let e = ws1_admin
        .create(attachment("v-ws2", "v", "ws2"))
        .await
        .expect_err("attach other");
    assert_eq!(e.code(), Code::PermissionDenied);
    ws1_admin
        .delete::<Attachment>("v-ws1")
        .await
        .expect("self release");
}

#[tokio::test]
async fn unknown_ca_and_expired_certs_are_rejected() {
    let ctl = Controller::start();
    let rogue = TestPki::new("rogue CA");
    let cred = rogue.client("admin");
    let refused = match ctl.channel_with(&cred, &ctl.pki.ca_cert).await {
        Err(_) => true,
        Ok(ch) => AdminServiceClient::new(ch)
            .list_tenants(ListTenantsRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "certificate from an unknown CA was accepted");
    let expired = ctl.pki.expired_client("admin");
    let refused = match ctl.channel_with(&expired, &ctl.pki.ca_cert).await {
        Err(_) => true,
        Ok(ch) => AdminServiceClient::new(ch)
            .list_tenants(ListTenantsRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "expired certificate was accepted");
    // No certificate at all: only Enroll answers.
    let e = AdminServiceClient::new(ctl.anonymous_channel().await)
        .list_tenants(ListTenantsRequest::default())
        .await
        .expect_err("anonymous");
    assert_eq!(e.code(), Code::Unauthenticated);
}

fn key_and_csr(requested: &str) -> ferrofab_pki::KeyAndCsr {
    ferrofab_pki::generate_key_and_csr(&requested.parse().expect("identity")).expect("csr")
}

fn identity_of(pem: &str) -> Option<ferrofab_pki::Identity> {
    ferrofab_pki::CertInfo::from_pem(pem.as_bytes())
        .expect("certificate")
        .identity
}

#[tokio::test]
async fn bootstrap_token_enrolls_once_and_node_renews() {
    let ctl = Controller::start();
    let mut admin = ctl.admin().await;
    let tok = admin.bootstrap_token("s7").await;
    let mut anon = AgentServiceClient::new(ctl.anonymous_channel().await);
    // The CSR asks for admin; the controller must ignore that.
    let kc = key_and_csr("admin");
    let req = EnrollRequest {
        bootstrap_token: tok.clone(),
        csr_pem: kc.csr_pem.clone(),
        node_name: "s7".into(),
        node: Some(storage_node("s7", 4420).spec.expect("spec")),
        labels: Default::default(),
    };
    let resp = anon.enroll(req.clone()).await.expect("enroll").into_inner();
    assert_eq!(
        identity_of(&resp.certificate_pem),
        Some(ferrofab_pki::Identity::Node("s7".into()))
    );
    admin.get::<Node>("s7").await.expect("node registered");
    let e = anon.enroll(req).await.expect_err("reuse");
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("already used"), "{}", e.message());
    let e = anon
        .enroll(EnrollRequest {
            bootstrap_token: "fft1.nope.nope".into(),
            csr_pem: key_and_csr("node:s8").csr_pem,
            node_name: "s8".into(),
            ..Default::default()
        })
        .await
        .expect_err("bogus");
    assert_eq!(e.code(), Code::PermissionDenied);

    // The enrolled certificate works, and renews itself.
    let cred = Cred {
        cert: resp.certificate_pem.clone(),
        key: kc.key_pem,
    };
    let mut agent = AgentServiceClient::new(ctl.channel(&cred).await);
    let next = key_and_csr("node:s7");
    let renewed = agent
        .renew(RenewRequest {
            csr_pem: next.csr_pem,
        })
        .await
        .expect("renew")
        .into_inner();
    assert_eq!(
        identity_of(&renewed.certificate_pem),
        Some(ferrofab_pki::Identity::Node("s7".into()))
    );
    assert!(renewed.not_after.is_some_and(|t| t.seconds > 0));
    let renewed_cred = Cred {
        cert: renewed.certificate_pem,
        key: next.key_pem,
    };
    AgentServiceClient::new(ctl.channel(&renewed_cred).await)
        .report_status(ReportStatusRequest {
            node: "s7".into(),
            ..Default::default()
        })
        .await
        .expect("renewed certificate works");

    // Admins and tenants do not renew through the API.
    let e = AgentServiceClient::new(ctl.channel(&ctl.pki.client("tenant:lab")).await)
        .renew(RenewRequest {
            csr_pem: key_and_csr("tenant:lab").csr_pem,
        })
        .await
        .expect_err("tenant renew");
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("tenant:lab"), "{}", e.message());
}

/// The one-step enrollment: the token carries the CA pin, the request
/// names no node and no roles; the controller signs for the token's node
/// and keeps the declared roles. Refusals happen before the token burns.
#[tokio::test]
async fn enroll_without_node_name_or_roles_uses_the_token_and_declared_node() {
    let ctl = Controller::start();
    let mut admin = ctl.admin().await;
    let mint = |node: &'static str| {
        let mut admin = admin.clone();
        async move { admin.bootstrap_token(node).await }
    };
    let tok = mint("s9").await;
    let parsed: ferrofab_pki::Token = tok.parse().expect("token parses");
    let pin = parsed.ca_pin().expect("token carries the CA pin");
    let ca_der = ferrofab_pki::first_cert_from_pem("ca", ctl.pki.ca_cert.as_bytes()).expect("ca");
    assert!(pin.matches(&ca_der), "pin is not the controller's CA");

    let mut anon = AgentServiceClient::new(ctl.anonymous_channel().await);
    let req = EnrollRequest {
        bootstrap_token: tok.clone(),
        csr_pem: key_and_csr("node:placeholder").csr_pem,
        node_name: String::new(),
        node: Some(NodeSpec::default()),
        labels: Default::default(),
    };
    // Undeclared node, no roles: refused, naming --roles; token not burned.
    let e = anon.enroll(req.clone()).await.expect_err("no roles");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("--roles"), "{}", e.message());
    // Another node's name: refused.
    let e = anon
        .enroll(EnrollRequest {
            node_name: "s10".into(),
            ..req.clone()
        })
        .await
        .expect_err("wrong node");
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("s9"), "{}", e.message());

    // Declared with roles and an address: enrollment keeps both.
    let declared = storage_node("s9", 4420);
    admin.create(declared.clone()).await.expect("declare");
    let resp = anon.enroll(req).await.expect("enroll").into_inner();
    assert_eq!(
        identity_of(&resp.certificate_pem),
        Some(ferrofab_pki::Identity::Node("s9".into()))
    );
    let node = resp.node.expect("node");
    let spec = node.spec.expect("spec");
    let want = declared.spec.expect("declared spec");
    assert_eq!(spec.roles, want.roles);
    assert_eq!(spec.data_addresses, want.data_addresses);
}
