// Cross-checks stratus-unixfs against the IPFS project's JS importer (ipfs-unixfs-importer).
//
// For random sizes (many near chunk and tree-level boundaries) and random contents, it writes
// a temporary file, computes its CID with the JS importer under each named profile, runs the
// crate's `cid` example on the same file, and compares. Not part of `cargo test`.
//
// Usage (from this directory):
//   npm install
//   cargo build --release -p stratus-unixfs --example cid
//   node crosscheck.mjs [cases] [seed]

import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { MemoryBlockstore } from 'blockstore-core/memory'

const here = fileURLToPath(new URL('.', import.meta.url))
const cidBin = process.env.CID_BIN ?? join(here, '../../../../target/release/examples/cid')

const profiles = {
  memo: { chunk: 253952, links: 174, cidVersion: 1, rawLeaves: true },
  kubo: { chunk: 262144, links: 174, cidVersion: 1, rawLeaves: true },
  'kubo-v0': { chunk: 262144, links: 174, cidVersion: 0, rawLeaves: false },
  'unixfs-v1-2025': { chunk: 1048576, links: 1024, cidVersion: 1, rawLeaves: true }
}

// xorshift32, so runs are reproducible from the seed.
let state = Number(process.argv[3] ?? Date.now()) >>> 0 || 1
const seed = state
function rand () {
  state ^= state << 13; state >>>= 0
  state ^= state >>> 17
  state ^= state << 5; state >>>= 0
  return state / 4294967296
}
const randInt = (n) => Math.floor(rand() * n)

function pickSize (p) {
  const around = [0, 1, p.chunk, 2 * p.chunk, p.chunk * p.links]
  switch (randInt(3)) {
    case 0: return Math.max(0, around[randInt(around.length)] + randInt(5) - 2)
    case 1: return randInt(3 * p.chunk)
    default: return randInt(p.chunk * (p.links + 2))
  }
}

function content (size) {
  const buf = Buffer.alloc(size)
  switch (randInt(3)) {
    case 0: break // zeros: duplicate leaves
    case 1: for (let i = 0; i < size; i++) buf[i] = randInt(256); break
    default: { // a short repeated pattern
      const period = 1 + randInt(1000)
      const pattern = Buffer.from(Array.from({ length: period }, () => randInt(256)))
      for (let i = 0; i < size; i += period) pattern.copy(buf, i)
    }
  }
  return buf
}

async function jsCid (p, bytes) {
  const options = {
    cidVersion: p.cidVersion,
    rawLeaves: p.rawLeaves,
    leafType: 'file',
    reduceSingleLeafToSelf: true,
    chunker: fixedSize({ chunkSize: p.chunk }),
    layout: balanced({ maxChildrenPerNode: p.links })
  }
  let last
  for await (const entry of importer([{ content: bytes }], new MemoryBlockstore(), options)) last = entry
  return last.cid.toString()
}

const cases = Number(process.argv[2] ?? 40)
const dir = mkdtempSync(join(tmpdir(), 'unixfs-crosscheck-'))
let failures = 0
try {
  for (let i = 0; i < cases; i++) {
    const name = Object.keys(profiles)[randInt(4)]
    const p = profiles[name]
    const size = pickSize(p)
    const bytes = content(size)
    const file = join(dir, 'input')
    writeFileSync(file, bytes)
    const expected = await jsCid(p, bytes)
    const got = execFileSync(cidBin, [file, name], { stdio: ['ignore', 'pipe', 'ignore'] })
      .toString().split(/\s+/)[0]
    const ok = got === expected
    if (!ok) failures++
    console.log(`${ok ? 'ok  ' : 'FAIL'} ${name} size=${size} js=${expected} rust=${got}`)
  }
} finally {
  rmSync(dir, { recursive: true, force: true })
}
console.log(`${cases - failures}/${cases} agree (seed ${seed})`)
process.exit(failures === 0 ? 0 : 1)
