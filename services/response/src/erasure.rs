//! What the response service does when a person is erased (the identity service's `UserErased`
//! integration event): the files they attached are deleted, and keys remembered from the vault
//! are forgotten. Their texts need nothing: their keys are gone, so every copy shows as erased.

use agora_eventstore::jetstream::{IntegrationEvent, IntegrationHandler};
use agora_eventstore::{DbTx, on_tx};
use agora_proto::identity::v1 as pb;
use prost::Message;

use crate::app::ResponseApp;

pub struct ErasureHandler {
    pub app: ResponseApp,
}

#[async_trait::async_trait]
impl IntegrationHandler for ErasureHandler {
    fn name(&self) -> &str {
        "response-erasures"
    }

    fn filter(&self) -> &str {
        "identity.v1.>"
    }

    async fn handle(&self, tx: &mut DbTx, event: &IntegrationEvent) -> Result<(), String> {
        if event.event_type != "dk.agora.identity.v1.UserErased" {
            return Ok(());
        }
        let erased = pb::UserErased::decode(event.data.clone()).map_err(|e| format!("not a UserErased: {e}"))?;
        self.app.keys().forget_remembered().await;
        let author = format!("user:{}", erased.user_id);
        // Read through the handler's transaction: on SQLite it holds the one writer connection.
        let states: Vec<(String,)> = on_tx!(tx, conn => {
            sqlx::query_as("SELECT state FROM response_list WHERE author = $1")
                .bind(&author)
                .fetch_all(&mut **conn)
                .await
                .map_err(|e| e.to_string())?
        });
        let mut deleted = 0;
        for (state,) in states {
            let response: crate::domain::Response = serde_json::from_str(&state).map_err(|e| e.to_string())?;
            // A letter the owner registered is its writer's, not the caseworker's.
            if response.registered_by_owner {
                continue;
            }
            deleted += self.app.intake.files().delete(&response.attachments).await?;
        }
        tracing::info!(user = %erased.user_id, attachments = deleted, "an erased respondent's files are deleted");
        Ok(())
    }
}
