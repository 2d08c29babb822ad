//! Cluster mode: file tasks handed out through a queue shared by every
//! node (`TaskQueuePort`), each node named by a [`NodeId`], and the feed of
//! what other nodes committed ([`ClusterNote`]).

use async_trait::async_trait;
use thiserror::Error;

use crate::error::{BoxError, ErrorClass};
use crate::job::JobId;

/// A node of a cluster: unique among the nodes on one store, stable for
/// the process's life. 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeId(String);

/// Why a node id was refused.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "a node id is 1 to 64 characters of letters, digits, '.', '_' and '-' (got {0:?}); pick another"
)]
pub struct InvalidNodeId(pub String);

impl NodeId {
    pub fn parse(s: &str) -> Result<Self, InvalidNodeId> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidNodeId(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One file task of a job, as the queue carries it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskRef {
    pub job: JobId,
    pub index: usize,
}

impl TaskRef {
    /// The key that makes enqueueing idempotent: a task is in the queue
    /// once, however many times it is enqueued.
    pub fn idempotency_key(&self) -> String {
        format!("{}/{}", self.job, self.index)
    }
}

/// Why the queue failed.
#[derive(Debug, Error)]
pub enum TaskQueueError {
    #[error("the task queue is unavailable: {0}")]
    Unavailable(String),
    #[error("unexpected task queue error: {0}")]
    Unexpected(#[source] BoxError),
}

impl TaskQueueError {
    pub fn class(&self) -> ErrorClass {
        match self {
            TaskQueueError::Unavailable(_) => ErrorClass::Transient,
            TaskQueueError::Unexpected(_) => ErrorClass::Internal,
        }
    }
}

/// Held while this node is the one running the reconciler; dropping it
/// lets another node take over.
pub trait Leadership: Send {}

/// The queue file tasks go through in cluster mode. Delivery is at least
/// once (a dead node's tasks are delivered again elsewhere): the task run
/// claims the task in the job store and is a no-op for a task already
/// over.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait TaskQueuePort: Send + Sync + 'static {
    /// Enqueues tasks; a task already in the queue (its
    /// [`TaskRef::idempotency_key`]) is not enqueued again.
    async fn enqueue(&self, tasks: &[TaskRef]) -> Result<(), TaskQueueError>;
    /// Puts delivered tasks back in the queue for any node at once (this
    /// node hands them over); a late acknowledgement of their earlier
    /// delivery changes nothing.
    async fn release(&self, tasks: &[TaskRef]) -> Result<(), TaskQueueError>;
    /// Takes the lock that says this node runs job `job`'s phase (export,
    /// then enqueue): `None` while another node holds it. Released when
    /// dropped, or when its node dies, so a dead node's job phase can be
    /// taken over.
    async fn hold_job_phase(
        &self,
        job: &JobId,
    ) -> Result<Option<Box<dyn Leadership>>, TaskQueueError>;
    /// Becomes the one node running the reconciler, if no other node is:
    /// `None` when another holds it.
    async fn lead(&self) -> Result<Option<Box<dyn Leadership>>, TaskQueueError>;
}

/// Runs the tasks a queue delivers (the driving side of the queue).
#[async_trait]
pub trait TaskHandlerPort: Send + Sync + 'static {
    /// Runs one delivered task to its end (or to this node's giving it up);
    /// never fails: the outcome is in the job store.
    async fn run_task(&self, task: TaskRef);
}

/// What another node committed, as the cluster's notification feed tells
/// it: an event of a job (`seq`, its kind's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNote {
    pub node: NodeId,
    pub job: JobId,
    pub seq: u64,
    pub kind: String,
}

impl ClusterNote {
    /// The notification's text: `node job seq kind`.
    pub fn to_payload(&self) -> String {
        format!("{} {} {} {}", self.node, self.job, self.seq, self.kind)
    }

    /// Reads [`Self::to_payload`] back; `None` for anything else.
    pub fn parse(payload: &str) -> Option<Self> {
        let mut parts = payload.split(' ');
        let node = NodeId::parse(parts.next()?).ok()?;
        let job = JobId::parse(parts.next()?).ok()?;
        let seq = parts.next()?.parse().ok()?;
        let kind = parts.next()?.to_owned();
        if parts.next().is_some() || kind.is_empty() {
            return None;
        }
        Some(Self {
            node,
            job,
            seq,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_checked() {
        assert!(NodeId::parse("node-1.a_b").is_ok());
        for bad in ["", "a b", "ü", &"x".repeat(65), "a/b"] {
            assert!(NodeId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn notes_round_trip_and_refuse_junk() {
        let note = ClusterNote {
            node: NodeId::parse("n1").unwrap(),
            job: JobId::parse("job-1").unwrap(),
            seq: 42,
            kind: "job_cancelled".into(),
        };
        assert_eq!(ClusterNote::parse(&note.to_payload()), Some(note));
        for junk in [
            "",
            "n1 job-1 x k",
            "n1 job-1 1",
            "n1 job-1 1 k extra",
            "n 1",
        ] {
            assert_eq!(ClusterNote::parse(junk), None, "{junk:?}");
        }
        assert_eq!(
            TaskRef {
                job: JobId::parse("job-1").unwrap(),
                index: 3
            }
            .idempotency_key(),
            "job-1/3"
        );
    }
}
