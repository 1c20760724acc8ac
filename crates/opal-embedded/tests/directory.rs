//! The embedded backend through the `Directory` trait: apps, keys, grants and the audit trail,
//! kept across a reopen; qualified topic names get their own directories.

use opal_core::tenancy::{ApiKey, App, AuditEntry, Directory, Grant, KeyId, Quotas, Right, Scope};
use opal_core::{AppName, Broker, BrokerError, TopicConfig, TopicName};
use opal_embedded::{EmbeddedBroker, EmbeddedConfig};

fn app(name: &str) -> App {
    App::new(AppName::new(name).unwrap(), 1_000)
}

fn key(id: &str, app: &str) -> ApiKey {
    ApiKey {
        id: KeyId::new(id).unwrap(),
        app: AppName::new(app).unwrap(),
        name: format!("key {id}"),
        scopes: vec![Scope::Manage, "publish:orders.*".parse().unwrap()],
        hash: [id.len() as u8; 32],
        created_at_ms: 5,
        expires_at_ms: Some(99),
        revoked_at_ms: None,
        rotated_from: None,
        client_certificate_sha256: None,
    }
}

fn grant(topic: &str, app: &str) -> Grant {
    Grant {
        topic: TopicName::new(topic).unwrap(),
        app: AppName::new(app).unwrap(),
        rights: vec![Right::Subscribe],
        created_at_ms: 7,
    }
}

fn entry(action: &str) -> AuditEntry {
    AuditEntry {
        at_ms: 42,
        actor: "admin".into(),
        actor_app: "default".into(),
        action: action.into(),
        resource: "acme".into(),
        client: Some("127.0.0.1:5000".into()),
        request_id: None,
    }
}

#[tokio::test]
async fn records_survive_a_reopen_and_deleting_an_app_takes_its_keys_and_grants() {
    let dir = tempfile::tempdir().unwrap();
    let broker = EmbeddedBroker::open(EmbeddedConfig::new(dir.path())).unwrap();
    broker.create_app(&app("acme")).await.unwrap();
    broker.create_app(&app("isv1")).await.unwrap();
    assert!(matches!(
        broker.create_app(&app("acme")).await,
        Err(BrokerError::Conflict { kind: "app", .. })
    ));
    let mut changed = app("acme");
    changed.revision = 2;
    changed.quotas = Quotas {
        topics: Some(3),
        ..Quotas::default()
    };
    broker.replace_app(&changed).await.unwrap();
    assert!(matches!(
        broker.replace_app(&app("nobody")).await,
        Err(BrokerError::AppNotFound(_))
    ));
    broker.put_key(&key("aaaaaaaaaaaa", "acme")).await.unwrap();
    broker.put_key(&key("bbbbbbbbbbbb", "isv1")).await.unwrap();
    broker
        .put_grant(&grant("acme/orders", "isv1"))
        .await
        .unwrap();
    broker
        .put_grant(&grant("isv1/events", "acme"))
        .await
        .unwrap();
    for action in ["app.create", "app.create", "key.create"] {
        broker.append_audit(&entry(action)).await.unwrap();
    }
    broker.close().await.unwrap();
    drop(broker);

    let broker = EmbeddedBroker::open(EmbeddedConfig::new(dir.path())).unwrap();
    assert_eq!(
        broker.list_apps().await.unwrap(),
        vec![changed, app("isv1")]
    );
    let keys = broker.list_keys().await.unwrap();
    assert_eq!(
        keys,
        vec![key("aaaaaaaaaaaa", "acme"), key("bbbbbbbbbbbb", "isv1")]
    );
    assert_eq!(broker.list_grants().await.unwrap().len(), 2);
    let audit = broker.read_audit(0, 10).await.unwrap();
    assert_eq!(
        audit.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(audit[2].entry, entry("key.create"));
    let after = broker.read_audit(1, 1).await.unwrap();
    assert_eq!((after.len(), after[0].seq), (1, 2));

    // Deleting isv1 removes its key, the grant made to it and the grant on its own topic.
    broker
        .delete_app(&AppName::new("isv1").unwrap())
        .await
        .unwrap();
    assert!(matches!(
        broker.delete_app(&AppName::new("isv1").unwrap()).await,
        Err(BrokerError::AppNotFound(_))
    ));
    assert_eq!(
        broker.list_keys().await.unwrap(),
        vec![key("aaaaaaaaaaaa", "acme")]
    );
    assert!(broker.list_grants().await.unwrap().is_empty());
    assert!(
        !broker
            .delete_grant(
                &TopicName::new("acme/orders").unwrap(),
                &AppName::new("isv1").unwrap()
            )
            .await
            .unwrap()
    );
    // The audit trail keeps counting after a reopen.
    assert_eq!(broker.append_audit(&entry("app.delete")).await.unwrap(), 4);
    broker.close().await.unwrap();
}

#[tokio::test]
async fn a_qualified_topic_has_its_own_directory_beside_a_plain_one() {
    let dir = tempfile::tempdir().unwrap();
    let broker = EmbeddedBroker::open(EmbeddedConfig::new(dir.path())).unwrap();
    let plain = TopicName::new("acme").unwrap();
    let qualified = TopicName::new("acme/orders").unwrap();
    for topic in [&plain, &qualified] {
        broker
            .create_topic(topic, TopicConfig::default())
            .await
            .unwrap();
    }
    assert!(dir.path().join("topics/acme").is_dir());
    assert!(dir.path().join("topics/acme+orders").is_dir());
    broker.delete_topic(&plain, None).await.unwrap();
    assert!(dir.path().join("topics/acme+orders").is_dir());
    broker.get_topic(&qualified).await.unwrap();
    broker.close().await.unwrap();
}
