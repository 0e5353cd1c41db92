//! `PutVm` carrying identities: ARM's VM operation gives IMDS the VM and every identity
//! it carries in one call (one durable write) instead of `PutVm` then one `PutIdentity`
//! each.

use super::*;

async fn put_vm_with(
    h: &Harness,
    id: &str,
    identities: Vec<pb::ManagedIdentity>,
) -> Result<pb::Vm, Status> {
    Control::put_vm(
        &h.imds,
        Request::new(pb::PutVmRequest {
            metadata: Some(meta(id, "")),
            identities,
        }),
    )
    .await
    .map(|r| r.into_inner())
}

/// Entra knows identity `i` with certificate `n` (as ARM registered it first).
fn registered(h: &Harness, i: pb::ManagedIdentity, n: usize) -> pb::ManagedIdentity {
    register(&h.entra, &i.client_id, &certs()[n].certificate_der);
    i
}

fn clients(vm: &pb::Vm) -> Vec<&str> {
    let mut c: Vec<&str> = vm.identities.iter().map(|i| i.client_id.as_str()).collect();
    c.sort();
    c
}

/// A new VM and its identities in one call: the reply lists them, and the VM's
/// endpoint serves a token for each at once.
#[tokio::test]
async fn a_vm_put_with_its_identities_serves_tokens_for_them() {
    let h = harness().await;
    let sami = registered(&h, identity(SAMI, "vm1", 0), 0);
    let uami = registered(&h, identity(UAMI, "u1", 1), 1);
    let vm = put_vm_with(&h, VM1, vec![sami, uami]).await.unwrap();
    assert!(!vm.imds_endpoint.is_empty(), "{vm:?}");
    assert_eq!(clients(&vm), ["client-u1", "client-vm1"]);
    let thumb = |n: usize| misim_token::hex_upper(&misim_token::sha1(&certs()[n].certificate_der));
    let kinds: HashMap<&str, (i32, String)> = vm
        .identities
        .iter()
        .map(|i| {
            (
                i.client_id.as_str(),
                (i.kind, i.certificate_thumbprint.clone()),
            )
        })
        .collect();
    assert_eq!(kinds["client-vm1"], (SAMI as i32, thumb(0)));
    assert_eq!(kinds["client-u1"], (UAMI as i32, thumb(1)));
    for client in ["client-vm1", "client-u1"] {
        let (s, b) = h.token(&vm, &format!("&client_id={client}")).await;
        assert_eq!(s, 200, "{client}: {b}");
        assert_eq!(client_of(&b), client);
    }
    assert_eq!(issued(&h.entra), 2);
}

/// Each identity is put as `PutIdentity` puts it: a new system-assigned identity
/// replaces the old one, one of a served client id is replaced (a renewed
/// certificate), and identities the call does not name stay (ARM removes those
/// with `RemoveIdentity`). The same call again changes nothing.
#[tokio::test]
async fn identities_in_a_vm_put_replace_like_put_identity_and_leave_the_others() {
    let h = harness().await;
    let first = put_vm_with(
        &h,
        VM1,
        vec![
            registered(&h, identity(SAMI, "vm1", 0), 0),
            registered(&h, identity(UAMI, "u1", 1), 1),
        ],
    )
    .await
    .unwrap();
    let again = put_vm_with(
        &h,
        VM1,
        vec![identity(SAMI, "vm1", 0), identity(UAMI, "u1", 1)],
    )
    .await
    .unwrap();
    assert_eq!(again, first, "idempotent");

    // Another system identity (the SAMI disabled and enabled again), u1 with a
    // renewed certificate; a metadata-only put leaves both.
    let vm = put_vm_with(
        &h,
        VM1,
        vec![
            registered(&h, identity(SAMI, "vm1-again", 2), 2),
            registered(&h, identity(UAMI, "u1", 2), 2),
        ],
    )
    .await
    .unwrap();
    assert_eq!(clients(&vm), ["client-u1", "client-vm1-again"]);
    let u1 = vm
        .identities
        .iter()
        .find(|i| i.client_id == "client-u1")
        .unwrap();
    assert_eq!(
        u1.certificate_thumbprint,
        misim_token::hex_upper(&misim_token::sha1(&certs()[2].certificate_der))
    );
    let vm = put_vm_with(&h, VM1, vec![]).await.unwrap();
    assert_eq!(clients(&vm), ["client-u1", "client-vm1-again"]);
    let (s, b) = h.token(&vm, "&client_id=client-vm1").await;
    assert_eq!(s, 400, "the replaced system identity is gone: {b}");
    assert_eq!(h.token(&vm, "&client_id=client-vm1-again").await.0, 200);
}

/// An identity IMDS cannot sign with refuses the whole call: nothing is written, not
/// even the VM, so ARM's retry starts from the same state.
#[tokio::test]
async fn a_bad_identity_refuses_the_whole_vm_put() {
    let h = harness().await;
    let mut bad = identity(UAMI, "u1", 1);
    bad.private_key_pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into();
    let mut nameless = identity(UAMI, "u2", 1);
    nameless.client_id.clear();
    for broken in [bad, nameless] {
        let e = put_vm_with(&h, VM1, vec![identity(SAMI, "vm1", 0), broken])
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    }
    let e = Control::get_vm(
        &h.imds,
        Request::new(pb::GetVmRequest {
            resource_id: VM1.into(),
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "nothing written: {e}");
}
