//! Creating an instance (with or without port mappings): validate, charge, persist, allocate
//! ports and open them, answer, then boot in the background.

use stratus_compute::{ComposeApp, InstanceSpec, RuntimeError};
use stratus_config::Amount;

use super::mappings::MappingRequest;
use super::records::{Instance, Mapping, Status};
use super::{Compute, MONTH_MS};
use crate::billing::{EntryKind, Posting};
use crate::{Error, Result};

/// What the caller asks for.
#[derive(Debug, Clone, Default)]
pub struct SandboxRequest {
    pub name: String,
    pub spec_id: i64,
    pub image_id: i64,
    /// Months of 30 days.
    pub duration_months: i64,
    pub public_key: Option<String>,
    pub password: Option<String>,
    /// The decoded docker-compose YAML.
    pub compose: String,
    pub mappings: Vec<MappingRequest>,
}

/// Longest instance lifetime one purchase can buy.
const MAX_MONTHS: i64 = 36;

fn validate_name(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(Error::invalid(
            crate::Field::InstanceName,
            "must be 1 to 64 printable characters",
        ));
    }
    Ok(())
}

fn hash_password(pw: &str) -> Result<String> {
    let params = sha_crypt::Sha512Params::new(sha_crypt::ROUNDS_DEFAULT)
        .map_err(|e| Error::internal(format!("{e:?}")))?;
    sha_crypt::sha512_simple(pw, &params).map_err(|e| Error::internal(format!("{e:?}")))
}

impl Compute {
    /// Validates, charges `spec price × duration`, stores the instance and its mappings with their
    /// public ports already listening, and starts the boot in the background. Answers at once.
    pub async fn create_sandbox(
        &self,
        account_id: &str,
        req: SandboxRequest,
    ) -> Result<(Instance, Vec<Mapping>)> {
        let cfg = &self.inner.cfg;
        validate_name(&req.name)?;
        let spec = cfg
            .specs
            .iter()
            .find(|s| s.id == req.spec_id)
            .ok_or_else(|| Error::invalid(crate::Field::Spec, format!("no spec {}", req.spec_id)))?
            .clone();
        if !cfg.images.iter().any(|i| i.id == req.image_id) {
            return Err(Error::invalid(
                crate::Field::Image,
                format!("no image {}", req.image_id),
            ));
        }
        if !(1..=MAX_MONTHS).contains(&req.duration_months) {
            return Err(Error::invalid(
                crate::Field::Duration,
                format!("must be 1 to {MAX_MONTHS} months"),
            ));
        }
        if let Some(pk) = &req.public_key {
            if pk.len() > 16 * 1024 || pk.trim().contains('\n') {
                return Err(Error::invalid(
                    crate::Field::PublicKey,
                    "must be one OpenSSH public key line",
                ));
            }
        }
        if let Some(pw) = &req.password {
            if pw.len() > 1024 {
                return Err(Error::invalid(
                    crate::Field::InstancePassword,
                    "at most 1024 bytes",
                ));
            }
        }
        let app =
            ComposeApp::parse(&req.compose, &self.inner.policy).map_err(|e| Error::Invalid {
                field: crate::Field::Compose,
                message: e.to_string(),
            })?;
        if req.mappings.len() > cfg.max_mappings_per_instance as usize {
            return Err(Error::invalid(
                crate::Field::Mappings,
                format!(
                    "at most {} mappings per instance",
                    cfg.max_mappings_per_instance
                ),
            ));
        }
        for m in &req.mappings {
            m.validate(&app)?;
        }
        let rt = self.runtime().await?;
        let price = spec
            .price
            .checked_mul(req.duration_months as u128)
            .ok_or_else(|| Error::invalid(crate::Field::Duration, "the price overflows"))?;
        let password_hash = req
            .password
            .as_deref()
            .filter(|p| !p.is_empty())
            .map(hash_password)
            .transpose()?;

        let id = uuid::Uuid::new_v4().to_string();
        let now = self.inner.clock.now_ms();
        let expires = now + req.duration_months * MONTH_MS;
        let deadline = now + (cfg.transition_timeout_secs as i64) * 1000;

        // Ports are bound before the records commit: a port the OS refuses is never handed out.
        let _ports = self.inner.ports.lock().await;
        let mut opened: Vec<Mapping> = Vec::new();
        for m in &req.mappings {
            match self
                .open_new_mapping(&rt, account_id, &id, m, now, None)
                .await
            {
                Ok(mapping) => opened.push(mapping),
                Err(e) => {
                    self.close_listeners(&opened).await;
                    return Err(e);
                }
            }
        }
        let result: Result<()> = async {
            let mut tx = self.inner.db.w().begin().await?;
            if price > Amount::ZERO {
                self.inner
                    .billing
                    .ledger()
                    .post_in(
                        &mut tx,
                        Posting {
                            account_id,
                            kind: EntryKind::Debit,
                            amount: price,
                            reason: "sandbox",
                            reference: &format!("sandbox:{id}"),
                            memo: &format!(
                                "instance {} ({} cores, {} GiB) for {} month(s)",
                                req.name, spec.core, spec.memory, req.duration_months
                            ),
                        },
                    )
                    .await?;
            }
            sqlx::query(
                "INSERT INTO instances (id, account_id, name, spec_id, image_id, cores, memory_gib, duration_months, \
                 compose, public_key, password_hash, status, status_reason, charged, created_at, updated_at, expires_at, deadline, host) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, '', $12, $13, $13, $14, $15, $16)",
            )
            .bind(&id)
            .bind(account_id)
            .bind(req.name.trim())
            .bind(req.spec_id)
            .bind(req.image_id)
            .bind(spec.core as i64)
            .bind(spec.memory as i64)
            .bind(req.duration_months)
            .bind(&req.compose)
            .bind(req.public_key.as_deref())
            .bind(password_hash.as_deref())
            .bind(price.to_string())
            .bind(now)
            .bind(expires)
            .bind(deadline)
            .bind(&self.inner.host)
            .execute(&mut *tx)
            .await?;
            for m in &opened {
                self.insert_mapping(&mut tx, m).await?;
            }
            tx.commit().await?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            self.close_listeners(&opened).await;
            return Err(e);
        }
        drop(_ports);
        if !opened.is_empty() {
            self.inner.live.insert(id.clone(), Status::Creating);
        }
        metrics::counter!("stratus_instances_created_total").increment(1);
        let instance = self.instance(account_id, &id).await?;
        let spec = InstanceSpec {
            instance_id: id.clone(),
            app,
            cpus: spec.core as f64,
            memory_bytes: (spec.memory as u64) << 30,
            pids_limit: cfg.pids_limit,
            public_key: req.public_key.clone(),
            password: req.password.clone(),
        };
        let this = self.clone();
        tokio::spawn(async move { this.boot(spec).await });
        Ok((instance, opened))
    }

    /// Creates and starts the instance; on failure, marks it failed with the reason, refunds,
    /// and removes whatever the runtime made of it at once.
    async fn boot(&self, spec: InstanceSpec) {
        let id = spec.instance_id.clone();
        let lock = self.lock_of(&id);
        let _g = lock.lock().await;
        // Deleted while waiting for the lock: nothing to do.
        match self.instance_any(&id).await {
            Ok(Some(i)) if i.status == Status::Creating => {}
            _ => return,
        }
        let rt = match self.runtime().await {
            Ok(rt) => rt,
            Err(e) => return self.fail_and_refund(&id, &e.to_string()).await,
        };
        let result: std::result::Result<(), RuntimeError> = async {
            rt.create(&spec).await?;
            rt.start(&id).await
        }
        .await;
        match result {
            Ok(()) => {
                match self
                    .transition(&id, &[Status::Creating], Status::Running, "")
                    .await
                {
                    Ok(true) => {}
                    // Deleted meanwhile: the delete task (waiting for this lock) removes it.
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(instance = %id, error = %e, "cannot record the running state")
                    }
                }
            }
            Err(e) => {
                tracing::warn!(instance = %id, error = %e, "instance failed to boot");
                // The money first: the runtime's leftovers are removed right after, and by the
                // orphan sweep should that fail (the record says Failed).
                self.fail_and_refund(&id, &super::reasons::public_reason(&id, &e))
                    .await;
                self.remove_failed(&rt, &id).await;
            }
        }
    }

    /// Removes the runtime objects (containers, network, volumes, resource group) of an
    /// instance that failed; a failure is logged and left to the orphan sweep.
    pub(super) async fn remove_failed(
        &self,
        rt: &std::sync::Arc<dyn stratus_compute::Runtime>,
        id: &str,
    ) {
        if let Err(e) = rt.remove(id).await {
            tracing::warn!(instance = %id, error = %e, "cannot remove a failed instance yet; the sweeper retries");
        }
    }

    /// Marks a never-started (`Creating`) instance failed, refunds its charge and closes its
    /// mappings, in one transaction: a crash leaves it `Creating` with its charge, and the next
    /// start fails and refunds it. The refund's ledger reference (`refund:<id>`) is applied at
    /// most once, so running this again never pays twice.
    pub(super) async fn fail_and_refund(&self, id: &str, reason: &str) {
        let lock = self.state_lock(id);
        let _state = lock.lock().await;
        let result: Result<()> = async {
            let Some(i) = self.instance_any(id).await? else {
                return Ok(());
            };
            let mut tx = self.inner.db.w().begin().await?;
            let now = self.inner.clock.now_ms();
            let r = sqlx::query(
                "UPDATE instances SET status = 10, status_reason = $1, updated_at = $2, deadline = NULL \
                 WHERE id = $3 AND status = 0",
            )
            .bind(reason)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            if r.rows_affected() == 0 {
                return Ok(());
            }
            stratus_compute::crashpoint::reached("compute.refund.before_credit");
            if i.charged > Amount::ZERO {
                self.inner
                    .billing
                    .ledger()
                    .post_in(
                        &mut tx,
                        Posting {
                            account_id: &i.account_id,
                            kind: EntryKind::Credit,
                            amount: i.charged,
                            reason: "refund",
                            reference: &format!("refund:{id}"),
                            memo: &format!("instance {} failed: {reason}", i.name),
                        },
                    )
                    .await?;
            }
            let maps = self.delete_mapping_rows(&mut tx, id).await?;
            tx.commit().await?;
            tracing::info!(instance = %id, %reason, "instance status: failed (refunded)");
            self.close_listeners(&maps).await;
            self.inner.live.remove(id);
            self.inner.changed.notify_waiters();
            metrics::counter!("stratus_instances_failed_total").increment(1);
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::error!(instance = %id, error = %e, "cannot record a failed boot; the sweeper retries");
        }
    }
}
