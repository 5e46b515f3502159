// Checks events against the official CloudEvents 1.0 JSON schema, as the `cloudevents` npm
// package ships it compiled (an ajv validator), and against that SDK's own CloudEvent
// constructor, which also checks attribute names and extension values.
//
// Input: one JSON event per line on stdin. Output: one JSON line per input line, in order:
// {"line": 1, "valid": true, "errors": []}, the errors saying what is wrong when not valid.
"use strict";

const readline = require("node:readline");
const validateSchema = require("cloudevents/dist/schema/v1");
const { CloudEvent } = require("cloudevents");

function problems(text) {
  let event;
  try {
    event = JSON.parse(text);
  } catch (error) {
    return [`not JSON: ${error.message}`];
  }
  if (!validateSchema(event)) {
    return validateSchema.errors.map((e) => `schema: ${e.instancePath || "/"} ${e.message}`);
  }
  try {
    new CloudEvent(event, true); // strict: the SDK validates what it builds
  } catch (error) {
    return [`sdk: ${error.message} ${JSON.stringify(error.errors || [])}`];
  }
  return [];
}

async function main() {
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  let number = 0;
  for await (const text of lines) {
    number += 1;
    const errors = problems(text);
    process.stdout.write(JSON.stringify({ line: number, valid: errors.length === 0, errors }) + "\n");
  }
}

main().catch((error) => {
  process.stderr.write(`${error.stack}\n`);
  process.exit(2);
});
