//! Reference data administered by administrators: hearing types (with their fields and
//! template), subject areas, city areas, the KLE tree and field text snippets.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use super::fields::{HearingType, Violation};

/// One KLE number and its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KleEntry {
    pub number: String,
    pub title: String,
    /// Names ending in "[udgår]" are retired: kept for old hearings, not offered for new ones.
    #[serde(default)]
    pub retired: bool,
}

/// One item of reference data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReferenceItem {
    HearingType(HearingType),
    SubjectArea {
        id: String,
        name: String,
    },
    CityArea {
        id: String,
        name: String,
    },
    /// A ready-made text a caseworker can insert into a field.
    Snippet {
        id: String,
        field: String,
        title: String,
        text: String,
    },
    /// A standing list of invitees (e.g. the local councils), invited together as `group:<id>`.
    InvitationGroup {
        id: String,
        name: String,
        members: Vec<super::Invitee>,
    },
}

impl ReferenceItem {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::HearingType(_) => "hearing_type",
            Self::SubjectArea { .. } => "subject_area",
            Self::CityArea { .. } => "city_area",
            Self::Snippet { .. } => "snippet",
            Self::InvitationGroup { .. } => "invitation_group",
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Self::HearingType(t) => &t.id,
            Self::SubjectArea { id, .. }
            | Self::CityArea { id, .. }
            | Self::Snippet { id, .. }
            | Self::InvitationGroup { id, .. } => id,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Self::HearingType(t) => &t.name,
            Self::SubjectArea { name, .. } | Self::CityArea { name, .. } | Self::InvitationGroup { name, .. } => name,
            Self::Snippet { title, .. } => title,
        }
    }

    /// The aggregate id the item lives under.
    pub fn aggregate_id(&self) -> String {
        aggregate_id(self.kind(), self.id())
    }

    pub fn validate(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        let id = self.id();
        if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            out.push(Violation::new("id", "id skal være 1-64 tegn: bogstaver a-z, tal, - og _"));
        }
        if self.name().trim().is_empty() {
            out.push(Violation::new("name", "navn skal udfyldes"));
        }
        if let Self::InvitationGroup { members, .. } = self {
            if members.is_empty() {
                out.push(Violation::new("members", "en invitationsgruppe skal have mindst ét medlem"));
            }
            if members.iter().any(|m| m.kind == super::InviteeKind::Group) {
                out.push(Violation::new("members", "en gruppe kan ikke indeholde andre grupper"));
            }
        }
        if let Self::HearingType(t) = self {
            if t.rule("title").is_none() {
                out.push(Violation::new("fields", "en høringstype skal have feltet 'title'"));
            }
            let mut keys: Vec<&str> = t.fields.iter().map(|f| f.key.as_str()).collect();
            keys.sort_unstable();
            if keys.windows(2).any(|w| w[0] == w[1]) {
                out.push(Violation::new("fields", "to felter har samme nøgle"));
            }
            out.extend(super::fields::response_rule_violations(&t.responses));
            for key in t.template.keys() {
                if t.rule(key).is_none() {
                    out.push(Violation::new("template", format!("skabelonen udfylder '{key}', som typen ikke har")));
                }
            }
        }
        out
    }
}

pub fn aggregate_id(kind: &str, id: &str) -> String {
    format!("{kind}:{id}")
}

pub const KLE_AGGREGATE_ID: &str = "kle:tree";

#[derive(Debug, Clone)]
pub enum ReferenceCommand {
    Define(ReferenceItem),
    Retire,
    LoadKle(Vec<KleEntry>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ReferenceEvent {
    ReferenceDefined { item: ReferenceItem },
    ReferenceRetired,
    KleTreeLoaded { entries: Vec<KleEntry> },
}

impl DomainEvent for ReferenceEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ReferenceDefined { .. } => "ReferenceDefined",
            Self::ReferenceRetired => "ReferenceRetired",
            Self::KleTreeLoaded { .. } => "KleTreeLoaded",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference data: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Violation>),
    #[error("no such reference data")]
    NotFound,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Reference {
    pub item: Option<ReferenceItem>,
    pub retired: bool,
    pub kle: Vec<KleEntry>,
}

impl Reference {
    pub fn decide(&self, command: ReferenceCommand) -> Result<Vec<ReferenceEvent>, ReferenceError> {
        match command {
            ReferenceCommand::Define(item) => {
                let violations = item.validate();
                if !violations.is_empty() {
                    return Err(ReferenceError::Invalid(violations));
                }
                if self.item.as_ref() == Some(&item) && !self.retired {
                    return Ok(Vec::new());
                }
                Ok(vec![ReferenceEvent::ReferenceDefined { item }])
            }
            ReferenceCommand::Retire => match (&self.item, self.retired) {
                (None, _) => Err(ReferenceError::NotFound),
                (Some(_), true) => Ok(Vec::new()),
                (Some(_), false) => Ok(vec![ReferenceEvent::ReferenceRetired]),
            },
            ReferenceCommand::LoadKle(entries) => {
                let mut violations = Vec::new();
                for entry in &entries {
                    let parts: Vec<&str> = entry.number.split('.').collect();
                    if parts.is_empty()
                        || parts.len() > 3
                        || parts.iter().any(|p| p.len() != 2 || !p.chars().all(|c| c.is_ascii_digit()))
                    {
                        violations.push(Violation::new(
                            "kle",
                            format!("'{}' er ikke et KLE-nummer (fx 02.34.02)", entry.number),
                        ));
                    }
                }
                if entries.is_empty() {
                    violations.push(Violation::new("kle", "KLE-træet er tomt"));
                }
                if !violations.is_empty() {
                    return Err(ReferenceError::Invalid(violations));
                }
                if self.kle == entries {
                    return Ok(Vec::new());
                }
                Ok(vec![ReferenceEvent::KleTreeLoaded { entries }])
            }
        }
    }
}

impl Aggregate for Reference {
    const TYPE: &'static str = "reference";
    type Command = ReferenceCommand;
    type Event = ReferenceEvent;
    type Error = ReferenceError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ReferenceEvent::ReferenceDefined { item } => {
                self.item = Some(item);
                self.retired = false;
            }
            ReferenceEvent::ReferenceRetired => self.retired = true,
            ReferenceEvent::KleTreeLoaded { entries } => self.kle = entries,
        }
    }
}

/// Reads the KLE tree in the shape OS2agora publishes it (main groups → groups → topics).
pub fn parse_kle_hierarchy(json: &str) -> Result<Vec<KleEntry>, String> {
    #[derive(Deserialize)]
    struct Topic {
        #[serde(rename = "Number")]
        number: String,
        #[serde(rename = "Name")]
        name: String,
    }
    #[derive(Deserialize)]
    struct Group {
        #[serde(rename = "Number")]
        number: String,
        #[serde(rename = "Name")]
        name: String,
        #[serde(rename = "Topics", default)]
        topics: Vec<Topic>,
    }
    #[derive(Deserialize)]
    struct MainGroup {
        #[serde(rename = "Number")]
        number: String,
        #[serde(rename = "Title")]
        title: String,
        #[serde(rename = "Groups", default)]
        groups: Vec<Group>,
    }
    let main_groups: Vec<MainGroup> =
        serde_json::from_str(json).map_err(|e| format!("KLE-filen kan ikke læses: {e}"))?;
    let entry = |number: String, title: String| {
        let retired = title.trim_end().ends_with("[udgår]");
        KleEntry { number, title: title.trim().to_string(), retired }
    };
    let mut entries = Vec::new();
    for main in main_groups {
        entries.push(entry(main.number, main.title));
        for group in main.groups {
            entries.push(entry(group.number, group.name));
            for topic in group.topics {
                entries.push(entry(topic.number, topic.name));
            }
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_kle_tree_loads() {
        let json = include_str!("../../testdata/kle.json");
        let entries = parse_kle_hierarchy(json).expect("parses");
        assert_eq!(entries.iter().filter(|e| e.number.len() == 2).count(), 36);
        assert_eq!(entries.iter().filter(|e| e.number.len() == 5).count(), 486);
        assert_eq!(entries.iter().filter(|e| e.number.len() == 8).count(), 2342);
        assert!(entries.iter().any(|e| e.title.contains('æ')), "escaped Danish letters are decoded");
        assert!(entries.iter().any(|e| e.retired));
        let events = Reference::default().decide(ReferenceCommand::LoadKle(entries)).expect("valid tree");
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn a_malformed_kle_number_is_named() {
        let bad = vec![KleEntry { number: "2.34".into(), title: "x".into(), retired: false }];
        let Err(ReferenceError::Invalid(v)) = Reference::default().decide(ReferenceCommand::LoadKle(bad)) else {
            panic!("invalid")
        };
        assert!(v[0].message.contains("'2.34'"));
    }

    #[test]
    fn a_hearing_type_needs_a_title_and_a_consistent_template() {
        let t = HearingType {
            id: "x".into(),
            name: "X".into(),
            internal: false,
            fields: vec![],
            template: [("body".to_string(), "t".to_string())].into(),
            responses: Default::default(),
        };
        let Err(ReferenceError::Invalid(v)) =
            Reference::default().decide(ReferenceCommand::Define(ReferenceItem::HearingType(t)))
        else {
            panic!("invalid")
        };
        assert_eq!(v.len(), 2, "{v:?}");
    }

    #[test]
    fn response_rules_are_checked_when_a_hearing_type_is_defined() {
        let mut responses = super::super::fields::ResponseRules { max_text_chars: 0, ..Default::default() };
        responses.files.allowed_types.push("application/x-msdownload".into());
        let t = HearingType {
            id: "x".into(),
            name: "X".into(),
            internal: false,
            fields: HearingType::standard_fields(),
            template: Default::default(),
            responses,
        };
        let Err(ReferenceError::Invalid(v)) =
            Reference::default().decide(ReferenceCommand::Define(ReferenceItem::HearingType(t)))
        else {
            panic!("invalid")
        };
        let messages: Vec<&str> = v.iter().map(|v| v.message.as_str()).collect();
        assert!(v.iter().all(|v| v.field == "response_rules"), "{v:?}");
        assert!(messages.iter().any(|m| m.contains("max_text_chars")), "{messages:?}");
        assert!(messages.iter().any(|m| m.contains("application/x-msdownload")), "{messages:?}");
    }

    #[test]
    fn ids_are_restricted() {
        let item = ReferenceItem::SubjectArea { id: "a b/c".into(), name: "A".into() };
        assert!(matches!(Reference::default().decide(ReferenceCommand::Define(item)), Err(ReferenceError::Invalid(_))));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// A KLE tree of any shape comes back as one entry per main group, group and topic,
            /// in order; any other text is refused with words.
            #[test]
            fn any_kle_tree_is_read_entry_by_entry(
                tree in proptest::collection::vec(
                    ("[0-9]{2}", "\\PC{0,12}", proptest::collection::vec(("[0-9.]{5}", "\\PC{0,12}", proptest::collection::vec("\\PC{0,12}", 0..4)), 0..4)),
                    0..5,
                ),
                junk in "\\PC{0,200}",
            ) {
                let json: Vec<serde_json::Value> = tree
                    .iter()
                    .map(|(number, title, groups)| serde_json::json!({
                        "Number": number, "Title": title,
                        "Groups": groups.iter().map(|(number, name, topics)| serde_json::json!({
                            "Number": number, "Name": name,
                            "Topics": topics.iter().map(|name| serde_json::json!({"Number": "x", "Name": name})).collect::<Vec<_>>(),
                        })).collect::<Vec<_>>(),
                    }))
                    .collect();
                let entries = parse_kle_hierarchy(&serde_json::Value::from(json).to_string()).expect("a well-formed tree");
                let expected: usize = tree.iter().map(|(_, _, groups)| 1 + groups.iter().map(|(_, _, t)| 1 + t.len()).sum::<usize>()).sum();
                prop_assert_eq!(entries.len(), expected);
                if let Some((number, _, _)) = tree.first() {
                    prop_assert_eq!(&entries[0].number, number);
                }
                if let Err(message) = parse_kle_hierarchy(&junk) {
                    prop_assert!(message.starts_with("KLE-filen kan ikke læses"), "{message}");
                }
            }
        }
    }
}
