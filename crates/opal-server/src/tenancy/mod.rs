//! The server's view of tenancy: apps, keys and grants kept in memory for the checks every request
//! makes, written through to the [`Directory`]; rate limits, quotas and the audit trail.
//!
//! One process serves a data directory, and every change goes through here, so the in-memory
//! copy is the truth once loaded. Changes are serialised by one lock and written to the directory
//! before the copy is updated: a failed write changes nothing.

mod quota;
mod rate;
mod secrets;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use opal_core::tenancy::{ApiKey, App, AuditEntry, Directory, Grant, KeyId, Quotas, Right, Scope};
use opal_core::{AppName, Broker, BrokerError, Clock, SubscriptionName, TopicName};
use tokio::sync::{Mutex, OnceCell};

pub(crate) use quota::{StreamGuard, Usage};

pub(crate) use secrets::{NewSecret, parse_key};

use crate::auth::Principal;
use crate::problem::{Problem, ProblemKind};

/// Everything the edges check per request, and the changes to it.
pub(crate) struct Tenancy {
    directory: Arc<dyn Directory>,
    broker: Arc<dyn Broker>,
    pub(crate) clock: Clock,
    loaded: OnceCell<()>,
    state: RwLock<State>,
    /// Serialises changes, so that check-then-write cannot race.
    changes: Mutex<()>,
    pub(crate) quotas: quota::Enforcer,
}

impl std::fmt::Debug for Tenancy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenancy").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    apps: BTreeMap<AppName, App>,
    keys: HashMap<KeyId, Arc<ApiKey>>,
    /// (topic, grantee) → grant.
    grants: BTreeMap<(TopicName, AppName), Grant>,
    /// Subscriptions on another app's topic, with that topic: each pull checks its grant.
    foreign: HashMap<SubscriptionName, TopicName>,
}

/// What a new key is made of.
#[derive(Debug)]
pub(crate) struct KeySpec {
    pub(crate) name: String,
    pub(crate) scopes: Vec<Scope>,
    pub(crate) expires_at_ms: Option<i64>,
    pub(crate) client_certificate_sha256: Option<[u8; 32]>,
}

/// Most subscriptions read at a time while loading.
const LOAD_PAGE: usize = 1000;

impl Tenancy {
    pub(crate) fn new(
        directory: Arc<dyn Directory>,
        broker: Arc<dyn Broker>,
        clock: Clock,
        auth_failures_per_s: u64,
    ) -> Self {
        Tenancy {
            directory,
            broker,
            quotas: quota::Enforcer::new(clock.clone(), auth_failures_per_s),
            clock,
            loaded: OnceCell::new(),
            state: RwLock::new(State::default()),
            changes: Mutex::new(()),
        }
    }

    /// Whether the directory was read (`ensure_loaded` succeeded once).
    pub(crate) fn is_loaded(&self) -> bool {
        self.loaded.initialized()
    }

    /// Reads the directory once (on the first request), creating the `default` app if needed.
    pub(crate) async fn ensure_loaded(&self) -> Result<(), Problem> {
        self.loaded
            .get_or_try_init(|| async {
                let mut apps = self.directory.list_apps().await?;
                if !apps.iter().any(|a| a.name.as_str() == AppName::DEFAULT) {
                    let default = App::new(AppName::default_app(), self.clock.now_ms());
                    self.directory.create_app(&default).await?;
                    apps.push(default);
                }
                let keys = self.directory.list_keys().await?;
                let grants = self.directory.list_grants().await?;
                let mut foreign = HashMap::new();
                let mut after: Option<SubscriptionName> = None;
                loop {
                    let page = self
                        .broker
                        .list_subscriptions(None, after.as_ref(), LOAD_PAGE)
                        .await?;
                    for sub in &page {
                        if sub.name.app() != sub.config.topic.app() {
                            foreign.insert(sub.name.clone(), sub.config.topic.clone());
                        }
                    }
                    match page.last() {
                        Some(last) if page.len() == LOAD_PAGE => after = Some(last.name.clone()),
                        _ => break,
                    }
                }
                let mut state = self.write_state();
                state.apps = apps.into_iter().map(|a| (a.name.clone(), a)).collect();
                state.keys = keys
                    .into_iter()
                    .map(|k| (k.id.clone(), Arc::new(k)))
                    .collect();
                state.grants = grants
                    .into_iter()
                    .map(|g| ((g.topic.clone(), g.app.clone()), g))
                    .collect();
                state.foreign = foreign;
                tracing::debug!(
                    apps = state.apps.len(),
                    keys = state.keys.len(),
                    grants = state.grants.len(),
                    "tenancy loaded"
                );
                Ok::<(), BrokerError>(())
            })
            .await
            .map(|_| ())
            .map_err(Problem::from)
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn key(&self, id: &KeyId) -> Option<Arc<ApiKey>> {
        self.read_state().keys.get(id).cloned()
    }

    pub(crate) fn app(&self, name: &AppName) -> Option<App> {
        self.read_state().apps.get(name).cloned()
    }

    pub(crate) fn app_quotas(&self, name: &AppName) -> Quotas {
        self.read_state()
            .apps
            .get(name)
            .map(|a| a.quotas)
            .unwrap_or_default()
    }

    pub(crate) fn apps(&self) -> Vec<App> {
        self.read_state().apps.values().cloned().collect()
    }

    pub(crate) fn keys_of(&self, app: &AppName) -> Vec<Arc<ApiKey>> {
        let mut keys: Vec<_> = self
            .read_state()
            .keys
            .values()
            .filter(|k| k.app == *app)
            .cloned()
            .collect();
        keys.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        keys
    }

    /// Whether `app` may subscribe to `topic` (its own, or granted).
    pub(crate) fn may_subscribe(&self, app: &AppName, topic: &TopicName) -> bool {
        topic.app() == Some(app.as_str())
            || self
                .read_state()
                .grants
                .get(&(topic.clone(), app.clone()))
                .is_some_and(|g| g.rights.contains(&Right::Subscribe))
    }

    pub(crate) fn grants_on(&self, topic: &TopicName) -> Vec<Grant> {
        self.read_state()
            .grants
            .values()
            .filter(|g| g.topic == *topic)
            .cloned()
            .collect()
    }

    /// For a pull: a subscription on another app's topic delivers only while the grant holds
    /// (admins, who may reach every app's topics, are not held back).
    pub(crate) fn check_delivery(
        &self,
        caller: &Principal,
        subscription: &SubscriptionName,
    ) -> Result<(), Problem> {
        if caller.is_admin() {
            return Ok(());
        }
        let state = self.read_state();
        let Some(topic) = state.foreign.get(subscription) else {
            return Ok(());
        };
        let Some(app) = subscription.app().and_then(|a| AppName::new(a).ok()) else {
            return Ok(());
        };
        let granted = state
            .grants
            .get(&(topic.clone(), app))
            .is_some_and(|g| g.rights.contains(&Right::Subscribe));
        if granted {
            Ok(())
        } else {
            Err(Problem::new(
                ProblemKind::Forbidden,
                format!(
                    "the grant to subscribe to topic `{topic}` was revoked: this subscription \
                     delivers nothing until it is granted again"
                ),
            ))
        }
    }

    /// Keeps the foreign-subscription index in step with the broker.
    pub(crate) fn subscription_changed(&self, name: &SubscriptionName, topic: Option<&TopicName>) {
        let mut state = self.write_state();
        match topic {
            Some(topic) if name.app() != topic.app() => {
                state.foreign.insert(name.clone(), topic.clone());
            }
            _ => {
                state.foreign.remove(name);
            }
        }
    }

    // ----------------------------------------------------------------------------------------
    // Changes: written to the directory first, then to the in-memory copy.

    pub(crate) async fn create_app(&self, name: AppName, quotas: Quotas) -> Result<App, Problem> {
        let _change = self.changes.lock().await;
        let mut app = App::new(name, self.clock.now_ms());
        app.quotas = quotas;
        self.directory.create_app(&app).await?;
        self.write_state()
            .apps
            .insert(app.name.clone(), app.clone());
        Ok(app)
    }

    pub(crate) async fn update_app(
        &self,
        name: &AppName,
        quotas: Quotas,
        expected_revision: Option<u64>,
    ) -> Result<App, Problem> {
        let _change = self.changes.lock().await;
        let mut app = self
            .app(name)
            .ok_or_else(|| BrokerError::AppNotFound(name.to_string()))?;
        if let Some(expected) = expected_revision
            && expected != app.revision
        {
            return Err(BrokerError::RevisionMismatch {
                kind: "app",
                name: name.to_string(),
                expected,
                current: app.revision,
            }
            .into());
        }
        app.quotas = quotas;
        app.revision += 1;
        self.directory.replace_app(&app).await?;
        self.write_state()
            .apps
            .insert(app.name.clone(), app.clone());
        self.quotas.forget(name);
        Ok(app)
    }

    /// Deletes an app that owns no topics and no subscriptions, with its keys and grants.
    pub(crate) async fn delete_app(
        &self,
        name: &AppName,
        expected_revision: Option<u64>,
    ) -> Result<(), Problem> {
        let _change = self.changes.lock().await;
        if name.as_str() == AppName::DEFAULT {
            return Err(Problem::new(
                ProblemKind::Conflict,
                "the `default` app owns what the bootstrap admin key creates and cannot be deleted",
            ));
        }
        let app = self
            .app(name)
            .ok_or_else(|| BrokerError::AppNotFound(name.to_string()))?;
        if let Some(expected) = expected_revision
            && expected != app.revision
        {
            return Err(BrokerError::RevisionMismatch {
                kind: "app",
                name: name.to_string(),
                expected,
                current: app.revision,
            }
            .into());
        }
        let topics = self.broker.list_topics(Some(name), None, 1).await?;
        let subscriptions = self.broker.list_subscriptions(Some(name), None, 1).await?;
        if !topics.is_empty() || !subscriptions.is_empty() {
            return Err(Problem::new(
                ProblemKind::Conflict,
                format!("app `{name}` still owns topics or subscriptions; delete them first"),
            ));
        }
        self.directory.delete_app(name).await?;
        let mut state = self.write_state();
        state.apps.remove(name);
        state.keys.retain(|_, k| k.app != *name);
        state
            .grants
            .retain(|(topic, grantee), _| grantee != name && topic.app() != Some(name.as_str()));
        drop(state);
        self.quotas.forget(name);
        Ok(())
    }

    /// Creates a key and returns it with its secret, which is not kept.
    pub(crate) async fn create_key(
        &self,
        app: &AppName,
        spec: KeySpec,
    ) -> Result<(Arc<ApiKey>, NewSecret), Problem> {
        let _change = self.changes.lock().await;
        self.create_key_locked(app, spec, None).await
    }

    async fn create_key_locked(
        &self,
        app: &AppName,
        spec: KeySpec,
        rotated_from: Option<&KeyId>,
    ) -> Result<(Arc<ApiKey>, NewSecret), Problem> {
        if self.app(app).is_none() {
            return Err(BrokerError::AppNotFound(app.to_string()).into());
        }
        if let Some(fingerprint) = &spec.client_certificate_sha256
            && let Some(holder) = self.key_by_certificate(fingerprint)
            && holder.revoked_at_ms.is_none()
            && Some(&holder.id) != rotated_from
        {
            return Err(Problem::new(
                ProblemKind::Conflict,
                format!(
                    "that client certificate already stands for key `{}` of app `{}`; revoke it first",
                    holder.id, holder.app
                ),
            ));
        }
        let secret = NewSecret::generate(|id| self.read_state().keys.contains_key(id));
        let key = ApiKey {
            id: secret.id.clone(),
            app: app.clone(),
            name: spec.name,
            scopes: spec.scopes,
            hash: secret.hash,
            created_at_ms: self.clock.now_ms(),
            expires_at_ms: spec.expires_at_ms,
            revoked_at_ms: None,
            rotated_from: rotated_from.cloned(),
            client_certificate_sha256: spec.client_certificate_sha256,
        };
        self.directory.put_key(&key).await?;
        let key = Arc::new(key);
        self.write_state()
            .keys
            .insert(key.id.clone(), Arc::clone(&key));
        Ok((key, secret))
    }

    /// The key a client certificate stands for: the one not revoked if there is one, else the
    /// latest revoked one (so that its holder learns it was revoked).
    pub(crate) fn key_by_certificate(&self, fingerprint: &[u8; 32]) -> Option<Arc<ApiKey>> {
        let state = self.read_state();
        let mut bound: Vec<&Arc<ApiKey>> = state
            .keys
            .values()
            .filter(|k| k.client_certificate_sha256.as_ref() == Some(fingerprint))
            .collect();
        bound.sort_by_key(|k| (k.revoked_at_ms.is_none(), k.created_at_ms));
        bound.last().map(|k| Arc::clone(k))
    }

    fn key_of(&self, app: &AppName, id: &KeyId) -> Result<Arc<ApiKey>, Problem> {
        self.key(id).filter(|k| k.app == *app).ok_or_else(|| {
            Problem::new(
                ProblemKind::NotFound,
                format!("key `{id}` of app `{app}` does not exist"),
            )
        })
    }

    pub(crate) fn get_key(&self, app: &AppName, id: &KeyId) -> Result<Arc<ApiKey>, Problem> {
        self.key_of(app, id)
    }

    /// Revokes a key now (again: no change). Returns the key as stored.
    pub(crate) async fn revoke_key(
        &self,
        app: &AppName,
        id: &KeyId,
    ) -> Result<Arc<ApiKey>, Problem> {
        let _change = self.changes.lock().await;
        let key = self.key_of(app, id)?;
        if key.revoked_at_ms.is_some() {
            return Ok(key);
        }
        let mut revoked = (*key).clone();
        revoked.revoked_at_ms = Some(self.clock.now_ms());
        self.directory.put_key(&revoked).await?;
        let revoked = Arc::new(revoked);
        self.write_state()
            .keys
            .insert(revoked.id.clone(), Arc::clone(&revoked));
        Ok(revoked)
    }

    /// A new key with the old one's name and scopes; the old one stays valid until
    /// `old_valid_until_ms` (never later than it would have anyway).
    pub(crate) async fn rotate_key(
        &self,
        app: &AppName,
        id: &KeyId,
        old_valid_until_ms: i64,
    ) -> Result<(Arc<ApiKey>, NewSecret), Problem> {
        let _change = self.changes.lock().await;
        let old = self.key_of(app, id)?;
        let now = self.clock.now_ms();
        if old.status(now) != opal_core::tenancy::KeyStatus::Active {
            return Err(Problem::new(
                ProblemKind::Conflict,
                format!(
                    "key `{id}` is {}: only an active key can be rotated",
                    old.status(now).as_str()
                ),
            ));
        }
        let spec = KeySpec {
            name: old.name.clone(),
            scopes: old.scopes.clone(),
            expires_at_ms: old.expires_at_ms,
            client_certificate_sha256: old.client_certificate_sha256,
        };
        let (new, secret) = self.create_key_locked(app, spec, Some(&old.id)).await?;
        let mut retiring = (*old).clone();
        // The certificate now stands for the new key; the old one keeps only its secret.
        retiring.client_certificate_sha256 = None;
        retiring.expires_at_ms = Some(
            old.expires_at_ms
                .map_or(old_valid_until_ms, |at| at.min(old_valid_until_ms)),
        );
        self.directory.put_key(&retiring).await?;
        self.write_state()
            .keys
            .insert(retiring.id.clone(), Arc::new(retiring));
        Ok((new, secret))
    }

    pub(crate) async fn put_grant(
        &self,
        topic: &TopicName,
        app: &AppName,
        rights: Vec<Right>,
    ) -> Result<Grant, Problem> {
        let _change = self.changes.lock().await;
        if self.app(app).is_none() {
            return Err(BrokerError::AppNotFound(app.to_string()).into());
        }
        let grant = Grant {
            topic: topic.clone(),
            app: app.clone(),
            rights,
            created_at_ms: self.clock.now_ms(),
        };
        self.directory.put_grant(&grant).await?;
        self.write_state()
            .grants
            .insert((topic.clone(), app.clone()), grant.clone());
        Ok(grant)
    }

    /// `false` if there was no such grant.
    pub(crate) async fn delete_grant(
        &self,
        topic: &TopicName,
        app: &AppName,
    ) -> Result<bool, Problem> {
        let _change = self.changes.lock().await;
        let existed = self.directory.delete_grant(topic, app).await?;
        self.write_state()
            .grants
            .remove(&(topic.clone(), app.clone()));
        Ok(existed)
    }

    /// A topic is gone: grants on it go too (a new topic of the same name starts ungranted).
    pub(crate) async fn topic_deleted(&self, topic: &TopicName) -> Result<(), Problem> {
        for grant in self.grants_on(topic) {
            self.delete_grant(topic, &grant.app).await?;
        }
        Ok(())
    }

    pub(crate) async fn audit(&self, entry: AuditEntry) {
        // The change itself succeeded; a trail that cannot be written is an operator's problem,
        // not the client's.
        if let Err(err) = self.directory.append_audit(&entry).await {
            tracing::error!(error = %err, action = %entry.action, resource = %entry.resource, "could not write the audit trail");
        }
    }

    pub(crate) async fn read_audit(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<opal_core::tenancy::AuditRecord>, Problem> {
        Ok(self.directory.read_audit(after, limit).await?)
    }

    /// What an app uses now, against its quotas.
    pub(crate) async fn usage(&self, app: &AppName) -> Result<Usage, Problem> {
        let topics = self.broker.list_topics(Some(app), None, usize::MAX).await?;
        let subscriptions = self
            .broker
            .list_subscriptions(Some(app), None, usize::MAX)
            .await?;
        let stored_bytes = self
            .quotas
            .stored_bytes(self.broker.as_ref(), app, true)
            .await?;
        Ok(Usage {
            topics: topics.len() as u64,
            subscriptions: subscriptions.len() as u64,
            stored_bytes,
            open_streams: self.quotas.open_streams(app),
        })
    }
}
