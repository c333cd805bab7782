#!/usr/bin/env node
// Compiles one Solidity source with solc-js (from this directory's node_modules) and prints
// {"abi": [...], "bytecode": "0x..."} for the named contract on stdout.
//
// usage: node compile.js FILE.sol CONTRACT
// The EVM target is pinned to "shanghai", the newest hardfork ganache 7 runs.
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require('solc');

const [file, contract] = process.argv.slice(2);
if (!file || !contract) {
  console.error('usage: node compile.js FILE.sol CONTRACT');
  process.exit(2);
}
const name = path.basename(file);
const input = {
  language: 'Solidity',
  sources: { [name]: { content: fs.readFileSync(file, 'utf8') } },
  settings: {
    evmVersion: 'shanghai',
    optimizer: { enabled: true, runs: 200 },
    outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object'] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === 'error');
if (errors.length > 0) {
  for (const e of errors) console.error(e.formattedMessage || e.message);
  process.exit(1);
}
const compiled = output.contracts[name] && output.contracts[name][contract];
if (!compiled) {
  console.error(`contract ${contract} not found in ${file}`);
  process.exit(1);
}
process.stdout.write(
  JSON.stringify({ abi: compiled.abi, bytecode: '0x' + compiled.evm.bytecode.object }) + '\n',
);
