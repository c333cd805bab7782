// Independent CAR check with the IPFS project's own libraries (@ipld/car, multiformats):
// reads a CARv1 file, checks every block's sha2-256 against its CID, and prints
// {"roots":[…],"blocks":[…cids in order…],"bytes":<total block bytes>} — or exits 1 on a bad block.
import fs from 'node:fs'
import { CarBlockIterator } from '@ipld/car/iterator'
import { sha256 } from 'multiformats/hashes/sha2'
import { equals } from 'multiformats/bytes'

const path = process.argv[2]
const iter = await CarBlockIterator.fromIterable(fs.createReadStream(path))
const roots = (await iter.getRoots()).map(String)
const blocks = []
let bytes = 0
for await (const { cid, bytes: data } of iter) {
  if (cid.multihash.code !== sha256.code) { console.error(`unexpected hash in ${cid}`); process.exit(1) }
  const digest = await sha256.digest(data)
  if (!equals(digest.bytes, cid.multihash.bytes)) { console.error(`hash mismatch for ${cid}`); process.exit(1) }
  blocks.push(String(cid))
  bytes += data.length
}
console.log(JSON.stringify({ roots, blocks, bytes }))
