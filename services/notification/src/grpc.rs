//! The gRPC adapter of the notification service (proto/agora/notification/v1): templates the
//! owner of a hearing (or an administrator) edits, previews and sends to themself as a test.

use std::sync::Arc;

use agora_auth::{Principal, TokenVerifier};
use agora_eventstore::{Store, on_reader};
use agora_proto::notification::v1 as pb;
use agora_proto::notification::v1::notification_service_server::{NotificationService, NotificationServiceServer};
use tonic::{Request, Response, Status};

use crate::outbox::{EmailChannel, Portal};
use crate::overrides::{self, OverrideError};
use crate::recipients::Directory;
use crate::smtp::Email;
use crate::templates::{Kind, Language, Template, sample_values};

pub struct NotificationGrpc {
    pub store: Store,
    pub verifier: Arc<TokenVerifier>,
    /// Seals a subscriber's e-mail address.
    pub keys: Arc<dyn agora_vault::PersonKeys>,
    pub directory: Arc<dyn Directory>,
    pub email: Arc<dyn EmailChannel>,
    pub portal: Portal,
    pub message_domain: String,
}

pub fn service(grpc: NotificationGrpc) -> NotificationServiceServer<NotificationGrpc> {
    NotificationServiceServer::new(grpc)
}

/// A template's address, checked.
struct Ref {
    hearing: String,
    kind: Kind,
    language: Language,
}

fn parse(r: Option<pb::TemplateRef>) -> Result<Ref, Status> {
    let r = r.ok_or_else(|| Status::invalid_argument("ref: which template (hearing_id, kind, language)"))?;
    let kind = Kind::parse(&r.kind).ok_or_else(|| {
        let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        Status::invalid_argument(format!("kind: '{}' is not one of {}", r.kind, kinds.join(", ")))
    })?;
    let language = Language::parse(&r.language)
        .ok_or_else(|| Status::invalid_argument(format!("language: '{}' is not da or en", r.language)))?;
    if !r.hearing_id.is_empty() && uuid::Uuid::parse_str(&r.hearing_id).is_err() {
        return Err(Status::invalid_argument(format!("hearing_id: '{}' is not an id", r.hearing_id)));
    }
    Ok(Ref { hearing: r.hearing_id, kind, language })
}

fn storage(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "notification storage");
    Status::unavailable("the notification service cannot answer now; retry")
}

fn template_to_pb(r: &Ref, template: Template, source: overrides::Source) -> pb::Template {
    pb::Template {
        r#ref: Some(pb::TemplateRef {
            hearing_id: r.hearing.clone(),
            kind: r.kind.as_str().into(),
            language: r.language.code().into(),
        }),
        subject: template.subject,
        text: template.text,
        html: template.html,
        source: source.as_str().into(),
        placeholders: r.kind.placeholders().into_iter().map(String::from).collect(),
    }
}

impl NotificationGrpc {
    /// A hearing's templates are its owner's and administrators'; the municipality's are
    /// administrators'.
    async fn may_edit<T>(&self, request: &Request<T>, r: &Ref) -> Result<Principal, Status> {
        let principal = agora_auth::grpc::require_principal(&self.verifier, request.metadata())?;
        if principal.is_administrator() {
            return Ok(principal);
        }
        if r.hearing.is_empty() {
            return Err(Status::permission_denied("only administrators may change the municipality's templates"));
        }
        let team: Option<(String,)> = on_reader!(self.store.backend(), pool => {
            sqlx::query_as("SELECT team FROM notification_hearings WHERE hearing_id = $1")
                .bind(&r.hearing)
                .fetch_optional(pool)
                .await
                .map_err(storage)?
        });
        let owner = team.and_then(|(team,)| team.split(',').next().map(String::from));
        match owner {
            Some(owner) if owner == principal.user_id.to_string() => Ok(principal),
            Some(_) => {
                Err(Status::permission_denied("only the hearing's owner or an administrator may change its templates"))
            }
            None => Err(Status::not_found(format!("no hearing {} is known to the notification service", r.hearing))),
        }
    }

    async fn preview(&self, r: &Ref, recipient_name: Option<String>) -> Result<crate::templates::Rendered, Status> {
        let (template, _) =
            overrides::effective(&self.store, Some(&r.hearing), r.kind, r.language).await.map_err(storage)?;
        let mut values = sample_values(r.kind);
        values.insert("portal_name", self.portal.name.clone());
        values.insert("portal_url", self.portal.url.clone());
        if let Some(name) = recipient_name {
            values.insert("recipient_name", name);
        }
        template.render(&values).map_err(|e| Status::failed_precondition(format!("the template cannot be filled: {e}")))
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn subscription_to_pb(s: crate::subscriptions::Subscription) -> pb::Subscription {
    pb::Subscription {
        subscription_id: s.subscription_id,
        topic: s.topic.topic,
        value: s.topic.value,
        status: s.status,
    }
}

fn subscribe_status(e: crate::subscriptions::SubscribeError) -> Status {
    use crate::subscriptions::SubscribeError as E;
    match e {
        E::Invalid(m) => Status::invalid_argument(m),
        E::NotAllowed(m) => Status::permission_denied(m),
        E::NotFound => Status::not_found("no such subscription"),
        other => storage(other),
    }
}

#[tonic::async_trait]
impl NotificationService for NotificationGrpc {
    async fn get_template(&self, request: Request<pb::TemplateRef>) -> Reply<pb::Template> {
        let r = parse(Some(request.get_ref().clone()))?;
        self.may_edit(&request, &r).await?;
        let (template, source) =
            overrides::effective(&self.store, Some(&r.hearing), r.kind, r.language).await.map_err(storage)?;
        Ok(Response::new(template_to_pb(&r, template, source)))
    }

    async fn set_template(&self, request: Request<pb::SetTemplateRequest>) -> Reply<pb::Template> {
        let r = parse(request.get_ref().r#ref.clone())?;
        let principal = self.may_edit(&request, &r).await?;
        let message = request.into_inner();
        let template = Template { subject: message.subject, text: message.text, html: message.html };
        let actor = format!("user:{}", principal.user_id);
        match overrides::save(&self.store, &r.hearing, r.kind, r.language, Some(&template), &actor).await {
            Ok(()) => {}
            Err(OverrideError::Invalid(e)) => return Err(Status::invalid_argument(e.to_string())),
            Err(OverrideError::Store(e)) => return Err(storage(e)),
        }
        let (template, source) =
            overrides::effective(&self.store, Some(&r.hearing), r.kind, r.language).await.map_err(storage)?;
        Ok(Response::new(template_to_pb(&r, template, source)))
    }

    async fn reset_template(&self, request: Request<pb::TemplateRef>) -> Reply<pb::Template> {
        let r = parse(Some(request.get_ref().clone()))?;
        let principal = self.may_edit(&request, &r).await?;
        let actor = format!("user:{}", principal.user_id);
        overrides::save(&self.store, &r.hearing, r.kind, r.language, None, &actor).await.map_err(storage)?;
        let (template, source) =
            overrides::effective(&self.store, Some(&r.hearing), r.kind, r.language).await.map_err(storage)?;
        Ok(Response::new(template_to_pb(&r, template, source)))
    }

    async fn preview_template(&self, request: Request<pb::TemplateRef>) -> Reply<pb::Preview> {
        let r = parse(Some(request.get_ref().clone()))?;
        self.may_edit(&request, &r).await?;
        let rendered = self.preview(&r, None).await?;
        Ok(Response::new(pb::Preview { subject: rendered.subject, text: rendered.text, html: rendered.html }))
    }

    async fn send_test_message(&self, request: Request<pb::TemplateRef>) -> Reply<pb::TestSent> {
        let r = parse(Some(request.get_ref().clone()))?;
        let principal = self.may_edit(&request, &r).await?;
        let contact = self
            .directory
            .contact(&principal.user_id.to_string())
            .await
            .map_err(storage)?
            .and_then(|c| c.email.map(|email| (email, c.name)))
            .ok_or_else(|| Status::failed_precondition("you have no e-mail address to send the test to"))?;
        let content = self.preview(&r, Some(contact.1)).await?;
        let message_id = crate::message::message_id(uuid::Uuid::new_v4(), "test", r.kind, &self.message_domain);
        let email = Email {
            message_id: message_id.clone(),
            to: contact.0.clone(),
            language: r.language,
            content,
            unsubscribe_url: None,
        };
        self.email
            .send(&email)
            .await
            .map_err(|e| Status::unavailable(format!("the test message could not be sent: {e}")))?;
        Ok(Response::new(pb::TestSent { to: contact.0, message_id }))
    }

    async fn subscribe(&self, request: Request<pb::SubscribeRequest>) -> Reply<pb::Subscription> {
        // Anyone may subscribe: with an account, or with an e-mail address to confirm.
        let principal = agora_auth::grpc::principal_from_metadata(&self.verifier, request.metadata())?;
        let r = request.into_inner();
        let topic = crate::subscriptions::Topic::new(&r.topic, &r.value).map_err(Status::invalid_argument)?;
        let language = if r.language.is_empty() {
            Language::Danish
        } else {
            Language::parse(&r.language)
                .ok_or_else(|| Status::invalid_argument(format!("language: '{}' is not da or en", r.language)))?
        };
        let links =
            crate::plan::Links { portal_url: self.portal.url.clone(), message_domain: self.message_domain.clone() };
        let subscription = crate::subscriptions::subscribe(
            &self.store,
            self.keys.as_ref(),
            &self.portal.unsubscribe,
            &links,
            principal.map(|p| p.user_id),
            topic,
            Some(r.email.as_str()),
            language,
        )
        .await
        .map_err(subscribe_status)?;
        Ok(Response::new(subscription_to_pb(subscription)))
    }

    async fn confirm_subscription(&self, request: Request<pb::ConfirmRequest>) -> Reply<pb::Subscription> {
        let confirmed = crate::subscriptions::confirm(&self.store, &self.portal.unsubscribe, &request.get_ref().token)
            .await
            .map_err(subscribe_status)?;
        Ok(Response::new(subscription_to_pb(confirmed)))
    }

    async fn my_subscriptions(&self, request: Request<pb::MySubscriptionsRequest>) -> Reply<pb::SubscriptionList> {
        let principal = agora_auth::grpc::require_principal(&self.verifier, request.metadata())?;
        let mine =
            crate::subscriptions::mine(&self.store, &format!("user:{}", principal.user_id)).await.map_err(storage)?;
        Ok(Response::new(pb::SubscriptionList { subscriptions: mine.into_iter().map(subscription_to_pb).collect() }))
    }

    async fn end_subscription(&self, request: Request<pb::SubscriptionRef>) -> Reply<pb::Subscription> {
        let principal = agora_auth::grpc::require_principal(&self.verifier, request.metadata())?;
        let owner = format!("user:{}", principal.user_id);
        let ended = crate::subscriptions::end(&self.store, &request.get_ref().subscription_id, Some(&owner))
            .await
            .map_err(subscribe_status)?;
        Ok(Response::new(subscription_to_pb(ended)))
    }

    async fn register_webhook(&self, request: Request<pb::RegisterWebhookRequest>) -> Reply<pb::Webhook> {
        let principal = administrator(&self.verifier, &request)?;
        let r = request.get_ref();
        let actor = format!("user:{}", principal.user_id);
        let made = crate::webhooks::register(&self.store, &r.event_type, &r.url, &r.secret, &actor, chrono::Utc::now())
            .await
            .map_err(webhook_status)?;
        Ok(Response::new(webhook_to_pb(made)))
    }

    async fn list_webhooks(&self, request: Request<pb::ListWebhooksRequest>) -> Reply<pb::WebhookList> {
        administrator(&self.verifier, &request)?;
        let webhooks = crate::webhooks::list(&self.store).await.map_err(storage)?;
        Ok(Response::new(pb::WebhookList { webhooks: webhooks.into_iter().map(webhook_to_pb).collect() }))
    }

    async fn remove_webhook(&self, request: Request<pb::WebhookRef>) -> Reply<pb::Webhook> {
        let principal = administrator(&self.verifier, &request)?;
        let actor = format!("user:{}", principal.user_id);
        let removed = crate::webhooks::remove(&self.store, &request.get_ref().webhook_id, &actor)
            .await
            .map_err(webhook_status)?;
        Ok(Response::new(webhook_to_pb(removed)))
    }

    async fn list_webhook_deliveries(&self, request: Request<pb::WebhookRef>) -> Reply<pb::WebhookDeliveryList> {
        administrator(&self.verifier, &request)?;
        let steps = crate::webhooks::deliveries(&self.store, &request.get_ref().webhook_id).await.map_err(storage)?;
        let deliveries = steps
            .into_iter()
            .map(|step| pb::WebhookDelivery {
                event_id: step.action.event_id,
                event_type: step.action.event_type,
                state: step.state.as_str().to_string(),
                attempts: step.attempts as i32,
                last_error: step.last_error.unwrap_or_default(),
                next_attempt_at: step.due_at.map(|at| at.to_rfc3339()).unwrap_or_default(),
                result: step.reference.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::WebhookDeliveryList { deliveries }))
    }
}

fn administrator<T>(verifier: &TokenVerifier, request: &Request<T>) -> Result<Principal, Status> {
    let principal = agora_auth::grpc::require_principal(verifier, request.metadata())?;
    if principal.is_administrator() {
        Ok(principal)
    } else {
        Err(Status::permission_denied("only administrators manage webhooks"))
    }
}

fn webhook_status(error: crate::webhooks::WebhookError) -> Status {
    use crate::webhooks::WebhookError as E;
    match error {
        E::Invalid(message) => Status::invalid_argument(message),
        E::NotFound(_) => Status::not_found(error.to_string()),
        E::Store(e) => storage(e),
    }
}

fn webhook_to_pb(w: crate::webhooks::Webhook) -> pb::Webhook {
    pb::Webhook {
        webhook_id: w.webhook_id,
        event_type: w.event_type,
        url: w.url,
        status: w.status,
        created_at: w.created_at,
    }
}
