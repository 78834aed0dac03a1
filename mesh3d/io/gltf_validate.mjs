// Validate glTF/GLB files with the Khronos glTF-Validator and print one JSON report per line.
//
// Usage: node gltf_validate.mjs [--max-messages N] FILE...
//
// Several files per call amortise node's start-up (~0.2 s). Each output line is the validator's
// report for one file, in argument order, with two changes: the messages are sorted by severity
// (errors first) and cut to N (default 100) while numErrors/numWarnings/numInfos/numHints stay the
// full counts; and a file the validator refuses outright (not glTF/GLB at all, unreadable) gets a
// report with one error of code VALIDATOR_REJECTED instead of stopping the batch.
//
// The validator package is looked up in $MESH3D_NODE_MODULES, else in <repo>/node_modules.

import { createRequire } from 'node:module';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const nodeModules = process.env.MESH3D_NODE_MODULES || path.resolve(here, '..', '..', 'node_modules');
const require = createRequire(import.meta.url);
let validator;
try {
  validator = require(path.join(nodeModules, 'gltf-validator'));
} catch (err) {
  console.error(`gltf-validator not found in ${nodeModules}: run \`make node_modules/.installed\` ` +
    `(npm ci) in the repository, or set MESH3D_NODE_MODULES`);
  process.exit(2);
}

const args = process.argv.slice(2);
let maxMessages = 100;
if (args[0] === '--max-messages') {
  maxMessages = Number(args[1]);
  args.splice(0, 2);
}

// One report in the validator's own shape, for input it refuses to look at.
function rejected(file, reason) {
  return {
    uri: file,
    validatorVersion: validator.version(),
    issues: {
      numErrors: 1, numWarnings: 0, numInfos: 0, numHints: 0,
      messages: [{ code: 'VALIDATOR_REJECTED', message: String(reason), severity: 0 }],
      truncated: false,
    },
  };
}

async function validate(file) {
  let data;
  try {
    data = new Uint8Array(await fs.readFile(file));
  } catch (err) {
    return rejected(file, err.message);
  }
  const options = {
    uri: file,
    // 0 = unlimited: with a cap the validator also stops counting, and the counts must stay true.
    maxIssues: 0,
    writeTimestamp: false,
    // A .gltf may reference .bin buffers and images beside it (URIs are relative and %-encoded).
    externalResourceFunction: (uri) =>
      fs.readFile(path.resolve(path.dirname(file), decodeURIComponent(uri))).then((b) => new Uint8Array(b)),
  };
  let report;
  try {
    report = await validator.validateBytes(data, options);
  } catch (err) {
    return rejected(file, err);
  }
  const issues = report.issues;
  // Most severe first (the sort is stable), so a cut list still shows the errors.
  issues.messages.sort((a, b) => a.severity - b.severity);
  if (issues.messages.length > maxMessages) {
    issues.messages = issues.messages.slice(0, maxMessages);
    issues.truncated = true;
  }
  return report;
}

// Sequential on purpose: one file's bytes in memory at a time, reports in argument order.
for (const file of args) {
  process.stdout.write(JSON.stringify(await validate(file)) + '\n');
}
