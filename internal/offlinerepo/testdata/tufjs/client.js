#!/usr/bin/env node
// An independent TUF client (tuf-js) for internal/repo's interop test.
//
// Usage: node client.js METADATA_BASE_URL TARGETS_BASE_URL METADATA_DIR TARGET_DIR TARGET_PATH
//
// METADATA_DIR must already hold the trusted root.json. The client refreshes
// (walking root rotations, then timestamp, snapshot and targets), looks up
// TARGET_PATH through the delegations, downloads the target into TARGET_DIR
// and verifies its length and hashes.
//
// Exit status:
//   0  success; stdout is one JSON line {"path","length","sha256"} computed
//      from the downloaded file
//   1  any verification or download error; stderr names the error's class
//      and message (and those of its causes)
//   2  the target is not in the repository
//   3  wrong usage
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const { Updater } = require('tuf-js');

function describe(err) {
  const lines = [];
  for (let e = err, depth = 0; e && depth < 8; e = e.cause, depth++) {
    if (e instanceof Error) {
      const cls = (e.constructor && e.constructor.name) || e.name || 'Error';
      lines.push(`${depth ? 'caused by ' : ''}${cls}: ${e.message}`);
    } else {
      lines.push(`${depth ? 'caused by ' : ''}${String(e)}`);
    }
  }
  return lines.join('\n');
}

async function main(argv) {
  if (argv.length !== 5) {
    process.stderr.write(
      'usage: node client.js METADATA_BASE_URL TARGETS_BASE_URL METADATA_DIR TARGET_DIR TARGET_PATH\n'
    );
    return 3;
  }
  const [metadataBaseUrl, targetBaseUrl, metadataDir, targetDir, targetPath] = argv;
  const updater = new Updater({
    metadataBaseUrl,
    targetBaseUrl,
    metadataDir,
    targetDir,
    // A local test server: fail fast rather than retry.
    config: { fetchRetries: 0, fetchTimeout: 10000 },
  });
  await updater.refresh();
  const info = await updater.getTargetInfo(targetPath);
  if (!info) {
    process.stderr.write(`target ${targetPath} not found\n`);
    return 2;
  }
  const file = await updater.downloadTarget(info);
  const data = fs.readFileSync(file);
  const sha256 = crypto.createHash('sha256').update(data).digest('hex');
  process.stdout.write(JSON.stringify({ path: info.path, length: data.length, sha256 }) + '\n');
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(describe(err) + '\n');
    process.exitCode = 1;
  }
);
