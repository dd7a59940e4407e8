//! Generated gRPC services and versioned integration events, compiled from proto/, and the
//! channel the services call each other over.

pub mod channel;

pub mod hearing {
    pub mod v1 {
        tonic::include_proto!("agora.hearing.v1");
    }
}

pub mod response {
    pub mod v1 {
        tonic::include_proto!("agora.response.v1");
    }
}

pub mod records {
    pub mod v1 {
        tonic::include_proto!("agora.records.v1");
    }
}

pub mod notification {
    pub mod v1 {
        tonic::include_proto!("agora.notification.v1");
    }
}

pub mod identity {
    pub mod v1 {
        tonic::include_proto!("agora.identity.v1");

        /// The most user ids one `GetContacts` call may ask for.
        pub const CONTACTS_AT_ONCE: usize = 1000;
    }
}

pub mod feed {
    pub mod v1 {
        tonic::include_proto!("agora.feed.v1");
    }
}

/// The hearing's state every hearing integration event carries as its field 1: any of them
/// decodes as a message that has nothing else. `event_type` names the event in an error.
pub fn hearing_state(event_type: &str, data: &[u8]) -> Result<hearing::v1::HearingState, String> {
    <hearing::v1::HearingCreated as prost::Message>::decode(data)
        .map_err(|e| format!("{event_type} is not a hearing event: {e}"))?
        .hearing
        .ok_or_else(|| format!("{event_type} carries no hearing state"))
}

/// A hearing status on the wire by the name the hearing's lifecycle gives it
/// (`AwaitingStartDate`), `Unknown` for a value this version does not know.
pub fn hearing_status_name(status: i32) -> &'static str {
    use hearing::v1::HearingStatus as S;
    match S::try_from(status) {
        Ok(S::Created) => "Created",
        Ok(S::Draft) => "Draft",
        Ok(S::AwaitingStartDate) => "AwaitingStartDate",
        Ok(S::Active) => "Active",
        Ok(S::AwaitingConclusion) => "AwaitingConclusion",
        Ok(S::Concluded) => "Concluded",
        Ok(S::Deleted) => "Deleted",
        _ => "Unknown",
    }
}

/// The response rules a hearing type sets, as the contract carries them.
impl From<hearing::v1::ResponseRules> for agora_files::ResponseRules {
    fn from(r: hearing::v1::ResponseRules) -> Self {
        Self {
            text_optional: r.text_optional,
            max_text_chars: r.max_text_chars,
            files: agora_files::FileRules {
                max_files: r.max_files,
                max_bytes: r.max_file_bytes,
                allowed_types: r.allowed_types,
            },
        }
    }
}

impl From<&agora_files::ResponseRules> for hearing::v1::ResponseRules {
    fn from(rules: &agora_files::ResponseRules) -> Self {
        Self {
            text_optional: rules.text_optional,
            max_text_chars: rules.max_text_chars,
            max_files: rules.files.max_files,
            max_file_bytes: rules.files.max_bytes,
            allowed_types: rules.files.allowed_types.clone(),
        }
    }
}

/// The encoded descriptors of every proto file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("agora_descriptor");
