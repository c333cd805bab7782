//! Public TCP port mappings: allocation (lowest free port of the configured range, bound before
//! the record commits, unique in the database), and their management.

use std::collections::HashSet;
use std::sync::Arc;

use crate::db::Conn;
use stratus_compute::{ComposeApp, Runtime};

use super::records::{self, Mapping, Status};
use super::Compute;
use crate::{Error, Result};

/// What a client learns when the gateway cannot open a public port (the cause is logged).
const PORTS_UNAVAILABLE: &str = "public ports are unavailable";

/// A mapping the caller asks for.
#[derive(Debug, Clone, Default)]
pub struct MappingRequest {
    pub name: String,
    /// Only TCP exists; empty means TCP.
    pub protocol: String,
    pub computer_port: i64,
}

impl MappingRequest {
    /// Checks it against the compose app: the port must be one the app publishes.
    pub fn validate(&self, app: &ComposeApp) -> Result<()> {
        if self.name.chars().count() > 64 || self.name.chars().any(char::is_control) {
            return Err(Error::invalid(
                "networkMapping.name",
                "at most 64 printable characters",
            ));
        }
        if !(self.protocol.is_empty() || self.protocol.eq_ignore_ascii_case("tcp")) {
            return Err(Error::invalid(
                "networkMapping.protocol",
                "only TCP is supported",
            ));
        }
        let port = u16::try_from(self.computer_port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| Error::invalid("networkMapping.computerPort", "must be 1 to 65535"))?;
        if app.resolve_port(port).is_none() {
            let published: Vec<String> = app
                .published_ports()
                .iter()
                .map(|p| p.machine_port().to_string())
                .collect();
            return Err(Error::invalid(
                "networkMapping.computerPort",
                format!(
                    "port {port} is not published by the compose file (ports: [{}])",
                    published.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

impl Compute {
    /// Picks the lowest free public port, binds it, and returns the (not yet stored) mapping.
    /// Call with the port lock held.
    pub(super) async fn open_new_mapping(
        &self,
        rt: &Arc<dyn Runtime>,
        account_id: &str,
        instance_id: &str,
        req: &MappingRequest,
        now: i64,
    ) -> Result<Mapping> {
        let cfg = &self.inner.cfg;
        let used: HashSet<u16> =
            sqlx::query_as::<_, (i64,)>("SELECT server_port FROM mappings WHERE server_ip = $1")
                .bind(&cfg.server_ip)
                .fetch_all(self.inner.db.w())
                .await?
                .into_iter()
                .map(|r| r.0 as u16)
                .chain(
                    self.inner
                        .gateway
                        .mappings()
                        .iter()
                        .filter_map(|m| self.inner.gateway.local_addr(m).map(|a| a.port())),
                )
                .collect();
        let id = uuid::Uuid::new_v4().to_string();
        let port = req.computer_port as u16;
        for candidate in cfg.port_min..=cfg.port_max {
            if used.contains(&candidate) {
                continue;
            }
            match self
                .inner
                .gateway
                .open_in(
                    instance_id,
                    &id,
                    candidate,
                    self.resolver(rt.clone(), instance_id, port),
                )
                .await
            {
                Ok(_) => {
                    return Ok(Mapping {
                        id,
                        instance_id: instance_id.to_string(),
                        account_id: account_id.to_string(),
                        name: req.name.trim().to_string(),
                        protocol: "TCP".to_string(),
                        computer_port: port,
                        server_ip: cfg.server_ip.clone(),
                        server_port: candidate,
                        created_at: now,
                    })
                }
                Err(e) if e.is_addr_in_use() => {
                    tracing::warn!(
                        port = candidate,
                        "public port in use by another program; skipped"
                    );
                    continue;
                }
                Err(e) => {
                    return Err(Error::unavailable(
                        PORTS_UNAVAILABLE,
                        format!("gateway: {e}"),
                    ))
                }
            }
        }
        Err(Error::unavailable(
            format!("no free public port in {}-{}", cfg.port_min, cfg.port_max),
            "every port of the range is taken",
        ))
    }

    pub(super) async fn insert_mapping(&self, conn: &mut Conn, m: &Mapping) -> Result<()> {
        sqlx::query(
            "INSERT INTO mappings (id, instance_id, account_id, name, protocol, computer_port, server_ip, server_port, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&m.id)
        .bind(&m.instance_id)
        .bind(&m.account_id)
        .bind(&m.name)
        .bind(&m.protocol)
        .bind(m.computer_port as i64)
        .bind(&m.server_ip)
        .bind(m.server_port as i64)
        .bind(m.created_at)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Deletes an instance's mapping rows (freeing their ports) and returns them.
    pub(super) async fn delete_mapping_rows(
        &self,
        conn: &mut Conn,
        instance_id: &str,
    ) -> Result<Vec<Mapping>> {
        let rows: Vec<records::MappingRow> = sqlx::query_as(&format!(
            "SELECT {} FROM mappings WHERE instance_id = $1",
            records::MAPPING_COLUMNS
        ))
        .bind(instance_id)
        .fetch_all(&mut *conn)
        .await?;
        sqlx::query("DELETE FROM mappings WHERE instance_id = $1")
            .bind(instance_id)
            .execute(&mut *conn)
            .await?;
        Ok(rows.into_iter().map(records::mapping_from_row).collect())
    }

    pub(super) async fn close_listeners(&self, maps: &[Mapping]) {
        for m in maps {
            self.inner.gateway.close(&m.id).await;
        }
    }

    /// The mappings of one instance.
    pub async fn mappings_of(&self, instance_id: &str) -> Result<Vec<Mapping>> {
        let rows: Vec<records::MappingRow> = sqlx::query_as(&format!(
            "SELECT {} FROM mappings WHERE instance_id = $1 ORDER BY created_at, server_port",
            records::MAPPING_COLUMNS
        ))
        .bind(instance_id)
        .fetch_all(self.inner.db.r())
        .await?;
        Ok(rows.into_iter().map(records::mapping_from_row).collect())
    }

    /// The account's mappings (of one instance, or all), a page at a time (pages start at 1).
    pub async fn mappings(
        &self,
        account_id: &str,
        instance_id: Option<&str>,
        page: u32,
        size: u32,
    ) -> Result<(Vec<Mapping>, u64)> {
        let size = size.clamp(1, 1000) as i64;
        let offset = (page.max(1) as i64 - 1) * size;
        let rows: Vec<records::MappingRow> = sqlx::query_as(&format!(
            "SELECT {} FROM mappings WHERE account_id = $1 AND ($2 IS NULL OR instance_id = $2) \
             ORDER BY created_at, server_port LIMIT $3 OFFSET $4",
            records::MAPPING_COLUMNS
        ))
        .bind(account_id)
        .bind(instance_id)
        .bind(size)
        .bind(offset)
        .fetch_all(self.inner.db.r())
        .await?;
        let (total,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM mappings WHERE account_id = $1 AND ($2 IS NULL OR instance_id = $2)",
        )
        .bind(account_id)
        .bind(instance_id)
        .fetch_one(self.inner.db.r())
        .await?;
        Ok((
            rows.into_iter().map(records::mapping_from_row).collect(),
            total as u64,
        ))
    }

    /// One of the account's mappings.
    pub async fn mapping(&self, account_id: &str, id: &str) -> Result<Mapping> {
        let row: Option<records::MappingRow> = sqlx::query_as(&format!(
            "SELECT {} FROM mappings WHERE id = $1 AND account_id = $2",
            records::MAPPING_COLUMNS
        ))
        .bind(id)
        .bind(account_id)
        .fetch_optional(self.inner.db.r())
        .await?;
        row.map(records::mapping_from_row)
            .ok_or_else(|| Error::NotFound(format!("network mapping {id}")))
    }

    async fn app_of(&self, instance_id: &str) -> Result<ComposeApp> {
        let (yaml,): (String,) = sqlx::query_as("SELECT compose FROM instances WHERE id = $1")
            .bind(instance_id)
            .fetch_one(self.inner.db.r())
            .await?;
        ComposeApp::parse(&yaml, &self.inner.policy)
            .map_err(|e| Error::internal(format!("stored compose: {e}")))
    }

    /// Refuses a mapping change of an instance that is deleted, being deleted, expired or
    /// failed. Call it under the instance's state lock.
    fn mappable(instance: &super::records::Instance) -> Result<()> {
        if instance.status.is_final() || instance.status == Status::Deleting {
            return Err(Error::Conflict(format!(
                "instance {} is {}: its mappings cannot change",
                instance.id,
                instance.status.name()
            )));
        }
        Ok(())
    }

    /// Adds a mapping to one of the account's instances.
    pub async fn create_mapping(
        &self,
        account_id: &str,
        instance_id: &str,
        req: MappingRequest,
    ) -> Result<Mapping> {
        let instance = self.instance(account_id, instance_id).await?;
        Self::mappable(&instance)?;
        req.validate(&self.app_of(instance_id).await?)?;
        let rt = self.runtime().await?;
        let state = self.state_lock(instance_id);
        let _state = state.lock().await;
        // The status may have changed while the request was checked.
        let instance = self.instance(account_id, instance_id).await?;
        Self::mappable(&instance)?;
        let now = self.inner.clock.now_ms();
        let _ports = self.inner.ports.lock().await;
        let (count,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM mappings WHERE instance_id = $1")
                .bind(instance_id)
                .fetch_one(self.inner.db.w())
                .await?;
        if count >= self.inner.cfg.max_mappings_per_instance as i64 {
            return Err(Error::Conflict(format!(
                "instance {instance_id} has the most mappings allowed ({})",
                self.inner.cfg.max_mappings_per_instance
            )));
        }
        let m = self
            .open_new_mapping(&rt, account_id, instance_id, &req, now)
            .await?;
        let stored: Result<()> = async {
            let mut tx = self.inner.db.w().begin().await?;
            self.insert_mapping(&mut tx, &m).await?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        if let Err(e) = stored {
            self.close_listeners(std::slice::from_ref(&m)).await;
            return Err(e);
        }
        self.inner
            .live
            .entry(instance_id.to_string())
            .or_insert(instance.status);
        self.inner.gateway.refresh(instance_id).await;
        Ok(m)
    }

    /// Renames a mapping or points it at another published port (same public port). Refused
    /// (409) once its instance is being deleted.
    pub async fn update_mapping(
        &self,
        account_id: &str,
        id: &str,
        name: Option<String>,
        computer_port: Option<i64>,
        protocol: Option<String>,
    ) -> Result<Mapping> {
        let m = self.mapping(account_id, id).await?;
        let req = MappingRequest {
            name: name.clone().unwrap_or_else(|| m.name.clone()),
            protocol: protocol.unwrap_or_default(),
            computer_port: computer_port.unwrap_or(m.computer_port as i64),
        };
        req.validate(&self.app_of(&m.instance_id).await?)?;
        let state = self.state_lock(&m.instance_id);
        let _state = state.lock().await;
        // Under the state lock: the mapping and its instance as they are now.
        let m = self.mapping(account_id, id).await?;
        let instance = self.instance(account_id, &m.instance_id).await?;
        Self::mappable(&instance)?;
        let port = req.computer_port as u16;
        if port != m.computer_port {
            // Re-open the listener with a resolver for the new port, on the same public port.
            let rt = self.runtime().await?;
            let _ports = self.inner.ports.lock().await;
            self.inner.gateway.close(&m.id).await;
            self.inner
                .gateway
                .open_in(
                    &m.instance_id,
                    &m.id,
                    m.server_port,
                    self.resolver(rt, &m.instance_id, port),
                )
                .await
                .map_err(|e| Error::unavailable(PORTS_UNAVAILABLE, format!("gateway: {e}")))?;
        }
        sqlx::query("UPDATE mappings SET name = $1, computer_port = $2 WHERE id = $3")
            .bind(req.name.trim())
            .bind(port as i64)
            .bind(id)
            .execute(self.inner.db.w())
            .await?;
        self.mapping(account_id, id).await
    }

    /// Removes a mapping and frees its port.
    pub async fn delete_mapping(&self, account_id: &str, id: &str) -> Result<()> {
        let m = self.mapping(account_id, id).await?;
        let state = self.state_lock(&m.instance_id);
        let _state = state.lock().await;
        let r = sqlx::query("DELETE FROM mappings WHERE id = $1 AND account_id = $2")
            .bind(id)
            .bind(account_id)
            .execute(self.inner.db.w())
            .await?;
        if r.rows_affected() == 0 {
            return Err(Error::NotFound(format!("network mapping {id}")));
        }
        self.close_listeners(std::slice::from_ref(&m)).await;
        Ok(())
    }
}
