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

pub(super) type InstanceRow = (
    String,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    String,
    String,
    i64,
    i64,
    i64,
    Option<String>,
    String,
);

pub(super) const INSTANCE_COLUMNS: &str = "id, account_id, name, spec_id, image_id, cores, memory_gib, \
     duration_months, status, status_reason, charged, created_at, updated_at, expires_at, public_key, host";

pub(super) fn instance_from_row(r: InstanceRow) -> Result<Instance> {
    let (
        id,
        account_id,
        name,
        spec_id,
        image_id,
        cores,
        mem,
        months,
        status,
        reason,
        charged,
        c,
        u,
        e,
        pk,
        host,
    ) = r;
    Ok(Instance {
        id,
        account_id,
        name,
        spec_id,
        image_id,
        cores: cores as u32,
        memory_gib: mem as u32,
        duration_months: months as u32,
        status: Status::from_i64(status).ok_or_else(|| Error::internal("corrupt status"))?,
        status_reason: reason,
        charged: charged.parse().map_err(Error::internal)?,
        created_at: c,
        updated_at: u,
        expires_at: e,
        public_key: pk,
        host,
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

pub(super) type MappingRow = (
    String,
    String,
    String,
    String,
    String,
    i64,
    String,
    i64,
    i64,
);

pub(super) const MAPPING_COLUMNS: &str =
    "id, instance_id, account_id, name, protocol, computer_port, server_ip, server_port, created_at";

pub(super) fn mapping_from_row(r: MappingRow) -> Mapping {
    let (id, instance_id, account_id, name, protocol, cport, ip, sport, created_at) = r;
    Mapping {
        id,
        instance_id,
        account_id,
        name,
        protocol,
        computer_port: cport as u16,
        server_ip: ip,
        server_port: sport as u16,
        created_at,
    }
}
