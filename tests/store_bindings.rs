//! Binding persistence on both databases: a batch behaves as its changes applied one by one,
//! across statement chunks, and what was written is what comes back at start.

mod common;

use common::{Db, TestDb};
use switchboard::directory::{NewPhone, NewUser};
use switchboard::registrar::{Binding, BindingChange, Source, Transport};

fn binding(phone_id: i64, user_id: i64, aor: &str, contact: &str, expires_at_ms: u64) -> Binding {
    Binding {
        aor: aor.into(),
        phone_id,
        user_id,
        contact: contact.into(),
        q: Some(500),
        expires_at_ms,
        call_id: "c1".into(),
        cseq: 7,
        source: Source {
            addr: "192.0.2.10:5062".parse().unwrap(),
            transport: Transport::Tcp,
            flow: 3,
        },
        user_agent: Some("Desk/1.0".into()),
        instance: None,
        reg_id: None,
        updated_ms: 1,
    }
}

/// User 100 with one phone, `sip_username` (password: the name and "-secret").
async fn user_with_phone(
    store: &switchboard::store::Store,
    sip_username: &str,
) -> (switchboard::directory::User, switchboard::directory::Phone) {
    let user = store
        .create_user(&NewUser {
            extension: "100".into(),
            display_name: "A".into(),
            email: "a@example.com".into(),
            fax_number: None,
            external_numbers: vec![],
        })
        .await
        .unwrap();
    let (phone, _) = store
        .create_phone(
            user.id,
            &NewPhone {
                sip_username: sip_username.into(),
                name: "Desk".into(),
                password: Some(format!("{sip_username}-secret")),
            },
            "r",
        )
        .await
        .unwrap();
    (user, phone)
}

async fn batches_apply_in_order(db: Db) {
    let tdb = TestDb::new(db).await;
    let store = tdb.store().await;
    let (user, phone) = user_with_phone(&store, "alice").await;
    let far = 4_000_000_000_000u64;
    let b = |contact: &str, exp: u64| binding(phone.id, user.id, "alice", contact, exp);

    // Later changes to the same contact win, whatever they are.
    store
        .apply_binding_changes(&[
            BindingChange::Upsert(b("sip:a@1", far)),
            BindingChange::Upsert(b("sip:b@1", far)),
            BindingChange::Upsert(b("sip:a@1", far + 5)),
            BindingChange::Remove {
                aor: "alice".into(),
                contact: "sip:b@1".into(),
            },
        ])
        .await
        .unwrap();
    let loaded = store.load_bindings(0).await.unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].contact, "sip:a@1");
    assert_eq!(loaded[0].expires_at_ms, far + 5);
    assert_eq!(loaded[0].source.addr.to_string(), "192.0.2.10:5062");
    assert_eq!(loaded[0].source.transport, Transport::Tcp);
    assert_eq!(loaded[0].q, Some(500));
    assert_eq!(loaded[0].user_agent.as_deref(), Some("Desk/1.0"));
    assert_eq!(loaded[0].call_id, "c1");
    assert_eq!(loaded[0].cseq, 7);
    assert_eq!(
        (loaded[0].instance.as_deref(), loaded[0].reg_id),
        (None, None)
    );
    assert_eq!(loaded[0].updated_ms, 1);

    // Remove then add again in one batch: present.
    store
        .apply_binding_changes(&[
            BindingChange::Remove {
                aor: "alice".into(),
                contact: "sip:a@1".into(),
            },
            BindingChange::Upsert(b("sip:a@1", far + 9)),
        ])
        .await
        .unwrap();
    let loaded = store.load_bindings(0).await.unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].expires_at_ms, far + 9);

    // More rows than one statement carries.
    let many: Vec<BindingChange> = (0..1234)
        .map(|i| BindingChange::Upsert(b(&format!("sip:m{i}@1"), far)))
        .collect();
    store.apply_binding_changes(&many).await.unwrap();
    // More than one page of the start-up load, each binding exactly once.
    let loaded = store.load_bindings(0).await.unwrap();
    assert_eq!(loaded.len(), 1235);
    let distinct: std::collections::HashSet<&str> =
        loaded.iter().map(|b| b.contact.as_str()).collect();
    assert_eq!(distinct.len(), 1235);
    let gone: Vec<BindingChange> = (0..1234)
        .map(|i| BindingChange::Remove {
            aor: "alice".into(),
            contact: format!("sip:m{i}@1"),
        })
        .collect();
    store.apply_binding_changes(&gone).await.unwrap();
    assert_eq!(store.load_bindings(0).await.unwrap().len(), 1);

    // Expired ones are not loaded, and are deleted.
    assert!(store.load_bindings(far + 10).await.unwrap().is_empty());
    assert_eq!(store.delete_expired_bindings(far + 10).await.unwrap(), 1);

    // Text survives the trip whatever it holds (SQLite takes a batch as one JSON document).
    let mut odd = binding(
        phone.id,
        user.id,
        "alice",
        "sip:o@[2001:db8::1]:5070;x=\"y\"",
        far,
    );
    odd.user_agent = Some("Desk \"2\" \\ é\u{1}".into());
    odd.instance = Some("<urn:uuid:00000000-0000-1000-8000-000000000001>".into());
    odd.reg_id = Some(2);
    odd.q = None;
    store
        .apply_binding_changes(&[BindingChange::Upsert(odd.clone())])
        .await
        .unwrap();
    let back = store.load_bindings(0).await.unwrap();
    let got = back
        .iter()
        .find(|b| b.contact == odd.contact)
        .expect("the odd binding");
    assert_eq!(got.user_agent, odd.user_agent);
    assert_eq!(
        (&got.instance, got.reg_id, got.q),
        (&odd.instance, Some(2), None)
    );
    store
        .apply_binding_changes(&[BindingChange::Remove {
            aor: "alice".into(),
            contact: odd.contact.clone(),
        }])
        .await
        .unwrap();

    // A binding of a phone that no longer exists fails the batch (the caller retries alone).
    let ghost = binding(phone.id + 999, user.id, "ghost", "sip:g@1", far);
    assert!(store
        .apply_binding_changes(&[BindingChange::Upsert(ghost)])
        .await
        .is_err());
}

on_both_databases!(batches_apply_in_order);

/// A phone added by another process (the CLI) is not in this one's credentials cache: a
/// background lookup puts it there for the phone's next request, and a name that does not
/// exist stays out.
async fn phones_added_elsewhere_are_fetched_in_the_background(db: Db) {
    let tdb = TestDb::new(db).await;
    let server_side = tdb.store().await;
    let cli_side = tdb.store().await;
    let (user, _) = user_with_phone(&cli_side, "newdesk").await;
    assert!(server_side.cached_phone_credentials("newdesk").is_none());
    let rt = tokio::runtime::Handle::current();
    server_side.prefetch_phone_credentials("newdesk", &rt);
    server_side.prefetch_phone_credentials("nobody", &rt);
    let mut found = None;
    for _ in 0..100 {
        found = server_side.cached_phone_credentials("newdesk");
        if found.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(found.map(|c| c.user_id), Some(user.id));
    assert!(server_side.cached_phone_credentials("nobody").is_none());
}

on_both_databases!(phones_added_elsewhere_are_fetched_in_the_background);
