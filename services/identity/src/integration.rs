//! The identity service's integration events (proto/agora/identity/v1/events.proto): only
//! the erasure of a person, so that every subscriber forgets them. Logins, roles and profiles
//! stay internal.

use agora_eventstore::jetstream::IntegrationEvent;
use agora_eventstore::relay::IntegrationMapper;
use agora_eventstore::{RecordedEvent, Store};
use agora_proto::identity::v1 as pb;
use bytes::Bytes;
use cqrs_es::Aggregate;
use prost::Message;

use crate::domain::{USER_AGGREGATE, User, UserEvent};

pub const SOURCE: &str = "agora/identity";

pub struct IdentityIntegration {
    store: Store,
}

impl IdentityIntegration {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// The references the user was known by just before `event`.
    async fn references_before(&self, event: &RecordedEvent) -> Result<Vec<String>, String> {
        let earlier =
            self.store.read_stream(USER_AGGREGATE, &event.aggregate_id, 0).await.map_err(|e| e.to_string())?;
        let mut user = User::default();
        for earlier in earlier.into_iter().take_while(|e| e.sequence < event.sequence) {
            user.apply(earlier.decode::<UserEvent>().map_err(|e| e.to_string())?);
        }
        Ok(user.profile.references)
    }
}

#[async_trait::async_trait]
impl IntegrationMapper for IdentityIntegration {
    async fn map(&self, event: &RecordedEvent) -> Result<Option<IntegrationEvent>, String> {
        if event.aggregate_type != USER_AGGREGATE || event.event_type != "UserErased" {
            return Ok(None);
        }
        let UserEvent::UserErased { at, .. } = event.decode::<UserEvent>().map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let message = pb::UserErased {
            user_id: event.aggregate_id.clone(),
            erased_at: at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            references: self.references_before(event).await?,
        };
        Ok(Some(IntegrationEvent::from_recorded(
            event,
            "dk.agora.identity.v1.UserErased".into(),
            SOURCE,
            format!("identity.v1.user_erased.{}", event.aggregate_id),
            Bytes::from(message.encode_to_vec()),
        )))
    }

    fn aggregates(&self) -> Option<Vec<&'static str>> {
        Some(vec![USER_AGGREGATE])
    }
}
