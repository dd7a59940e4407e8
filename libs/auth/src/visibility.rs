//! Who may see a hearing, and who may see who wrote its responses.
//!
//! The rules of the design:
//!
//! | viewer                                   | sees                                          |
//! |------------------------------------------|-----------------------------------------------|
//! | administrator, owner, reviewer           | every hearing, in any state                   |
//! | invitee                                  | published hearings                            |
//! | employee                                 | published hearings that are not closed        |
//! | citizen, company user, anonymous public  | published hearings, not closed, not internal  |
//!
//! "Closed" hearings are for invitees only; "internal" hearings are for staff
//! only. Response authors' identities are visible to administrators, owners
//! and reviewers; everyone else sees approved responses without author
//! identity.

use crate::Principal;

/// What the visibility rules need to know about one hearing, relative to a
/// viewer.
///
/// The `viewer_is_*` facts describe the same viewer that is passed to the
/// rules; for an anonymous viewer they are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct HearingFacts {
    /// The hearing has been published.
    pub published: bool,
    /// Only invitees may take part (closed hearing).
    pub closed: bool,
    /// Only staff may take part (internal hearing).
    pub internal: bool,
    /// The viewer owns (created or manages) the hearing.
    pub viewer_is_owner: bool,
    /// The viewer is a reviewer of the hearing.
    pub viewer_is_reviewer: bool,
    /// The viewer has been invited to the hearing.
    pub viewer_is_invitee: bool,
}

/// Whether `viewer` (`None`: the anonymous public) may see the hearing.
///
/// Administrators, owners and reviewers see everything, in any state;
/// invitees see published hearings; employees see published non-closed
/// hearings; citizens, company users and the anonymous public see published,
/// non-closed, external hearings.
pub fn can_see_hearing(viewer: Option<&Principal>, facts: &HearingFacts) -> bool {
    if sees_everything(viewer, facts) {
        return true;
    }
    if !facts.published {
        return false;
    }
    if viewer.is_some() && facts.viewer_is_invitee {
        return true;
    }
    if facts.closed {
        return false;
    }
    if viewer.is_some_and(Principal::is_employee) {
        return true;
    }
    !facts.internal
}

/// Whether `viewer` may see the identities of the hearing's response authors:
/// administrators, owners and reviewers. The public sees approved responses
/// without author identity.
pub fn can_see_response_authors(viewer: Option<&Principal>, facts: &HearingFacts) -> bool {
    sees_everything(viewer, facts)
}

fn sees_everything(viewer: Option<&Principal>, facts: &HearingFacts) -> bool {
    viewer.is_some_and(|p| p.is_administrator() || facts.viewer_is_owner || facts.viewer_is_reviewer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Capacity, Role};
    use uuid::Uuid;

    fn who(capacity: Capacity) -> Principal {
        Principal::new(Uuid::new_v4(), capacity)
    }

    fn admin() -> Principal {
        who(Capacity::Employee).with_role(Role::Administrator)
    }

    /// Every combination of the three hearing-state facts.
    fn states() -> impl Iterator<Item = HearingFacts> {
        (0..8u8).map(|bits| HearingFacts {
            published: bits & 1 != 0,
            closed: bits & 2 != 0,
            internal: bits & 4 != 0,
            ..HearingFacts::default()
        })
    }

    const PUBLIC: HearingFacts = HearingFacts {
        published: true,
        closed: false,
        internal: false,
        viewer_is_owner: false,
        viewer_is_reviewer: false,
        viewer_is_invitee: false,
    };

    #[test]
    fn administrators_owners_and_reviewers_see_everything() {
        for state in states() {
            assert!(can_see_hearing(Some(&admin()), &state), "{state:?}");
            assert!(can_see_response_authors(Some(&admin()), &state));
            for capacity in Capacity::ALL {
                let p = who(capacity);
                let owner = HearingFacts { viewer_is_owner: true, ..state };
                let reviewer = HearingFacts { viewer_is_reviewer: true, ..state };
                assert!(can_see_hearing(Some(&p), &owner), "{capacity} owner {state:?}");
                assert!(can_see_hearing(Some(&p), &reviewer), "{capacity} reviewer {state:?}");
                assert!(can_see_response_authors(Some(&p), &owner));
                assert!(can_see_response_authors(Some(&p), &reviewer));
            }
        }
    }

    #[test]
    fn nobody_else_sees_unpublished_hearings() {
        let viewers = [
            None,
            Some(who(Capacity::Employee).with_role(Role::HearingCreator)),
            Some(who(Capacity::Citizen)),
            Some(who(Capacity::Company)),
        ];
        for state in states().filter(|s| !s.published) {
            for viewer in &viewers {
                let invited = HearingFacts { viewer_is_invitee: true, ..state };
                assert!(!can_see_hearing(viewer.as_ref(), &state), "{viewer:?} {state:?}");
                assert!(!can_see_hearing(viewer.as_ref(), &invited), "{viewer:?} {state:?}");
            }
        }
    }

    #[test]
    fn invitees_see_published_hearings() {
        for state in states().filter(|s| s.published) {
            let invited = HearingFacts { viewer_is_invitee: true, ..state };
            for capacity in Capacity::ALL {
                assert!(can_see_hearing(Some(&who(capacity)), &invited), "{capacity} {state:?}");
            }
        }
    }

    #[test]
    fn employees_see_published_non_closed_hearings() {
        let employee = who(Capacity::Employee);
        for state in states() {
            let expected = state.published && !state.closed;
            assert_eq!(can_see_hearing(Some(&employee), &state), expected, "{state:?}");
        }
        let internal = HearingFacts { internal: true, ..PUBLIC };
        assert!(can_see_hearing(Some(&employee), &internal));
        // An employee cannot see a closed hearing unless invited.
        let closed = HearingFacts { closed: true, ..PUBLIC };
        assert!(!can_see_hearing(Some(&employee), &closed));
        let invited = HearingFacts { viewer_is_invitee: true, ..closed };
        assert!(can_see_hearing(Some(&employee), &invited));
    }

    #[test]
    fn citizens_companies_and_the_public_see_published_open_external_hearings() {
        let viewers = [None, Some(who(Capacity::Citizen)), Some(who(Capacity::Company))];
        for viewer in &viewers {
            for state in states() {
                let expected = state.published && !state.closed && !state.internal;
                assert_eq!(can_see_hearing(viewer.as_ref(), &state), expected, "{viewer:?} {state:?}");
            }
        }
        // A citizen cannot see an internal hearing.
        let internal = HearingFacts { internal: true, ..PUBLIC };
        assert!(!can_see_hearing(Some(&who(Capacity::Citizen)), &internal));
        // A hearing-creator role does not make a citizen staff.
        let creator = who(Capacity::Citizen).with_role(Role::HearingCreator);
        assert!(!can_see_hearing(Some(&creator), &internal));
    }

    #[test]
    fn anonymous_viewers_cannot_claim_relationships() {
        for state in states() {
            let claimed =
                HearingFacts { viewer_is_owner: true, viewer_is_reviewer: true, viewer_is_invitee: true, ..state };
            let expected = state.published && !state.closed && !state.internal;
            assert_eq!(can_see_hearing(None, &claimed), expected, "{state:?}");
            assert!(!can_see_response_authors(None, &claimed));
        }
    }

    #[test]
    fn only_administrators_owners_and_reviewers_see_response_authors() {
        for capacity in Capacity::ALL {
            let p = who(capacity).with_role(Role::HearingCreator);
            assert!(!can_see_response_authors(Some(&p), &PUBLIC), "{capacity}");
            let invited = HearingFacts { viewer_is_invitee: true, ..PUBLIC };
            assert!(!can_see_response_authors(Some(&p), &invited), "{capacity}");
        }
        assert!(!can_see_response_authors(None, &PUBLIC));
        assert!(can_see_response_authors(Some(&admin()), &PUBLIC));
    }
}
