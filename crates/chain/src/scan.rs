//! Deposit extraction and the confirmation rule, as pure functions (no I/O, no runtime).
//!
//! A *deposit* is a value transfer to the deposit address: for the native coin, a successful
//! transaction whose `to` is the deposit address; for an ERC-20 token, a
//! `Transfer(address,address,uint256)` event of the configured contract whose `to` is the deposit
//! address. Zero-value transfers and transfers from the deposit address to itself are ignored.
//! Anything that looks like a deposit but cannot be credited safely (an amount above `u128`, a
//! malformed event, a receipt without status) becomes an [`Anomaly`]: reported, never truncated or
//! guessed. Native value moved by contract-internal calls (no top-level transaction to the deposit
//! address) is not seen.

use std::collections::{HashMap, HashSet};
use std::ops::RangeInclusive;

use alloy_primitives::{b256, Address, B256, U256};

use crate::encoding::{address_from_topic, u256_from_word};
use crate::rpc::{Block, Log, Receipt, Transaction};

/// `keccak256("Transfer(address,address,uint256)")`, topic 0 of an ERC-20 transfer event.
pub const TRANSFER_TOPIC: B256 =
    b256!("0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef");

/// A confirmed transfer to the deposit address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Deposit {
    /// Unique and stable identity of the transfer: `0x<txhash>` for the native coin,
    /// `0x<txhash>:<logIndex>` (log index in decimal) for an ERC-20 event; lower-case hex.
    pub reference: String,
    /// The sender (the transaction's `from`, or the event's `from` argument).
    pub from: Address,
    /// Amount in the asset's smallest unit.
    pub amount: u128,
    pub block_number: u64,
    pub block_hash: [u8; 32],
}

/// Something that looked like a deposit but cannot be credited as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    /// Same form as [`Deposit::reference`].
    pub reference: String,
    /// The sender, when it could be read.
    pub from: Option<Address>,
    pub block_number: u64,
    pub block_hash: [u8; 32],
    pub kind: AnomalyKind,
}

/// Why an [`Anomaly`] was not a deposit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnomalyKind {
    /// The amount does not fit in `u128` (it is kept whole here, never truncated).
    AmountTooLarge { amount: U256 },
    /// A `Transfer` event of the token to the deposit address that is not a well-formed ERC-20
    /// event (wrong number of topics, dirty address padding, data not one 32-byte word).
    MalformedTransfer { reason: String },
    /// A receipt without a `status` (pre-Byzantium) or with a value other than 0 or 1.
    UnknownReceiptStatus { status: Option<u64> },
}

impl std::fmt::Display for Anomaly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} in block {}: ", self.reference, self.block_number)?;
        match &self.kind {
            AnomalyKind::AmountTooLarge { amount } => {
                write!(f, "amount {amount} does not fit in 128 bits")
            }
            AnomalyKind::MalformedTransfer { reason } => write!(f, "malformed transfer: {reason}"),
            AnomalyKind::UnknownReceiptStatus { status } => {
                write!(f, "receipt status {status:?} is neither 0 nor 1")
            }
        }
    }
}

/// What a scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanOutput {
    pub deposits: Vec<Deposit>,
    pub anomalies: Vec<Anomaly>,
}

impl ScanOutput {
    pub fn extend(&mut self, other: ScanOutput) {
        self.deposits.extend(other.deposits);
        self.anomalies.extend(other.anomalies);
    }
}

/// The node's answers do not fit together (a reorganization under our feet, or a broken node).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("no receipt for transaction {0}")]
    MissingReceipt(B256),
    #[error("receipt of {tx} is in block {receipt_block}, the scanned block is {block}")]
    ReceiptBlockMismatch {
        tx: B256,
        block: B256,
        receipt_block: B256,
    },
    #[error("log {tx}:{log_index} is in block {block}, outside the requested {from}..={to}")]
    LogOutOfRange {
        tx: B256,
        log_index: u64,
        block: u64,
        from: u64,
        to: u64,
    },
}

/// The reference of a native transfer.
pub fn native_reference(tx: &B256) -> String {
    tx.to_string()
}

/// The reference of an ERC-20 transfer event.
pub fn log_reference(tx: &B256, log_index: u64) -> String {
    format!("{tx}:{log_index}")
}

/// The transactions of `block` that send a non-zero value to `deposit` from another address:
/// whether each one counts depends on its receipt ([`native_deposits`]).
pub fn native_candidates<'a>(block: &'a Block, deposit: &Address) -> Vec<&'a Transaction> {
    block
        .transactions
        .iter()
        .filter(|tx| tx.to.as_ref() == Some(deposit) && tx.from != *deposit && !tx.value.is_zero())
        .collect()
}

/// The native deposits of `block`, given the receipts of its [`native_candidates`] by hash.
///
/// A candidate counts only if its receipt has status 1 and lies in this very block.
pub fn native_deposits(
    block: &Block,
    deposit: &Address,
    receipts: &HashMap<B256, Receipt>,
) -> Result<ScanOutput, ScanError> {
    let mut out = ScanOutput::default();
    for tx in native_candidates(block, deposit) {
        let receipt = receipts
            .get(&tx.hash)
            .ok_or(ScanError::MissingReceipt(tx.hash))?;
        if receipt.block_hash != block.hash {
            return Err(ScanError::ReceiptBlockMismatch {
                tx: tx.hash,
                block: block.hash,
                receipt_block: receipt.block_hash,
            });
        }
        let reference = native_reference(&tx.hash);
        let anomaly = |kind| Anomaly {
            reference: reference.clone(),
            from: Some(tx.from),
            block_number: block.number,
            block_hash: block.hash.0,
            kind,
        };
        match receipt.status {
            Some(1) => {}
            Some(0) => continue, // reverted: no value moved
            status => {
                out.anomalies
                    .push(anomaly(AnomalyKind::UnknownReceiptStatus { status }));
                continue;
            }
        }
        match u128::try_from(tx.value).ok() {
            Some(amount) => out.deposits.push(Deposit {
                reference,
                from: tx.from,
                amount,
                block_number: block.number,
                block_hash: block.hash.0,
            }),
            None => out
                .anomalies
                .push(anomaly(AnomalyKind::AmountTooLarge { amount: tx.value })),
        }
    }
    Ok(out)
}

/// The ERC-20 deposits among `logs`, which were asked for the inclusive block `range`.
///
/// Logs of other contracts, other events, other recipients and removed logs are skipped, so the
/// node's filtering is checked, not trusted.
pub fn erc20_deposits(
    logs: &[Log],
    token: &Address,
    deposit: &Address,
    range: RangeInclusive<u64>,
) -> Result<ScanOutput, ScanError> {
    let mut out = ScanOutput::default();
    for log in logs {
        if log.removed || log.address != *token || log.topics.first() != Some(&TRANSFER_TOPIC) {
            continue;
        }
        if !range.contains(&log.block_number) {
            return Err(ScanError::LogOutOfRange {
                tx: log.transaction_hash,
                log_index: log.log_index,
                block: log.block_number,
                from: *range.start(),
                to: *range.end(),
            });
        }
        match decode_transfer(log) {
            Ok((from, to, value)) => {
                if to != *deposit || from == *deposit || value.is_zero() {
                    continue;
                }
                let reference = log_reference(&log.transaction_hash, log.log_index);
                match u128::try_from(value).ok() {
                    Some(amount) => out.deposits.push(Deposit {
                        reference,
                        from,
                        amount,
                        block_number: log.block_number,
                        block_hash: log.block_hash.0,
                    }),
                    None => out.anomalies.push(Anomaly {
                        reference,
                        from: Some(from),
                        block_number: log.block_number,
                        block_hash: log.block_hash.0,
                        kind: AnomalyKind::AmountTooLarge { amount: value },
                    }),
                }
            }
            Err(reason) => {
                // Only worth reporting when it may have been meant for us.
                let to_us = log.topics.get(2) == Some(&deposit.into_word());
                if to_us {
                    out.anomalies.push(Anomaly {
                        reference: log_reference(&log.transaction_hash, log.log_index),
                        from: log.topics.get(1).and_then(address_from_topic),
                        block_number: log.block_number,
                        block_hash: log.block_hash.0,
                        kind: AnomalyKind::MalformedTransfer { reason },
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Reads `(from, to, value)` from an ERC-20 `Transfer` event.
pub fn decode_transfer(log: &Log) -> Result<(Address, Address, U256), String> {
    if log.topics.first() != Some(&TRANSFER_TOPIC) {
        return Err("not a Transfer event".into());
    }
    if log.topics.len() != 3 {
        return Err(format!(
            "{} topics, an ERC-20 Transfer has 3 (4 is an ERC-721 transfer)",
            log.topics.len()
        ));
    }
    let from = address_from_topic(&log.topics[1])
        .ok_or_else(|| "from topic is not a padded address".to_string())?;
    let to = address_from_topic(&log.topics[2])
        .ok_or_else(|| "to topic is not a padded address".to_string())?;
    let value = u256_from_word(&log.data).ok_or_else(|| {
        format!(
            "data is {} bytes, expected one 32-byte word",
            log.data.len()
        )
    })?;
    Ok((from, to, value))
}

/// Keeps the first deposit of each reference, in order (a node may answer a log twice).
pub fn dedup_deposits(deposits: Vec<Deposit>) -> Vec<Deposit> {
    let mut seen = HashSet::new();
    deposits
        .into_iter()
        .filter(|d| seen.insert(d.reference.clone()))
        .collect()
}

/// Keeps the first anomaly of each reference, in order.
pub fn dedup_anomalies(anomalies: Vec<Anomaly>) -> Vec<Anomaly> {
    let mut seen = HashSet::new();
    anomalies
        .into_iter()
        .filter(|a| seen.insert(a.reference.clone()))
        .collect()
}

/// The confirmation rule: the highest block that may be processed when the chain head is `head`.
///
/// Block `N` is processed once `head >= N + confirmations - 1`, that is once `N` and the
/// `confirmations - 1` blocks on top of it exist. With 1 confirmation the head block itself
/// counts; with 12, block `N` waits for `N + 11`. `None` while the chain is shorter than that.
/// `confirmations` must be at least 1.
pub fn safe_head(head: u64, confirmations: u64) -> Option<u64> {
    debug_assert!(confirmations >= 1);
    let confirmations = confirmations.max(1);
    (u128::from(head) + 1)
        .checked_sub(u128::from(confirmations))
        .map(|n| n as u64)
}

/// The next inclusive range of blocks to process: from just after `cursor` (or from
/// `start_block` when there is no cursor yet) up to `safe_head`, at most `max_blocks` long.
/// `None` when nothing is ready.
pub fn next_range(
    cursor: Option<u64>,
    start_block: u64,
    safe_head: Option<u64>,
    max_blocks: u64,
) -> Option<RangeInclusive<u64>> {
    let from = match cursor {
        Some(c) => c.checked_add(1)?,
        None => start_block,
    };
    let safe = safe_head?;
    if from > safe {
        return None;
    }
    let to = safe.min(from.saturating_add(max_blocks.max(1) - 1));
    Some(from..=to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::parse_u256;

    fn addr(b: u8) -> Address {
        Address::repeat_byte(b)
    }
    fn h(b: u8) -> B256 {
        B256::repeat_byte(b)
    }

    fn transfer_log(token: Address, from: Address, to: Address, value: U256, idx: u64) -> Log {
        Log {
            address: token,
            topics: vec![TRANSFER_TOPIC, from.into_word(), to.into_word()],
            data: value.to_be_bytes::<32>().to_vec(),
            block_number: 10,
            block_hash: h(0xbb),
            transaction_hash: h(0xaa),
            log_index: idx,
            removed: false,
        }
    }

    #[test]
    fn transfer_topic_is_the_event_signature_hash() {
        assert_eq!(
            TRANSFER_TOPIC,
            alloy_primitives::keccak256(b"Transfer(address,address,uint256)")
        );
    }

    #[test]
    fn erc20_logs() {
        let (token, other_token, dep, alice) = (addr(1), addr(2), addr(3), addr(4));
        let logs = vec![
            transfer_log(token, alice, dep, U256::from(500), 0),
            // another recipient
            transfer_log(token, alice, addr(9), U256::from(7), 1),
            // another token to the deposit address
            transfer_log(other_token, alice, dep, U256::from(8), 2),
            // zero value
            transfer_log(token, alice, dep, U256::ZERO, 3),
            // self transfer
            transfer_log(token, dep, dep, U256::from(9), 4),
            // removed by a reorg
            Log {
                removed: true,
                ..transfer_log(token, alice, dep, U256::from(10), 5)
            },
            // above u128
            transfer_log(
                token,
                alice,
                dep,
                parse_u256("0x100000000000000000000000000000000").unwrap(),
                6,
            ),
            // exactly u128::MAX is fine
            transfer_log(token, alice, dep, U256::from(u128::MAX), 7),
        ];
        let out = erc20_deposits(&logs, &token, &dep, 10..=10).unwrap();
        assert_eq!(
            out.deposits,
            vec![
                Deposit {
                    reference: format!("{}:0", h(0xaa)),
                    from: alice,
                    amount: 500,
                    block_number: 10,
                    block_hash: [0xbb; 32],
                },
                Deposit {
                    reference: format!("0x{}:7", "aa".repeat(32)),
                    from: alice,
                    amount: u128::MAX,
                    block_number: 10,
                    block_hash: [0xbb; 32],
                }
            ]
        );
        assert_eq!(out.anomalies.len(), 1);
        let a = &out.anomalies[0];
        assert_eq!(a.reference, format!("{}:6", h(0xaa)));
        assert_eq!(a.from, Some(alice));
        match &a.kind {
            AnomalyKind::AmountTooLarge { amount } => {
                assert_eq!(
                    amount.to_string(),
                    "340282366920938463463374607431768211456"
                )
            }
            k => panic!("{k:?}"),
        }
        assert!(a
            .to_string()
            .contains("340282366920938463463374607431768211456"));
    }

    #[test]
    fn malformed_transfer_events() {
        let (token, dep, alice) = (addr(1), addr(3), addr(4));
        let good = transfer_log(token, alice, dep, U256::from(5), 0);
        let short_data = Log {
            data: vec![5],
            ..good.clone()
        };
        let mut nft = good.clone();
        nft.topics.push(h(0)); // ERC-721: tokenId indexed
        let mut dirty = good.clone();
        dirty.topics[1].0[0] = 0xff;
        let mut not_to_us = short_data.clone();
        not_to_us.topics[2] = addr(9).into_word();
        let out =
            erc20_deposits(&[short_data, nft, dirty, not_to_us], &token, &dep, 0..=100).unwrap();
        assert!(out.deposits.is_empty());
        assert_eq!(out.anomalies.len(), 3);
        assert!(out
            .anomalies
            .iter()
            .all(|a| matches!(a.kind, AnomalyKind::MalformedTransfer { .. })));
        assert_eq!(out.anomalies[2].from, None);
        assert!(decode_transfer(&good).is_ok());
    }

    #[test]
    fn logs_outside_the_range_are_an_error() {
        let (token, dep) = (addr(1), addr(3));
        let log = transfer_log(token, addr(4), dep, U256::from(5), 0);
        assert!(matches!(
            erc20_deposits(&[log], &token, &dep, 11..=20),
            Err(ScanError::LogOutOfRange { block: 10, .. })
        ));
    }

    fn tx(hash: u8, from: Address, to: Option<Address>, value: u128) -> Transaction {
        Transaction {
            hash: h(hash),
            from,
            to,
            value: U256::from(value),
        }
    }

    fn receipt(hash: u8, block: B256, status: Option<u64>) -> (B256, Receipt) {
        (
            h(hash),
            Receipt {
                transaction_hash: h(hash),
                block_hash: block,
                block_number: 5,
                status,
            },
        )
    }

    #[test]
    fn native_transfers() {
        let (dep, alice, bob) = (addr(3), addr(4), addr(5));
        let mut huge = tx(6, bob, Some(dep), 0);
        huge.value = U256::MAX;
        let block = Block {
            number: 5,
            hash: h(0xbb),
            parent_hash: h(0xba),
            transactions: vec![
                tx(1, alice, Some(dep), 1_000),
                tx(2, alice, Some(bob), 2_000), // elsewhere
                tx(3, alice, None, 3_000),      // contract creation
                tx(4, bob, Some(dep), 4_000),   // reverted
                tx(5, alice, Some(dep), 0),     // zero
                huge,                           // > u128
                tx(7, dep, Some(dep), 7_000),   // self
                tx(8, bob, Some(dep), 8_000),   // no status
            ],
        };
        let cands: Vec<u8> = native_candidates(&block, &dep)
            .iter()
            .map(|t| t.hash.0[0])
            .collect();
        assert_eq!(cands, vec![1, 4, 6, 8]);
        let receipts: HashMap<_, _> = [
            receipt(1, h(0xbb), Some(1)),
            receipt(4, h(0xbb), Some(0)),
            receipt(6, h(0xbb), Some(1)),
            receipt(8, h(0xbb), None),
        ]
        .into_iter()
        .collect();
        let out = native_deposits(&block, &dep, &receipts).unwrap();
        assert_eq!(
            out.deposits,
            vec![Deposit {
                reference: h(1).to_string(),
                from: alice,
                amount: 1_000,
                block_number: 5,
                block_hash: [0xbb; 32],
            }]
        );
        let kinds: Vec<_> = out.anomalies.iter().map(|a| &a.kind).collect();
        assert!(matches!(kinds[0], AnomalyKind::AmountTooLarge { .. }));
        assert_eq!(
            kinds[1],
            &AnomalyKind::UnknownReceiptStatus { status: None }
        );

        let mut missing = receipts.clone();
        missing.remove(&h(4));
        assert_eq!(
            native_deposits(&block, &dep, &missing),
            Err(ScanError::MissingReceipt(h(4)))
        );
        let mut moved = receipts.clone();
        moved.insert(h(1), receipt(1, h(0xcc), Some(1)).1);
        assert!(matches!(
            native_deposits(&block, &dep, &moved),
            Err(ScanError::ReceiptBlockMismatch { .. })
        ));
    }

    #[test]
    fn dedup_keeps_first_of_each_reference() {
        let d = |r: &str, amount| Deposit {
            reference: r.into(),
            from: addr(1),
            amount,
            block_number: 1,
            block_hash: [0; 32],
        };
        let out = dedup_deposits(vec![d("a", 1), d("b", 2), d("a", 1), d("c", 3), d("b", 2)]);
        let refs: Vec<_> = out.iter().map(|d| d.reference.as_str()).collect();
        assert_eq!(refs, ["a", "b", "c"]);
    }

    #[test]
    fn confirmation_rule() {
        // 1 confirmation: the head itself counts.
        assert_eq!(safe_head(100, 1), Some(100));
        // 3 confirmations: block 98 is processed once 99 and 100 exist.
        assert_eq!(safe_head(100, 3), Some(98));
        assert_eq!(safe_head(1, 2), Some(0));
        assert_eq!(safe_head(1, 3), None);
        assert_eq!(safe_head(0, 1), Some(0));
        assert_eq!(safe_head(u64::MAX, 1), Some(u64::MAX));
    }

    #[test]
    fn ranges() {
        // No cursor: start at start_block.
        assert_eq!(next_range(None, 0, Some(10), 500), Some(0..=10));
        assert_eq!(next_range(None, 5, Some(10), 500), Some(5..=10));
        assert_eq!(next_range(None, 11, Some(10), 500), None);
        // Cursor: resume just after it, bounded batches.
        assert_eq!(next_range(Some(10), 0, Some(10), 500), None);
        assert_eq!(next_range(Some(10), 0, Some(2000), 500), Some(11..=510));
        assert_eq!(next_range(Some(510), 0, Some(600), 500), Some(511..=600));
        assert_eq!(next_range(Some(3), 0, None, 500), None);
        assert_eq!(next_range(Some(u64::MAX), 0, Some(u64::MAX), 500), None);
        assert_eq!(next_range(Some(1), 0, Some(9), 1), Some(2..=2));
        assert_eq!(next_range(Some(1), 0, Some(9), 0), Some(2..=2));
    }
}
