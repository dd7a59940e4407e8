//! The services the gateway asks, each at its own gRPC address (the same one when they run in
//! one process). Channels connect lazily, so the gateway starts before the services do and
//! reconnects when one is restarted.

use agora_proto::feed::v1::event_feed_client::EventFeedClient;
use agora_proto::hearing::v1::hearing_service_client::HearingServiceClient;
use agora_proto::hearing::v1::reference_data_service_client::ReferenceDataServiceClient;
use agora_proto::identity::v1::identity_service_client::IdentityServiceClient;
use agora_proto::notification::v1::notification_service_client::NotificationServiceClient;
use agora_proto::records::v1::records_service_client::RecordsServiceClient;
use agora_proto::response::v1::response_service_client::ResponseServiceClient;
use tonic::transport::Channel;

/// Where each service listens (`http://host:port`).
#[derive(Clone, Debug)]
pub struct Endpoints {
    pub hearing: String,
    pub response: String,
    pub identity: String,
    pub records: String,
    pub notification: String,
}

impl Endpoints {
    /// Every service at one address: the embedded mode, or a process that runs them all.
    pub fn all_at(url: &str) -> Self {
        Self {
            hearing: url.into(),
            response: url.into(),
            identity: url.into(),
            records: url.into(),
            notification: url.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{setting}: '{url}' is not a gRPC address: {reason}")]
pub struct BadEndpoint {
    setting: &'static str,
    url: String,
    reason: String,
}

#[derive(Clone)]
pub struct Services {
    /// The integration events, read with the service secret; `None` without one.
    pub feed: Option<(EventFeedClient<Channel>, agora_auth::grpc::ServiceCredential)>,
    pub hearing: HearingServiceClient<Channel>,
    pub reference: ReferenceDataServiceClient<Channel>,
    pub response: ResponseServiceClient<Channel>,
    pub identity: IdentityServiceClient<Channel>,
    pub records: RecordsServiceClient<Channel>,
    pub notification: NotificationServiceClient<Channel>,
}

impl Services {
    /// Clients of the services at `endpoints`, connecting when first used. With the
    /// deployment's service secret the event feed is read too, from the hearing service over
    /// the same channel.
    pub fn connect_lazy(endpoints: &Endpoints, feed_secret: Option<&str>) -> Result<Self, BadEndpoint> {
        let hearing = channel("AGORA_HEARING_URL", &endpoints.hearing)?;
        let feed =
            match feed_secret {
                Some(secret) => {
                    let credential = agora_auth::grpc::ServiceCredential::new(secret).map_err(|reason| {
                        BadEndpoint { setting: "AGORA_SERVICE_SECRET", url: endpoints.hearing.clone(), reason }
                    })?;
                    Some((EventFeedClient::new(hearing.clone()), credential))
                }
                None => None,
            };
        Ok(Self {
            feed,
            reference: ReferenceDataServiceClient::new(hearing.clone()),
            hearing: HearingServiceClient::new(hearing)
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024),
            response: ResponseServiceClient::new(channel("AGORA_RESPONSE_URL", &endpoints.response)?)
                .max_decoding_message_size(128 * 1024 * 1024)
                .max_encoding_message_size(128 * 1024 * 1024),
            identity: IdentityServiceClient::new(channel("AGORA_IDENTITY_URL", &endpoints.identity)?),
            records: RecordsServiceClient::new(channel("AGORA_RECORDS_URL", &endpoints.records)?),
            notification: NotificationServiceClient::new(channel("AGORA_NOTIFICATION_URL", &endpoints.notification)?),
        })
    }
}

fn channel(setting: &'static str, url: &str) -> Result<Channel, BadEndpoint> {
    let timeouts = agora_proto::channel::Timeouts {
        connect: std::time::Duration::from_secs(5),
        // Long enough for a feed read that waits for news.
        request: std::time::Duration::from_secs(60),
    };
    agora_proto::channel::connect_lazy(url, timeouts).map_err(|reason| BadEndpoint { setting, url: url.into(), reason })
}
