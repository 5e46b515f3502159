#!/usr/bin/env node
// The order choreography's shipping service, in plain Node.js: no sagakit code, only npm's
// `redis` client. It is written from docs/wire-format.md alone, to show that the page is
// enough for a service in another language to take part in a sagakit choreography, and
// tests/integration/test_foreign_shipping.py runs it in place of the Python service.
//
// It hears `StockReserved` and books a parcel: `ShipmentCreated`, with the reservation's
// correlationid and the reservation's id as its causationid. Every other event is
// acknowledged and ignored. Its state (an inbox of the event ids it handled, its shipments,
// and an outbox of the events it has yet to publish) is one JSON file, replaced atomically:
// that file is its "local transaction", so a redelivered event has no second effect and an
// event committed is published even if the process dies in between.
//
//   SHIPPING_REDIS_URL=redis://127.0.0.1:6379/0 SHIPPING_STREAM=orders \
//     SHIPPING_STATE=shipping.json node shipping.js
//
// Every setting is an environment variable or the option after it: SHIPPING_REDIS_URL
// (--redis-url), SHIPPING_STREAM (--stream), SHIPPING_GROUP (--group, `shipping`),
// SHIPPING_SOURCE (--source, the `source` of its events), SHIPPING_STATE (--state, the
// JSON file), SHIPPING_REDELIVER_AFTER (--redeliver-after, seconds), SHIPPING_MAX_ATTEMPTS
// (--max-attempts). It prints `ready <group>` on stdout once its consumer group exists
// (events published from then on reach it), logs to stderr, and stops on SIGTERM or
// SIGINT: the event in hand is finished, the others it fetched are handed back.

import { randomBytes, randomUUID } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";

import { RESP_TYPES, createClient } from "redis";

// --------------------------------------------------------------------------- settings

const { values: options } = parsedArguments({
  "redis-url": { type: "string", default: process.env.SHIPPING_REDIS_URL },
  stream: { type: "string", default: process.env.SHIPPING_STREAM ?? "orders" },
  group: { type: "string", default: process.env.SHIPPING_GROUP ?? "shipping" },
  source: { type: "string", default: process.env.SHIPPING_SOURCE ?? "node-shipping" },
  state: { type: "string", default: process.env.SHIPPING_STATE ?? "shipping-state.json" },
  "redeliver-after": { type: "string", default: process.env.SHIPPING_REDELIVER_AFTER ?? "30" },
  "max-attempts": { type: "string", default: process.env.SHIPPING_MAX_ATTEMPTS ?? "5" },
});

function parsedArguments(options) {
  try {
    return parseArgs({ options });
  } catch (error) {
    return fail(error.message);
  }
}

const NAME = /^[A-Za-z0-9_-]{1,100}$/; // stream and group names, as the page allows them
const settings = {
  url: options["redis-url"] ?? "redis://127.0.0.1:6379/0",
  stream: options.stream,
  group: options.group,
  source: options.source,
  statePath: path.resolve(options.state),
  redeliverMs: Math.round(Number(options["redeliver-after"]) * 1000),
  maxAttempts: Number(options["max-attempts"]),
  prefetch: 10,
};
for (const what of ["stream", "group"]) {
  if (!NAME.test(settings[what])) fail(`invalid ${what} name ${JSON.stringify(settings[what])}`);
}
if (!(settings.redeliverMs > 0)) fail("--redeliver-after must be a positive number of seconds");
if (!(Number.isInteger(settings.maxAttempts) && settings.maxAttempts >= 1)) {
  fail("--max-attempts must be a whole number, at least 1");
}
const EVENTS = `sagakit:${settings.stream}`; // the stream's key
const DEAD = `sagakit:${settings.stream}.dead`; // its dead letters
const CONSUMER = `${os.hostname()}-${process.pid}-${randomBytes(4).toString("hex")}`;
const BLOCK_MS = Math.min(2000, Math.floor(settings.redeliverMs / 2)); // one read's wait

// --------------------------------------------------------------------------- logging

function log(level, message) {
  const at = new Date().toISOString();
  process.stderr.write(`${at} shipping.js[${process.pid}] ${level} ${message}\n`);
}

function fail(message) {
  process.stderr.write(`error: ${message}\n`);
  process.exit(2);
}

function redacted(url) {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "***";
    return parsed.toString();
  } catch {
    return "(an unreadable URL)";
  }
}

// --------------------------------------------------------------------------- the event envelope

const REQUIRED = ["id", "source", "type", "time", "correlationid"];
const OPTIONAL_TEXT = ["causationid", "traceparent", "datacontenttype", "dataschema", "subject"];
const KNOWN = new Set(["specversion", ...REQUIRED, ...OPTIONAL_TEXT, "data"]);
const RFC3339 =
  /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-](\d{2}):(\d{2}))$/;
const JSON_MEDIA =
  /^application\/([A-Za-z0-9!#$&^_.+-]+\+)?json\s*(;\s*charset\s*=\s*"?utf-8"?\s*)?$/i;
const EXTENSION_NAME = /^[a-z0-9]{1,20}$/;

class MalformedEvent extends Error {}

/** The CloudEvent in `raw` (bytes), or MalformedEvent saying what is wrong with it. */
function parseEvent(raw) {
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(raw);
  } catch {
    throw new MalformedEvent("not UTF-8");
  }
  let parsed;
  try {
    parsed = JSON.parse(text); // refuses NaN and Infinity, which are not JSON
  } catch (error) {
    throw new MalformedEvent(`not JSON: ${error.message}`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new MalformedEvent("not a JSON object");
  }
  const event = {};
  for (const [name, value] of Object.entries(parsed)) {
    if (value !== null) event[name] = value; // a null attribute counts as absent
  }
  const label = `event ${JSON.stringify(event.id)} (${event.type})`;
  if (event.specversion !== "1.0") {
    const version = JSON.stringify(event.specversion);
    throw new MalformedEvent(`${label}: specversion ${version}, not "1.0"`);
  }
  const missing = REQUIRED.filter((name) => typeof event[name] !== "string" || !event[name]);
  if (missing.length) {
    throw new MalformedEvent(`${label}: missing required attribute(s) ${missing.join(", ")}`);
  }
  for (const name of OPTIONAL_TEXT) {
    if (name in event && (typeof event[name] !== "string" || !event[name])) {
      throw new MalformedEvent(`${label}: ${name} must be a non-empty string`);
    }
  }
  if (!validTime(event.time)) {
    throw new MalformedEvent(`${label}: time ${JSON.stringify(event.time)} is not RFC 3339`);
  }
  if ("datacontenttype" in event && !JSON_MEDIA.test(event.datacontenttype)) {
    throw new MalformedEvent(`${label}: datacontenttype ${event.datacontenttype} is not JSON`);
  }
  if ("data_base64" in event) {
    throw new MalformedEvent(`${label}: data_base64 is not supported`);
  }
  for (const [name, value] of Object.entries(event)) {
    if (KNOWN.has(name)) continue;
    if (!EXTENSION_NAME.test(name)) {
      throw new MalformedEvent(`${label}: ${JSON.stringify(name)} is not an attribute name`);
    }
    const int32 = Number.isInteger(value) && value >= -(2 ** 31) && value < 2 ** 31;
    if (!(typeof value === "string" || typeof value === "boolean" || int32)) {
      throw new MalformedEvent(`${label}: extension ${name} is not a string, int32 or boolean`);
    }
  }
  if (!("data" in event)) event.data = null;
  return event;
}

function validTime(text) {
  const match = RFC3339.exec(text);
  if (!match) return false;
  const [year, month, day, hour, minute, second] = match.slice(1, 7).map(Number);
  if (year < 1 || month < 1 || month > 12 || hour > 23 || minute > 59 || second > 59) {
    return false;
  }
  if (match[9] !== undefined && (Number(match[9]) > 23 || Number(match[10]) > 59)) return false;
  const days = new Date(Date.UTC(2000, month, 0)).getUTCDate(); // 29 for February
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  return day >= 1 && day <= (month === 2 && !leap ? 28 : days);
}

/** A new event caused by `cause`: its saga's correlationid, its id as causationid. */
function reply(cause, type, data) {
  return {
    specversion: "1.0",
    id: randomUUID(),
    source: settings.source,
    type,
    time: new Date().toISOString(), // when it is emitted, not when it is published
    datacontenttype: "application/json",
    correlationid: cause.correlationid,
    causationid: cause.id,
    data,
  };
}

// --------------------------------------------------------------------------- local state

/** The inbox (event id -> what handling it did), the shipments, and the outbox. */
let state = load();

function load() {
  try {
    return JSON.parse(fs.readFileSync(settings.statePath, "utf8"));
  } catch (error) {
    if (error.code !== "ENOENT") throw error;
    return { handled: {}, shipments: {}, outbox: [] };
  }
}

/** Apply `change` to a copy of the state and make it durable at once, or not at all. */
function commit(change) {
  const next = structuredClone(state);
  change(next);
  const temporary = `${settings.statePath}.${process.pid}.tmp`;
  const fd = fs.openSync(temporary, "w");
  try {
    fs.writeSync(fd, JSON.stringify(next, null, 1));
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(temporary, settings.statePath);
  state = next;
}

// --------------------------------------------------------------------------- the handlers

const HANDLERS = {
  StockReserved(event, tx) {
    const { order_id: orderId, address } = event.data ?? {};
    if (typeof orderId !== "string" || typeof address !== "string") {
      throw new Error("StockReserved without a string order_id and address");
    }
    const shipmentId = `shp_${randomBytes(6).toString("hex")}`;
    tx.shipments[shipmentId] = { order_id: orderId, address, event_id: event.id };
    tx.outbox.push(reply(event, "ShipmentCreated", { order_id: orderId, shipment_id: shipmentId }));
    return shipmentId;
  },
};

// --------------------------------------------------------------------------- Redis

const client = createClient({ url: settings.url });
client.on("error", (error) => log("WARNING", `${redacted(settings.url)}: ${error.message}`));
const bytes = client.withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer }); // events as sent

let consuming = false;
let stopping = false;
let wake = () => {};
const stopped = new Promise((resolve) => {
  for (const signal of ["SIGTERM", "SIGINT"]) {
    process.on(signal, () => {
      if (!consuming) {
        log("INFO", `${signal} before the group was ready: stopped`); // nothing in hand
        process.exit(0);
      }
      if (!stopping) log("INFO", `${signal}: stopping`);
      stopping = true;
      wake();
      resolve();
    });
  }
});

function pause(ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    wake = () => {
      clearTimeout(timer);
      resolve();
    };
  });
}

async function createGroup() {
  try {
    await client.xGroupCreate(EVENTS, settings.group, "$", { MKSTREAM: true });
  } catch (error) {
    if (!String(error.message).startsWith("BUSYGROUP")) throw error;
  }
}

/** Publish the outbox, oldest first; what cannot be published now waits for the next try. */
async function relay() {
  while (state.outbox.length) {
    const [event] = state.outbox;
    try {
      await client.xAdd(EVENTS, "*", { event: JSON.stringify(event) });
    } catch (error) {
      log("WARNING", `publishing ${event.type} ${event.id} failed: ${error.message}; later`);
      return;
    }
    commit((next) => next.outbox.shift());
    log("INFO", `published ${event.type} ${event.id} for ${event.correlationid}`);
  }
}

/** How many times the group has been given the entry `id`. */
async function deliveries(id) {
  const [pending] = await client.xPendingRange(EVENTS, settings.group, id, id, 1);
  return pending ? Number(pending.deliveriesCounter) : 1;
}

/** Give entries back to the group, to be taken again at once (by anyone's next claim). */
async function handBack(ids) {
  if (!ids.length) return;
  await client.xClaimJustId(EVENTS, settings.group, CONSUMER, 0, ids, {
    IDLE: settings.redeliverMs,
  });
}

async function deadLetter(id, error, attempts, raw) {
  const letter = {
    stream: settings.stream,
    group: settings.group,
    error,
    attempts,
    time: Date.now() / 1000,
    raw: raw.toString("base64"),
  };
  await client
    .multi()
    .xAdd(DEAD, "*", { dead: JSON.stringify(letter) })
    .xAck(EVENTS, settings.group, id)
    .exec();
  log("ERROR", `dead-lettered entry ${id} after ${attempts} attempt(s): ${error}`);
}

/** Handle one entry of the stream, then acknowledge it, hand it back or dead-letter it. */
async function deliver(entry, claimed) {
  const id = entry.id.toString();
  const attempt = claimed ? await deliveries(id) : 1;
  const raw = entry.message.event;
  if (raw === undefined) {
    const fields = Object.fromEntries(
      Object.entries(entry.message).map(([name, value]) => [name, value.toString()]),
    );
    const entryJson = Buffer.from(JSON.stringify(fields)); // the page leaves `raw` open here
    await deadLetter(id, "entry has no field 'event'", attempt, entryJson);
    return;
  }
  let event;
  try {
    event = parseEvent(raw);
  } catch (error) {
    if (!(error instanceof MalformedEvent)) throw error;
    await deadLetter(id, `malformed event: ${error.message}`, attempt, raw);
    return;
  }
  if (attempt > settings.maxAttempts) {
    const why = `${event.type} ${event.id}: delivered ${attempt} times without an answer`;
    await deadLetter(id, why, attempt, raw);
    return;
  }
  const handler = HANDLERS[event.type];
  if (handler === undefined) {
    await client.xAck(EVENTS, settings.group, id); // not ours: every service hears everything
    return;
  }
  if (event.id in state.handled) {
    log("INFO", `${event.type} ${event.id} came again, already handled: acknowledged`);
    await client.xAck(EVENTS, settings.group, id);
    return;
  }
  let failure = null;
  try {
    commit((tx) => {
      tx.handled[event.id] = handler(event, tx) ?? true;
    });
  } catch (error) {
    failure = error;
  }
  if (failure === null) {
    log("INFO", `handled ${event.type} ${event.id} for ${event.correlationid}`);
    await client.xAck(EVENTS, settings.group, id);
    await relay();
  } else if (attempt >= settings.maxAttempts) {
    await deadLetter(id, `${failure.name}: ${failure.message}`, attempt, raw);
  } else {
    log("WARNING", `${event.type} ${event.id} failed on attempt ${attempt}: ${failure.message}`);
    await handBack([id]);
  }
}

/** Handle `entries` in order; once stopping, hand the rest back. */
async function deliverAll(entries, claimed) {
  for (let i = 0; i < entries.length; i++) {
    if (stopping) {
      await handBack(entries.slice(i).map((entry) => entry.id.toString()));
      return;
    }
    await deliver(entries[i], claimed);
  }
}

async function consume() {
  let cursor = "0-0";
  let failures = 0;
  while (!stopping) {
    try {
      await relay();
      // Before each read: take over entries idle for redeliver_after (handed back, or
      // held by a consumer that died), then read what is new.
      const claim = await bytes.xAutoClaim(
        EVENTS,
        settings.group,
        CONSUMER,
        settings.redeliverMs,
        cursor,
        { COUNT: settings.prefetch },
      );
      cursor = claim.nextId.toString();
      await deliverAll(claim.messages.filter(Boolean), true);
      if (stopping) break;
      const read = await bytes.xReadGroup(
        settings.group,
        CONSUMER,
        { key: EVENTS, id: ">" },
        { COUNT: settings.prefetch, BLOCK: BLOCK_MS },
      );
      await deliverAll(read?.[0]?.messages ?? [], false);
      failures = 0;
    } catch (error) {
      failures += 1;
      const delay = Math.min(5000, 100 * 2 ** Math.min(failures, 6));
      log("WARNING", `consuming ${EVENTS} failed: ${error.message}; again in ${delay} ms`);
      await pause(delay);
    }
  }
}

async function main() {
  fs.mkdirSync(path.dirname(settings.statePath), { recursive: true });
  await client.connect();
  await createGroup();
  consuming = true;
  log("INFO", `${settings.group} as ${CONSUMER} on ${EVENTS} at ${redacted(settings.url)}`);
  process.stdout.write(`ready ${settings.group}\n`);
  await consume();
  await stopped;
  await client.close();
  log("INFO", `stopped: ${Object.keys(state.shipments).length} shipment(s) booked in all`);
}

main().catch((error) => {
  log("ERROR", error.stack ?? String(error));
  process.exitCode = 1;
  client.destroy();
});
