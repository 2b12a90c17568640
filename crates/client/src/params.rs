//! Parameters of list, watch, write and delete calls, and what list and
//! watch return.

/// Page size the informer and `list_all` ask for: large enough that most
/// collections fit one page, small enough that a big one does not make
/// one huge message.
pub const DEFAULT_PAGE_SIZE: u32 = 500;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListParams {
    /// `app=web,tier!=db`; empty matches everything.
    pub label_selector: String,
    /// `spec.nodeName=n1`; empty matches everything.
    pub field_selector: String,
    /// Page size; 0 asks for everything at once.
    pub limit: u32,
    /// The `continue_token` of the previous page.
    pub continue_token: String,
}

impl ListParams {
    pub fn labels(mut self, selector: &str) -> Self {
        self.label_selector = selector.to_string();
        self
    }

    pub fn fields(mut self, selector: &str) -> Self {
        self.field_selector = selector.to_string();
        self
    }

    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectList<K> {
    pub items: Vec<K>,
    /// The snapshot's revision: watch from here to see every later change.
    pub resource_version: String,
    /// Non-empty when more pages follow.
    pub continue_token: String,
    pub remaining_item_count: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchParams {
    pub label_selector: String,
    pub field_selector: String,
    /// "": an Added event for every existing object first, then changes.
    /// "N": every change after revision N.
    pub resource_version: String,
    /// Ask for periodic Bookmark events so an idle watch's revision stays
    /// fresh and a resume does not fall off the server's window.
    pub allow_bookmarks: bool,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent<K> {
    Added(K),
    Modified(K),
    /// The object's last state.
    Deleted(K),
    /// The watch has seen every change up to this resourceVersion.
    Bookmark(String),
}

impl<K> WatchEvent<K> {
    /// The object, unless this is a bookmark.
    pub fn object(&self) -> Option<&K> {
        match self {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => Some(o),
            WatchEvent::Bookmark(_) => None,
        }
    }
}

/// How dependents of a deleted object are treated (see the garbage
/// collector).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropagationPolicy {
    /// Delete the object now; the garbage collector deletes dependents.
    Background,
    /// Delete dependents first; the object stays with a `foregroundDeletion`
    /// finalizer until they are gone.
    Foreground,
    /// Leave dependents, removing their owner references.
    Orphan,
}

impl PropagationPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PropagationPolicy::Background => "Background",
            PropagationPolicy::Foreground => "Foreground",
            PropagationPolicy::Orphan => "Orphan",
        }
    }
}

/// Refuse a delete unless the object still has this uid / resourceVersion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteParams {
    /// None: the server's default (Background).
    pub propagation_policy: Option<PropagationPolicy>,
    /// None: the object's own grace period; 0 deletes at once.
    pub grace_period_seconds: Option<i32>,
    pub preconditions: Option<Preconditions>,
    pub dry_run: bool,
}

impl DeleteParams {
    pub fn background() -> Self {
        DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        }
    }

    pub fn foreground() -> Self {
        DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            ..Default::default()
        }
    }

    pub fn orphan() -> Self {
        DeleteParams {
            propagation_policy: Some(PropagationPolicy::Orphan),
            ..Default::default()
        }
    }

    pub fn grace_period(mut self, seconds: i32) -> Self {
        self.grace_period_seconds = Some(seconds);
        self
    }
}

/// Options of create, update and patch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostParams {
    /// Validate and default on the server without persisting
    /// (`--dry-run=server`).
    pub dry_run: bool,
}

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Subresource {
    /// Everything but status (for kinds with a status subresource).
    #[default]
    Main,
    /// Only status.
    Status,
    /// A CertificateSigningRequest's decision (`status.conditions`).
    Approval,
}

impl Subresource {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Subresource::Main => "",
            Subresource::Status => "status",
            Subresource::Approval => "approval",
        }
    }
}
