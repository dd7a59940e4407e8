//! Queries on the read models, with the visibility rules of the design applied in SQL so
//! that a list never carries a hearing its viewer may not see.

use agora_auth::Principal;
use agora_eventstore::{Store, StoreError, on_backend};
use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::domain::HearingStatus;
use crate::domain::fields::Violation;
use crate::domain::reference::{KleEntry, ReferenceItem};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortBy {
    #[default]
    Deadline,
    StartDate,
    Title,
    Updated,
}

impl SortBy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "" | "deadline" => Some(Self::Deadline),
            "start_date" => Some(Self::StartDate),
            "title" => Some(Self::Title),
            "updated" => Some(Self::Updated),
            _ => None,
        }
    }

    fn column(&self) -> &'static str {
        match self {
            Self::Deadline => "deadline",
            Self::StartDate => "start_date",
            Self::Title => "title",
            Self::Updated => "updated_at",
        }
    }
}

/// The public list's filters, sort and page.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub statuses: Vec<HearingStatus>,
    pub hearing_type_id: Option<String>,
    pub subject_area_id: Option<String>,
    pub city_area_id: Option<String>,
    /// A KLE number or a prefix of one (02.34 matches 02.34.02).
    pub kle_number: Option<String>,
    pub text: Option<String>,
    pub sort: SortBy,
    pub descending: bool,
    /// 1-based.
    pub page: u32,
    pub page_size: u32,
}

pub const MAX_PAGE_SIZE: u32 = 100;

impl ListQuery {
    pub fn validate(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        if self.page_size > MAX_PAGE_SIZE {
            out.push(Violation::new("page_size", format!("højst {MAX_PAGE_SIZE} pr. side")));
        }
        if let Some(text) = &self.text
            && text.chars().count() > 200
        {
            out.push(Violation::new("text", "søgeteksten må højst være 200 tegn"));
        }
        out
    }
}

/// One row of a hearing list.
#[derive(Debug, Clone, PartialEq)]
pub struct HearingSummary {
    pub id: String,
    pub version: i64,
    pub status: HearingStatus,
    pub hearing_type_id: String,
    pub hearing_type_name: String,
    pub internal: bool,
    pub closed: bool,
    pub title: String,
    pub summary: String,
    pub subject_area_id: Option<String>,
    pub city_area_id: Option<String>,
    pub kle_number: Option<String>,
    pub start_date: Option<String>,
    pub deadline: Option<String>,
    pub owner_id: String,
    pub case_number: Option<String>,
    pub updated_at: String,
}

#[derive(Debug, Clone, Default)]
pub struct Page {
    pub items: Vec<HearingSummary>,
    pub total: i64,
}

enum Param {
    Text(String),
    Bool(bool),
    Int(i64),
}

const PUBLISHED: &str = "status IN ('AwaitingStartDate','Active','AwaitingConclusion','Concluded')";
const COLUMNS: &str = "id, version, status, hearing_type_id, hearing_type_name, internal, closed, title, summary, subject_area_id, \
    city_area_id, kle_number, start_date, deadline, owner_id, case_number, updated_at";

struct Sql {
    clauses: Vec<String>,
    params: Vec<Param>,
}

impl Sql {
    fn param(&mut self, p: Param) -> String {
        self.params.push(p);
        format!("${}", self.params.len())
    }

    fn in_list(&mut self, values: &[String]) -> String {
        let placeholders: Vec<String> = values.iter().map(|v| self.param(Param::Text(v.clone()))).collect();
        placeholders.join(",")
    }

    /// The design's visibility rules as a WHERE clause.
    fn visible_to(&mut self, viewer: Option<&Principal>) {
        let Some(viewer) = viewer else {
            self.clauses.push(format!("({PUBLISHED} AND closed = $F AND internal = $F)"));
            return;
        };
        if viewer.is_administrator() {
            return;
        }
        let refs = viewer.member_references();
        let me = self.param(Param::Text(viewer.user_id.to_string()));
        let member_refs = self.in_list(&refs);
        let employee = self.param(Param::Bool(viewer.is_employee()));
        self.clauses.push(format!(
            "(owner_id = {me} \
             OR id IN (SELECT hearing_id FROM hearing_members WHERE role = 'reviewer' AND reference IN ({member_refs})) \
             OR ({PUBLISHED} AND ((closed = $F AND (internal = $F OR {employee} = $T)) \
                 OR id IN (SELECT hearing_id FROM hearing_members WHERE role = 'invitee' AND reference IN ({member_refs})))))"
        ));
    }

    fn finish(mut self) -> (String, Vec<Param>) {
        // Boolean literals differ between the backends; bind them instead.
        let f = self.param(Param::Bool(false));
        let t = self.param(Param::Bool(true));
        let where_clause = if self.clauses.is_empty() { "TRUE".to_string() } else { self.clauses.join(" AND ") };
        (where_clause.replace("$F", &f).replace("$T", &t), self.params)
    }
}

fn filters(query: &ListQuery, viewer: Option<&Principal>) -> Sql {
    let mut sql = Sql { clauses: Vec::new(), params: Vec::new() };
    sql.visible_to(viewer);
    if !query.statuses.is_empty() {
        let statuses: Vec<String> = query.statuses.iter().map(|s| s.as_str().to_string()).collect();
        let list = sql.in_list(&statuses);
        sql.clauses.push(format!("status IN ({list})"));
    }
    let eq = |column: &str, value: &Option<String>, sql: &mut Sql| {
        if let Some(value) = value.as_ref().filter(|v| !v.is_empty()) {
            let p = sql.param(Param::Text(value.clone()));
            sql.clauses.push(format!("{column} = {p}"));
        }
    };
    eq("hearing_type_id", &query.hearing_type_id, &mut sql);
    eq("subject_area_id", &query.subject_area_id, &mut sql);
    eq("city_area_id", &query.city_area_id, &mut sql);
    if let Some(kle) = query.kle_number.as_ref().filter(|v| !v.is_empty()) {
        let p = sql.param(Param::Text(format!("{}%", escape_like(kle))));
        sql.clauses.push(format!("kle_number LIKE {p} ESCAPE '\\'"));
    }
    if let Some(text) = query.text.as_ref().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        let p = sql.param(Param::Text(format!("%{}%", escape_like(&text.to_lowercase()))));
        sql.clauses.push(format!("search_text LIKE {p} ESCAPE '\\'"));
    }
    sql
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

macro_rules! bind_all {
    ($query:expr, $params:expr) => {{
        let mut q = $query;
        for p in $params {
            q = match p {
                Param::Text(s) => q.bind(s.clone()),
                Param::Bool(b) => q.bind(*b),
                Param::Int(i) => q.bind(*i),
            };
        }
        q
    }};
}

macro_rules! summary_from_row {
    ($row:expr) => {{
        let row = $row;
        let status: String = row.try_get("status")?;
        HearingSummary {
            id: row.try_get("id")?,
            version: row.try_get("version")?,
            status: HearingStatus::parse(&status).unwrap_or_default(),
            hearing_type_id: row.try_get("hearing_type_id")?,
            hearing_type_name: row.try_get("hearing_type_name")?,
            internal: row.try_get("internal")?,
            closed: row.try_get("closed")?,
            title: row.try_get("title")?,
            summary: row.try_get("summary")?,
            subject_area_id: row.try_get("subject_area_id")?,
            city_area_id: row.try_get("city_area_id")?,
            kle_number: row.try_get("kle_number")?,
            start_date: row.try_get("start_date")?,
            deadline: row.try_get("deadline")?,
            owner_id: row.try_get("owner_id")?,
            case_number: row.try_get("case_number")?,
            updated_at: row.try_get("updated_at")?,
        }
    }};
}

/// The hearing list as `viewer` may see it (`None`: the anonymous public).
pub async fn list_hearings(store: &Store, viewer: Option<&Principal>, query: &ListQuery) -> Result<Page, StoreError> {
    let sql = filters(query, viewer);
    let (where_clause, mut params) = sql.finish();
    let count_sql = format!("SELECT COUNT(*) AS n FROM hearing_list WHERE {where_clause}");
    let page_size = if query.page_size == 0 { 20 } else { query.page_size.min(MAX_PAGE_SIZE) } as i64;
    let offset = (query.page.max(1) as i64 - 1) * page_size;
    let direction = if query.descending { "DESC" } else { "ASC" };
    params.push(Param::Int(page_size));
    let limit = format!("${}", params.len());
    params.push(Param::Int(offset));
    let offset_p = format!("${}", params.len());
    let list_sql = format!(
        "SELECT {COLUMNS} FROM hearing_list WHERE {where_clause} ORDER BY {} {direction}, id {direction} LIMIT {limit} OFFSET {offset_p}",
        query.sort.column()
    );
    let count_params = &params[..params.len() - 2];
    on_backend!(store.backend(), pool => {
        let total: i64 = bind_all!(sqlx::query(&count_sql), count_params).fetch_one(pool).await?.try_get("n")?;
        let rows = bind_all!(sqlx::query(&list_sql), &params).fetch_all(pool).await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            items.push(summary_from_row!(row));
        }
        Ok(Page { items, total })
    })
}

/// The caseworker's own hearings (owner or reviewer), in every state.
pub async fn dashboard(store: &Store, viewer: &Principal) -> Result<Vec<HearingSummary>, StoreError> {
    let mut sql = Sql { clauses: Vec::new(), params: Vec::new() };
    let me = sql.param(Param::Text(viewer.user_id.to_string()));
    let refs = sql.in_list(&viewer.member_references());
    let query = format!(
        "SELECT {COLUMNS} FROM hearing_list WHERE owner_id = {me} OR id IN \
         (SELECT hearing_id FROM hearing_members WHERE role = 'reviewer' AND reference IN ({refs})) ORDER BY updated_at DESC"
    );
    on_backend!(store.backend(), pool => {
        let rows = bind_all!(sqlx::query(&query), &sql.params).fetch_all(pool).await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            items.push(summary_from_row!(row));
        }
        Ok(items)
    })
}

/// Hearings whose start date or deadline has come by `now` but whose status does not show it yet.
pub async fn due_for_transition(store: &Store, now: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
    let now = now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    on_backend!(store.backend(), pool => {
        let rows = sqlx::query(
            "SELECT id FROM hearing_list WHERE (status = 'AwaitingStartDate' AND opens_at <= $1) \
             OR (status = 'Active' AND closes_at <= $1) ORDER BY id",
        )
        .bind(&now)
        .fetch_all(pool)
        .await?;
        rows.iter().map(|r| r.try_get::<String, _>("id").map_err(StoreError::from)).collect()
    })
}

/// Whether a viewer is a reviewer or invitee of a hearing, from the membership table.
pub async fn membership(store: &Store, hearing_id: &str, viewer: &Principal) -> Result<(bool, bool), StoreError> {
    let refs = viewer.member_references();
    let placeholders: Vec<String> = (0..refs.len()).map(|i| format!("${}", i + 2)).collect();
    let query =
        format!("SELECT role FROM hearing_members WHERE hearing_id = $1 AND reference IN ({})", placeholders.join(","));
    on_backend!(store.backend(), pool => {
        let mut q = sqlx::query(&query).bind(hearing_id);
        for r in &refs {
            q = q.bind(r);
        }
        let rows = q.fetch_all(pool).await?;
        let roles: Vec<String> = rows.iter().filter_map(|r| r.try_get::<String, _>("role").ok()).collect();
        Ok((roles.iter().any(|r| r == "reviewer"), roles.iter().any(|r| r == "invitee")))
    })
}

/// Reference items of one kind, active ones unless `include_retired`.
pub async fn reference_items(
    store: &Store,
    kind: &str,
    include_retired: bool,
) -> Result<Vec<(ReferenceItem, bool)>, StoreError> {
    on_backend!(store.backend(), pool => {
        let rows = sqlx::query("SELECT data, retired FROM reference_items WHERE kind = $1 ORDER BY name, id")
            .bind(kind)
            .fetch_all(pool)
            .await?;
        let mut out = Vec::new();
        for row in &rows {
            let retired: bool = row.try_get("retired")?;
            let data: String = row.try_get("data")?;
            if let Some(item) = crate::projections::decode_item(&data)
                && (include_retired || !retired) {
                    out.push((item, retired));
                }
        }
        Ok(out)
    })
}

/// KLE numbers starting with `prefix` or whose title contains `text`.
pub async fn kle_numbers(store: &Store, prefix: &str, text: &str, limit: i64) -> Result<Vec<KleEntry>, StoreError> {
    let prefix = format!("{}%", escape_like(prefix));
    let text = format!("%{}%", escape_like(&text.to_lowercase()));
    on_backend!(store.backend(), pool => {
        let rows = sqlx::query(
            "SELECT number, title, retired FROM kle_numbers WHERE number LIKE $1 ESCAPE '\\' \
             AND LOWER(title) LIKE $2 ESCAPE '\\' ORDER BY number LIMIT $3",
        )
        .bind(&prefix)
        .bind(&text)
        .bind(limit)
        .fetch_all(pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(KleEntry { number: row.try_get("number")?, title: row.try_get("title")?, retired: row.try_get("retired")? });
        }
        Ok(out)
    })
}
