// Baseline for chatscale's streams benchmark: npm `resumable-stream` (Vercel) on the
// `redis` client, followers reading through Redis pub/sub.
//
//   node bench/node/resumable_stream_bench.mjs WORKLOAD --redis-url URL [--scale F] [--timeout S]
//
// Same workloads, chunk format and JSON fields as bench/streams.py (see docs/benchmarks.md).
// Every stream has a producer (createNewResumableStream, whose own response is drained as an
// HTTP response would be) and `consumers` followers (resumeExistingStream); all live in this
// process and the followers get every chunk through Redis PUBLISH. The producer's source is a
// pull stream: a chunk is stamped when the library asks for it, i.e. when it is handed over.
//
// Workload c: resumable-stream cannot resume a finished stream (the chunks live only in the
// producer's memory), so c measures a follower joining a stream that holds 20,000 chunks and
// has not finished; redis_mem_ratio is null because no chunk is stored in Redis.

import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { PerformanceObserver, constants as perfConstants, performance } from "node:perf_hooks";
import { createClient } from "redis";
import { createResumableStreamContext } from "resumable-stream";

const WORKLOADS = {
  a: { streams: 100, chunks: 1000, rate: null, consumers: 1, replay: false },
  b: { streams: 500, chunks: 200, rate: 50, consumers: 1, replay: false },
  b100: { streams: 100, chunks: 200, rate: 50, consumers: 1, replay: false },
  c: { streams: 1, chunks: 20000, rate: null, consumers: 1, replay: true },
  m: { streams: 500, chunks: 200, rate: 50, consumers: 3, replay: false },
};
const CHUNK = 16;
const KEPT_UP_FACTOR = 1.1;
const SETTLE_MS = 300;
const BUCKET_MS = 100;
const LAG_INTERVAL_MS = 50;
const GC_KINDS = {
  [perfConstants.NODE_PERFORMANCE_GC_MINOR]: "minor",
  [perfConstants.NODE_PERFORMANCE_GC_MAJOR]: "major",
  [perfConstants.NODE_PERFORMANCE_GC_INCREMENTAL]: "incremental",
  [perfConstants.NODE_PERFORMANCE_GC_WEAKCB]: "weakcb",
};

function fail(message, extra = {}) {
  process.stdout.write(JSON.stringify({ backend: "resumable-stream", ...extra, error: message }) + "\n");
  process.exit(1);
}

function parseArgs(argv) {
  const args = { workload: null, redisUrl: null, scale: 1, timeout: null };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--redis-url") args.redisUrl = argv[++i];
    else if (arg === "--scale") args.scale = Number(argv[++i]);
    else if (arg === "--timeout") args.timeout = Number(argv[++i]);
    else if (!arg.startsWith("-") && args.workload === null) args.workload = arg;
    else fail(`unknown argument ${arg}`);
  }
  if (!(args.workload in WORKLOADS)) fail(`workload must be one of ${Object.keys(WORKLOADS).join(", ")}`);
  if (!args.redisUrl) fail("--redis-url is required");
  if (!(args.scale > 0 && args.scale <= 1)) fail(`--scale must be in (0, 1], got ${args.scale}`);
  return args;
}

const nowUs = () => Number(process.hrtime.bigint() / 1000n);
const stampChunk = () => String(nowUs()).padStart(13, "0") + "tok";
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function readStamps(text) {
  if (text.length % CHUNK) throw new Error(`received ${text.length} characters, not a multiple of ${CHUNK}`);
  const stamps = [];
  for (let i = 0; i < text.length; i += CHUNK) {
    const piece = text.slice(i, i + CHUNK);
    if (!piece.endsWith("tok")) throw new Error(`malformed chunk ${JSON.stringify(piece)}`);
    stamps.push(Number(piece.slice(0, 13)));
  }
  return stamps;
}

function percentile(sorted, q) {
  if (!sorted.length) return null;
  return sorted[Math.max(1, Math.ceil((q / 100) * sorted.length)) - 1];
}

// Deliveries grouped by arrival time, as bench/_timeline.py's bucket_latencies: count,
// nearest-rank p50 and p99, and max per bucket of BUCKET_MS since the release.
function bucketLatencies(arrivals, latencies, originUs, bucketMs = BUCKET_MS) {
  const widthUs = bucketMs * 1000;
  const groups = [];
  for (let i = 0; i < arrivals.length; i++) {
    const index = Math.max(0, Math.floor((arrivals[i] - originUs) / widthUs));
    (groups[index] ??= []).push(latencies[i]);
  }
  const out = { bucket_ms: bucketMs, t_s: [], n: [], p50_ms: [], p99_ms: [], max_ms: [] };
  const ms = (us) => +(us / 1000).toFixed(3);
  for (let index = 0; index < groups.length; index++) {
    const values = Float64Array.from(groups[index] ?? []).sort();
    const empty = values.length === 0;
    out.t_s.push(+((index * bucketMs) / 1000).toFixed(3));
    out.n.push(values.length);
    out.p50_ms.push(empty ? null : ms(percentile(values, 50)));
    out.p99_ms.push(empty ? null : ms(percentile(values, 99)));
    out.max_ms.push(empty ? null : ms(values[values.length - 1]));
  }
  return out;
}

// GC pauses (PerformanceObserver "gc" entries) and event-loop lag (a timer every
// LAG_INTERVAL_MS that notes how late it fires) from the release on.
function startRecording(originUs) {
  const perfOrigin = performance.now();
  const gcEntries = [];
  const observer = new PerformanceObserver((list) => gcEntries.push(...list.getEntries()));
  observer.observe({ entryTypes: ["gc"] });
  const lag = { interval_ms: LAG_INTERVAL_MS, t_s: [], lag_ms: [] };
  let timer = null;
  const schedule = () => {
    const dueUs = nowUs() + LAG_INTERVAL_MS * 1000;
    timer = setTimeout(() => {
      lag.t_s.push(+((dueUs - originUs) / 1e6).toFixed(4));
      // libuv counts timers from the loop's cached time, so one may fire up to about 1 ms
      // before an hrtime deadline: that is no lag.
      lag.lag_ms.push(+(Math.max(0, nowUs() - dueUs) / 1000).toFixed(3));
      schedule();
    }, LAG_INTERVAL_MS);
  };
  schedule();
  let endMs = null;
  return {
    stop() {
      clearTimeout(timer);
      endMs = performance.now();
    },
    // After a turn of the loop or more: the observer gets its entries asynchronously.
    report() {
      observer.disconnect();
      const gc = { t_s: [], ms: [], kind: [], total_ms: {} };
      for (const entry of gcEntries) {
        if (entry.startTime < perfOrigin || entry.startTime > endMs) continue;
        const kind = GC_KINDS[entry.detail?.kind] ?? String(entry.detail?.kind);
        gc.t_s.push(+((entry.startTime - perfOrigin) / 1000).toFixed(4));
        gc.ms.push(+entry.duration.toFixed(3));
        gc.kind.push(kind);
        gc.total_ms[kind] = +((gc.total_ms[kind] ?? 0) + entry.duration).toFixed(3);
      }
      return { gc_pauses: gc, loop_lag: lag };
    },
  };
}

function gitCommit() {
  const cwd = dirname(fileURLToPath(import.meta.url));
  try {
    const head = execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd, encoding: "utf8" }).trim();
    const dirty = execFileSync("git", ["status", "--porcelain", "--untracked-files=no"], { cwd, encoding: "utf8" }).trim();
    return dirty ? `${head}+dirty` : head;
  } catch {
    return "unknown";
  }
}

function parseCommandstats(text) {
  const perCommand = {};
  let total = 0;
  for (const line of text.split("\n")) {
    const match = /^cmdstat_([^:]+):calls=(\d+)/.exec(line.trim());
    if (!match) continue;
    const calls = Number(match[2]);
    perCommand[match[1]] = calls;
    const base = match[1].split("|")[0].toLowerCase();
    if (base !== "info" && base !== "config") total += calls;
  }
  return { total, perCommand };
}

// A pull source: the library asks for a chunk, the producer stamps and hands it over.
function source(workload, startUs, offsetMs, state) {
  let index = 0;
  return () =>
    new ReadableStream(
      {
        async pull(controller) {
          if (index >= workload.chunks) {
            if (state.hold) await state.hold; // c: keep the stream open until released
            controller.close();
            return;
          }
          if (workload.rate !== null) {
            const dueUs = startUs() + (offsetMs + (index * 1000) / workload.rate) * 1000;
            const delayMs = (dueUs - nowUs()) / 1000;
            if (delayMs > 0) await sleep(delayMs);
            else state.lagMs = Math.max(state.lagMs, -delayMs);
          }
          index += 1;
          controller.enqueue(stampChunk());
          if (index === workload.chunks) state.written?.();
        },
      },
      { highWaterMark: 0 },
    );
}

async function drain(stream) {
  const reader = stream.getReader();
  while (!(await reader.read()).done);
}

async function follow(ctx, streamId, expected, tally, live) {
  const stream = await ctx.resumeExistingStream(streamId);
  if (!stream) throw new Error(`stream ${streamId} cannot be followed`);
  const reader = stream.getReader();
  let seen = 0;
  let previous = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    const arrived = nowUs();
    if (!value) continue; // the ack of an empty history
    tally.messages += 1;
    for (const stamp of readStamps(value)) {
      if (stamp < previous) throw new Error(`stream ${streamId}: chunk out of order`);
      previous = stamp;
      if (live) {
        tally.latencies.push(arrived - stamp);
        tally.arrivals.push(arrived);
      }
      seen += 1;
    }
    if (seen > expected) throw new Error(`stream ${streamId}: ${seen} chunks, expected ${expected}`);
    if (arrived > tally.lastSeenUs) tally.lastSeenUs = arrived;
    if (!live && seen === expected) {
      await reader.cancel();
      break;
    }
  }
  if (seen !== expected) throw new Error(`stream ${streamId}: ended after ${seen} of ${expected} chunks`);
  tally.deliveries += seen;
}

async function run(name, workload, redisUrl) {
  const prefix = `bench${randomUUID().replaceAll("-", "").slice(0, 8)}`;
  const publisher = createClient({ url: redisUrl });
  const subscriber = createClient({ url: redisUrl });
  const admin = createClient({ url: redisUrl });
  for (const client of [publisher, subscriber, admin]) {
    client.on("error", (err) => fail(`redis client: ${err.message}`, { workload: name }));
  }
  await Promise.all([publisher.connect(), subscriber.connect(), admin.connect()]);
  const pending = [];
  const ctx = createResumableStreamContext({
    keyPrefix: `${prefix}:`,
    waitUntil: (promise) => pending.push(promise),
    publisher,
    subscriber,
  });
  const tally = { latencies: [], arrivals: [], deliveries: 0, messages: 0, lastSeenUs: 0 };
  const state = { lagMs: 0, hold: null, written: null };
  let t0 = 0;
  const startUs = () => t0;
  const total = workload.streams * workload.chunks;
  const result = {};

  if (!workload.replay) await admin.sendCommand(["CONFIG", "RESETSTAT"]);
  const setupStart = performance.now();
  let before;
  let recording;
  let release = null;
  const producers = [];
  if (workload.replay) {
    let releaseHold;
    state.hold = new Promise((resolve) => (releaseHold = resolve));
    const written = new Promise((resolve) => (state.written = resolve));
    t0 = nowUs();
    const id = `s0`;
    const out = await ctx.createNewResumableStream(id, source(workload, startUs, 0, state));
    producers.push(drain(out));
    await written;
    await admin.sendCommand(["CONFIG", "RESETSTAT"]);
    result.setup_s = (performance.now() - setupStart) / 1000;
    before = { cpu: process.cpuUsage() };
    t0 = nowUs();
    recording = startRecording(t0);
    await follow(ctx, id, workload.chunks, tally, false);
    release = releaseHold;
  } else {
    // Sources wait for a gate: producers start only once every follower is subscribed.
    let openGate;
    const gate = new Promise((resolve) => (openGate = resolve));
    const ids = [];
    for (let i = 0; i < workload.streams; i++) {
      const id = `s${i}`;
      ids.push(id);
      const make = source(workload, startUs, (i / workload.streams) * (workload.rate ? 1000 / workload.rate : 0), state);
      const gated = () => {
        const inner = make().getReader();
        return new ReadableStream(
          {
            async pull(controller) {
              await gate;
              const { done, value } = await inner.read();
              if (done) controller.close();
              else controller.enqueue(value);
            },
          },
          { highWaterMark: 0 },
        );
      };
      const out = await ctx.createNewResumableStream(id, gated);
      producers.push(drain(out));
    }
    const followers = [];
    for (const id of ids) {
      for (let k = 0; k < workload.consumers; k++) followers.push(follow(ctx, id, workload.chunks, tally, true));
    }
    result.setup_s = (performance.now() - setupStart) / 1000;
    await sleep(SETTLE_MS);
    before = { cpu: process.cpuUsage() };
    t0 = nowUs();
    recording = startRecording(t0);
    openGate();
    await Promise.all(followers);
  }
  recording.stop();
  const cpu = process.cpuUsage(before.cpu);
  // CPU % is over the whole measured window (until every follower has ended).
  const windowS = (nowUs() - t0) / 1e6;
  const wallS = (tally.lastSeenUs - t0) / 1e6;
  const cpuS = (cpu.user + cpu.system) / 1e6;
  const stats = parseCommandstats(await admin.sendCommand(["INFO", "commandstats"]));
  if (release) release();
  await Promise.all(producers);
  await Promise.all(pending);
  const latencies = Float64Array.from(tally.latencies).sort();
  const ideal = workload.rate === null ? null : workload.chunks / workload.rate;
  Object.assign(result, {
    total_chunks: total,
    deliveries: tally.deliveries,
    messages: tally.messages,
    wall_s: +wallS.toFixed(4),
    chunks_per_s: wallS > 0 ? Math.round(total / wallS) : null,
    cpu_s: +cpuS.toFixed(3),
    cpu_pct: windowS > 0 ? +((cpuS / windowS) * 100).toFixed(1) : null,
    cpu_window_s: +windowS.toFixed(4),
    peak_rss_mb: +(process.resourceUsage().maxRSS / 1024).toFixed(1),
    lat_p50_ms: latencies.length ? +(percentile(latencies, 50) / 1000).toFixed(3) : null,
    lat_p99_ms: latencies.length ? +(percentile(latencies, 99) / 1000).toFixed(3) : null,
    lat_max_ms: latencies.length ? +(latencies[latencies.length - 1] / 1000).toFixed(3) : null,
    ideal_s: ideal,
    kept_up: ideal === null ? null : wallS <= ideal * KEPT_UP_FACTOR,
    producer_lag_max_ms: ideal === null ? null : +state.lagMs.toFixed(3),
    redis_calls_per_chunk: +(stats.total / total).toFixed(4),
    redis_commands: stats.perCommand,
    // Latency over time (issue 14): whether the tail is periodic, and what stalls the loop.
    timeline: bucketLatencies(tally.arrivals, tally.latencies, t0),
    ...recording.report(),
  });
  result.setup_s = +result.setup_s.toFixed(4);
  if (workload.replay) {
    result.redis_mem_ratio = null; // the chunks are not in Redis at all
    result.redis_keys = 0;
  }
  const server = await admin.sendCommand(["INFO", "server"]);
  result.versions = {
    node: process.versions.node,
    redis_server: /redis_version:([^\r\n]+)/.exec(server)?.[1] ?? null,
    commit: gitCommit(),
  };
  await Promise.all([publisher.quit(), subscriber.quit(), admin.quit()]);
  return result;
}

const args = parseArgs(process.argv.slice(2));
const base = WORKLOADS[args.workload];
const workload =
  args.scale === 1
    ? base
    : {
        ...base,
        streams: Math.max(1, Math.round(base.streams * args.scale)),
        chunks: Math.max(2, Math.round(base.chunks * args.scale)),
      };
const budgetS = args.timeout ?? 120 + 5 * (workload.rate ? workload.chunks / workload.rate : 0);
const timer = setTimeout(() => fail(`did not finish within ${budgetS} s`, { workload: args.workload }), budgetS * 1000);
try {
  const figures = await run(args.workload, workload, args.redisUrl);
  clearTimeout(timer);
  const head = {
    workload: args.workload,
    backend: "resumable-stream",
    streams: workload.streams,
    chunks_per_stream: workload.chunks,
    consumers_per_stream: workload.consumers,
    rate_per_stream: workload.rate,
    scale: args.scale,
  };
  process.stdout.write(JSON.stringify({ ...head, ...figures }) + "\n");
} catch (err) {
  // The message only: a stack trace would carry this machine's paths into the results.
  fail(String(err?.message ?? err), { workload: args.workload });
}
