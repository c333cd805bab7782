//! Instance and mapping records, and their statuses.

use serde::Serialize;
use stratus_config::Amount;

use crate::{Error, Result};

/// Instance statuses, with the integers of the ComputeShare API; `Failed` (10) is stratus's own:
/// the instance never ran (the reason says why) and its charge was refunded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[repr(i64)]
pub enum Status {
    Creating = 0,
    Running = 1,
    Starting = 2,
    Closing = 3,
    Closed = 4,
    Restarting = 5,
    Deleting = 6,
    Deleted = 7,
    Expired = 8,
    Recreating = 9,
    Failed = 10,
}

impl Status {
    pub fn from_i64(v: i64) -> Option<Status> {
        use Status::*;
        Some(match v {
            0 => Creating,
            1 => Running,
            2 => Starting,
            3 => Closing,
            4 => Closed,
            5 => Restarting,
            6 => Deleting,
            7 => Deleted,
            8 => Expired,
            9 => Recreating,
            10 => Failed,
            _ => return None,
        })
    }

    pub fn code(self) -> i64 {
        self as i64
    }

    /// On the way to another status.
    pub fn is_transitional(self) -> bool {
        use Status::*;
        matches!(
            self,
            Creating | Starting | Closing | Restarting | Deleting | Recreating
        )
    }

    /// Nothing can happen to it any more but a delete (or nothing at all).
    pub fn is_final(self) -> bool {
        matches!(self, Status::Deleted | Status::Expired | Status::Failed)
    }

    pub fn name(self) -> &'static str {
        use Status::*;
        match self {
            Creating => "creating",
            Running => "running",
            Starting => "starting",
            Closing => "closing",
            Closed => "closed",
            Restarting => "restarting",
            Deleting => "deleting",
            Deleted => "deleted",
            Expired => "expired",
            Recreating => "recreating",
            Failed => "failed",
        }
    }
}

/// An instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub spec_id: i64,
    pub image_id: i64,
    pub cores: u32,
    pub memory_gib: u32,
    pub duration_months: u32,
    pub status: Status,
    pub status_reason: String,
    pub charged: Amount,
    /// Unix milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: i64,
    pub public_key: Option<String>,
    /// The compute host the instance runs on (`compute.host` of the node that created it).
    pub host: String,
}

/// An `instances` row as [`INSTANCE_COLUMNS`] selects it.
#[derive(sqlx::FromRow)]
pub(super) struct InstanceRow {
    id: String,
    account_id: String,
    name: String,
    spec_id: i64,
    image_id: i64,
    cores: i64,
    memory_gib: i64,
    duration_months: i64,
    status: i64,
    status_reason: String,
    charged: String,
    created_at: i64,
    updated_at: i64,
    expires_at: i64,
    public_key: Option<String>,
    host: String,
}

pub(super) const INSTANCE_COLUMNS: &str = "id, account_id, name, spec_id, image_id, cores, memory_gib, \
     duration_months, status, status_reason, charged, created_at, updated_at, expires_at, public_key, host";

pub(super) fn instance_from_row(r: InstanceRow) -> Result<Instance> {
    Ok(Instance {
        id: r.id,
        account_id: r.account_id,
        name: r.name,
        spec_id: r.spec_id,
        image_id: r.image_id,
        cores: r.cores as u32,
        memory_gib: r.memory_gib as u32,
        duration_months: r.duration_months as u32,
        status: Status::from_i64(r.status).ok_or_else(|| Error::internal("corrupt status"))?,
        status_reason: r.status_reason,
        charged: r.charged.parse().map_err(Error::internal)?,
        created_at: r.created_at,
        updated_at: r.updated_at,
        expires_at: r.expires_at,
        public_key: r.public_key,
        host: r.host,
    })
}

/// A public TCP port forwarded to a port of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub id: String,
    pub instance_id: String,
    pub account_id: String,
    pub name: String,
    pub protocol: String,
    pub computer_port: u16,
    pub server_ip: String,
    pub server_port: u16,
    pub created_at: i64,
}

/// A `mappings` row as [`MAPPING_COLUMNS`] selects it.
#[derive(sqlx::FromRow)]
pub(super) struct MappingRow {
    id: String,
    instance_id: String,
    account_id: String,
    name: String,
    protocol: String,
    computer_port: i64,
    server_ip: String,
    server_port: i64,
    created_at: i64,
}

pub(super) const MAPPING_COLUMNS: &str =
    "id, instance_id, account_id, name, protocol, computer_port, server_ip, server_port, created_at";

pub(super) fn mapping_from_row(r: MappingRow) -> Mapping {
    Mapping {
        id: r.id,
        instance_id: r.instance_id,
        account_id: r.account_id,
        name: r.name,
        protocol: r.protocol,
        computer_port: r.computer_port as u16,
        server_ip: r.server_ip,
        server_port: r.server_port as u16,
        created_at: r.created_at,
    }
}
