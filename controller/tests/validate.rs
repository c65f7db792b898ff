//! Validation at the API (issue 12, items 7, 11 and 13): object size and
//! metadata limits, pool backing paths, CSR checks before the bootstrap
//! token is consumed, and unique host NQNs and data addresses.

use std::collections::HashMap;

use ferrofab_proto::v1::admin_service_client::AdminServiceClient;
use ferrofab_proto::v1::agent_service_client::AgentServiceClient;
use ferrofab_proto::v1::*;
use ferrofab_testkit::prelude::*;
use tonic::transport::Channel;
use tonic::Code;

fn annotated(mut v: Volume, annotations: &[(&str, usize)]) -> Volume {
    let m = v.metadata.as_mut().expect("metadata");
    for (k, n) in annotations {
        m.annotations.insert((*k).into(), "a".repeat(*n));
    }
    v
}

/// Two volumes with 3 MiB annotations made `volume list` fail for every
/// user on the 4 MiB message limit. Now the write is refused, naming the
/// field, and listing keeps working.
#[tokio::test]
async fn oversized_annotations_are_refused_and_lists_keep_working() {
    let (ctl, mut admin) = Controller::with_basic_layout(Options::default()).await;
    let mut lab = ctl.admin_as("tenant:lab").await;

    // The test controller's messages are 1 MiB (max_message_bytes), so
    // 900 KiB stands in for the 3 MiB of the report.
    let e = lab
        .create(annotated(
            volume("big", "lab", "1GiB", "p1"),
            &[("note", 900 << 10)],
        ))
        .await
        .expect_err("900 KiB annotation");
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    assert_eq!(
        e.message(),
        "invalid metadata.annotations[\"note\"]: value is 900 KiB, limit 64 KiB"
    );

    // Each value within its limit, the metadata over its share (224 KiB)
    // of the 256 KiB object.
    let many: Vec<(String, usize)> = (0..5).map(|i| (format!("n{i}"), 60 << 10)).collect();
    let many: Vec<(&str, usize)> = many.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    let e = lab
        .create(annotated(volume("wide", "lab", "1GiB", "p1"), &many))
        .await
        .expect_err("300 KiB object");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message()
            .starts_with("invalid metadata: labels and annotations are 300.1 KiB"),
        "{}",
        e.message()
    );
    assert!(e.message().contains("limit 224 KiB"), "{}", e.message());

    // An update may not grow a volume past the limits either.
    let v = lab
        .create(annotated(
            volume("ok", "lab", "1GiB", "p1"),
            &[("note", 1024)],
        ))
        .await
        .expect("small annotation");
    let grown = annotated(v, &[("more", 100 << 10)]);
    let e = lab.update(grown).await.expect_err("grown annotation");
    assert!(
        e.message().contains("metadata.annotations[\"more\"]"),
        "{}",
        e.message()
    );

    // Bad keys are refused for every kind, not only volumes.
    let mut p = pool("p2", "s1", "1GiB", &[]);
    p.metadata
        .as_mut()
        .expect("meta")
        .annotations
        .insert("not a key".into(), "x".into());
    let e = admin.create(p).await.expect_err("bad key");
    assert!(
        e.message().contains("metadata.annotations[\"not a key\"]"),
        "{}",
        e.message()
    );

    let items = admin
        .list_volumes(ListVolumesRequest::default())
        .await
        .expect("list still works")
        .into_inner()
        .items;
    assert_eq!(items.len(), 1);
}

/// Every object within its limit can still add up to more than one
/// message: List pages by size, and refuses (rather than cuts) a list for
/// a client that does not page.
#[tokio::test]
async fn lists_never_exceed_the_message_limit() {
    let (_ctl, mut admin) = Controller::with_basic_layout(Options::default()).await;
    // Six volumes of about 192 KiB: 1.1 MiB, over the test's 1 MiB messages.
    for i in 0..6 {
        let notes: Vec<(String, usize)> = (0..3).map(|j| (format!("n{j}"), 64 << 10)).collect();
        let notes: Vec<(&str, usize)> = notes.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        admin
            .create(annotated(
                volume(&format!("v{i}"), "lab", "1GiB", "p1"),
                &notes,
            ))
            .await
            .expect("volume within the object limit");
    }
    let e = admin
        .list_volumes(ListVolumesRequest::default())
        .await
        .expect_err("unpaged list does not fit");
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    assert!(
        e.message().contains("the 6 volumes are 1.1 MiB"),
        "{}",
        e.message()
    );
    assert!(e.message().contains("set page_size"), "{}", e.message());

    let mut names = Vec::new();
    let mut pages = 0;
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_volumes(ListVolumesRequest {
                page_size: 100,
                page_token,
                ..Default::default()
            })
            .await
            .expect("page")
            .into_inner();
        pages += 1;
        names.extend(
            page.items
                .iter()
                .map(|v| v.metadata.as_ref().expect("meta").name.clone()),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(names, ["v0", "v1", "v2", "v3", "v4", "v5"]);
    assert_eq!(pages, 2, "896 KiB of items per page: four, then two");
    let two = admin
        .list_volumes(ListVolumesRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .expect("count-limited page")
        .into_inner();
    assert_eq!((two.items.len(), two.next_page_token.as_str()), (2, "v1"));
}

async fn create_pool_at(
    c: &mut AdminServiceClient<Channel>,
    name: &str,
    path: &str,
) -> Result<Pool, tonic::Status> {
    let mut p = pool(name, "s1", "1GiB", &[]);
    p.spec
        .as_mut()
        .and_then(|s| s.backing.as_mut())
        .expect("backing")
        .path = path.into();
    c.create(p).await
}

#[tokio::test]
async fn pool_paths_must_be_absolute_and_normal() {
    let (_ctl, mut admin) = Controller::with_basic_layout(Options::default()).await;
    for (path, says) in [
        ("/srv/ferrofab/../../etc", "\"..\""),
        ("/srv/ferro\0fab", "U+0000"),
        ("/srv/ferro\u{1b}[2Jfab", "U+001B"),
        ("srv/ferrofab", "absolute"),
        ("/srv//ferrofab/", "write \"/srv/ferrofab\""),
    ] {
        let e = create_pool_at(&mut admin, "p2", path)
            .await
            .expect_err(path);
        assert_eq!(e.code(), Code::InvalidArgument, "{path:?}");
        assert!(
            e.message().starts_with("invalid spec.backing.path: "),
            "{}",
            e.message()
        );
        assert!(e.message().contains(says), "{path:?}: {}", e.message());
    }
    let mut p = create_pool_at(&mut admin, "p2", "/srv/ferrofab/p2")
        .await
        .expect("normal path");
    p.spec
        .as_mut()
        .and_then(|s| s.backing.as_mut())
        .expect("backing")
        .path = "/srv/ferrofab/p2/../../../etc".into();
    let e = admin.update(p).await.expect_err("update to ..");
    assert!(e.message().contains("spec.backing.path"), "{}", e.message());

    // Apply runs the same checks (issue 12 item 8's `…/../etc`).
    let mut bad = pool("p2", "s1", "1GiB", &[]);
    bad.spec
        .as_mut()
        .and_then(|s| s.backing.as_mut())
        .expect("backing")
        .path = "/srv/ferrofab/../../etc".into();
    let e = admin
        .apply_layout(
            Layout {
                pools: vec![bad],
                ..Default::default()
            },
            false,
        )
        .await
        .expect_err("apply with ..");
    assert!(e.message().contains("spec.backing.path"), "{}", e.message());
}

async fn token(admin: &mut AdminServiceClient<Channel>, node: &str) -> String {
    admin.bootstrap_token(node).await
}

fn good_csr() -> String {
    ferrofab_pki::generate_key_and_csr(&ferrofab_pki::Identity::node("x").expect("identity"))
        .expect("csr")
        .csr_pem
}

fn enroll_req(token: &str, node: &str, csr: &str, spec: NodeSpec) -> EnrollRequest {
    EnrollRequest {
        bootstrap_token: token.into(),
        csr_pem: csr.into(),
        node_name: node.into(),
        node: Some(spec),
        labels: HashMap::new(),
    }
}

/// A refused CSR must not burn the token (the README promises refusals
/// before signing keep it); a P-384 key is refused, not certified as P-256.
#[tokio::test]
async fn bad_csrs_are_refused_before_the_token_is_consumed() {
    let ctl = Controller::start();
    let mut admin = ctl.admin().await;
    let tok = token(&mut admin, "s5").await;
    let mut anon = AgentServiceClient::new(ctl.anonymous_channel().await);
    let spec = storage_node("s5", 4425).spec.expect("spec");
    let p384 = include_str!("../../pki/tests/data/csr-p384-sha256.pem");
    let rsa = include_str!("../../pki/tests/data/csr-rsa2048.pem");
    let truncated = good_csr().replace("-----END CERTIFICATE REQUEST-----", "");
    for (csr, says) in [
        ("garbage", "csr_pem"),
        (truncated.as_str(), "csr_pem"),
        (p384, "P-384"),
        (rsa, "RSA"),
    ] {
        let e = anon
            .enroll(enroll_req(&tok, "s5", csr, spec.clone()))
            .await
            .expect_err(says);
        assert_eq!(e.code(), Code::InvalidArgument, "{says}: {}", e.message());
        assert!(e.message().contains(says), "{says}: {}", e.message());
    }
    let resp = anon
        .enroll(enroll_req(&tok, "s5", &good_csr(), spec))
        .await
        .expect("the token survived the refusals")
        .into_inner();
    let info = ferrofab_pki::CertInfo::from_pem(resp.certificate_pem.as_bytes()).expect("cert");
    assert_eq!(
        info.identity,
        Some(ferrofab_pki::Identity::Node("s5".into()))
    );
}

fn node_with(name: &str, nqn: &str, addr: &str, port: u32) -> Node {
    let mut n = storage_node(name, port);
    let s = n.spec.as_mut().expect("spec");
    s.host_nqn = nqn.into();
    s.data_addresses[0].address = addr.into();
    n
}

#[tokio::test]
async fn host_nqns_and_data_addresses_belong_to_one_node() {
    let (ctl, mut admin) = Controller::with_basic_layout(Options::default()).await;
    let s1_nqn = "nqn.2014-08.org.nvmexpress:uuid:s1";

    // Admins are told which node has it.
    let e = admin
        .create(node_with("s2", s1_nqn, "10.0.0.2", 4420))
        .await
        .expect_err("same host NQN");
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().starts_with("spec.host_nqn: "),
        "{}",
        e.message()
    );
    assert!(e.message().contains("node \"s1\""), "{}", e.message());
    let e = admin
        .create(node_with("s2", "nqn.x:s2", "127.0.0.1", 0))
        .await
        .expect_err("same data address (port 0 is 4420)");
    assert!(
        e.message().starts_with("spec.data_addresses[0]: "),
        "{}",
        e.message()
    );
    assert!(e.message().contains("node \"s1\""), "{}", e.message());
    let mut ws1 = workstation("ws1");
    ws1.spec.as_mut().expect("spec").host_nqn = s1_nqn.into();
    let e = admin.update(ws1).await.expect_err("update to s1's NQN");
    assert!(e.message().contains("node \"s1\""), "{}", e.message());
    admin
        .create(node_with("s2", "nqn.x:s2", "127.0.0.1", 4421))
        .await
        .expect("another port is another address");

    // Enrollment: refused before the token burns, without naming the node.
    let tok = token(&mut admin, "s3").await;
    let mut anon = AgentServiceClient::new(ctl.anonymous_channel().await);
    for (nqn, addr, field) in [
        (s1_nqn, "10.0.0.3", "node.host_nqn"),
        ("nqn.x:s3", "127.0.0.1", "node.data_addresses[0]"),
    ] {
        let spec = node_with("s3", nqn, addr, 4420).spec.expect("spec");
        let e = anon
            .enroll(enroll_req(&tok, "s3", &good_csr(), spec))
            .await
            .expect_err(field);
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(e.message().starts_with(field), "{}", e.message());
        assert!(!e.message().contains("\"s1\""), "{}", e.message());
    }
    let spec = node_with("s3", "nqn.x:s3", "10.0.0.3", 4420)
        .spec
        .expect("spec");
    anon.enroll(enroll_req(&tok, "s3", &good_csr(), spec.clone()))
        .await
        .expect("token still usable");
    // The same node enrolling again (a reinstalled machine) keeps its own
    // host NQN: that is no clash.
    let again = token(&mut admin, "s3").await;
    anon.enroll(enroll_req(&again, "s3", &good_csr(), spec))
        .await
        .expect("re-enrollment with the node's own host NQN");
}
