// The Durable Streams reference server (in memory) on 127.0.0.1:$PORT, for the benchmark.
import { DurableStreamTestServer } from "@durable-streams/server";

const server = new DurableStreamTestServer({ port: Number(process.env.PORT), host: "127.0.0.1" });
await server.start();
console.log("ready");
