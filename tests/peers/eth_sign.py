#!/usr/bin/env python3
"""Independent wallet signer for stratus tests (eth-account from PyPI).

usage: eth_sign.py KEY_HEX ADDRESS NONCE DOMAIN
Signs keccak256(ADDRESS || NONCE || DOMAIN) (the strings exactly as given) and prints JSON:
  address   the key's EIP-55 address
  sig01     0x r||s||v with v in {0,1}   (go-ethereum crypto.Sign)
  sig27     0x r||s||v with v in {27,28}
  high_s    0x r||(n-s)||(v^1)          (the malleable twin, must be refused)
"""
import json
import sys

from eth_account import Account
from eth_utils import keccak

N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def main():
    key, address, nonce, domain = sys.argv[1:5]
    digest = keccak(text=address + nonce + domain)
    sign = getattr(Account, "unsafe_sign_hash", None) or getattr(Account, "_sign_hash")
    signed = sign(digest, private_key=key)
    r, s, v = signed.r, signed.s, signed.v
    v01 = v - 27 if v >= 27 else v
    enc = lambda r_, s_, v_: "0x" + r_.to_bytes(32, "big").hex() + s_.to_bytes(32, "big").hex() + bytes([v_]).hex()
    print(json.dumps({
        "address": Account.from_key(key).address,
        "sig01": enc(r, s, v01),
        "sig27": enc(r, s, v01 + 27),
        "high_s": enc(r, N - s, v01 ^ 1),
    }))


if __name__ == "__main__":
    main()
