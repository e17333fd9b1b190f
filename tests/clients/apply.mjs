// A plain nats.js client with default options: apply one manifest through kyb.api.apply and
// print the reply's Kyb-Status header and body. Usage: node apply.mjs URL USER PASSWORD < manifest
import { connect } from "nats";
import { readFileSync } from "node:fs";

const [url, user, pass] = process.argv.slice(2);
const nc = await connect({ servers: url, user, pass });
const reply = await nc.request("kyb.api.apply", readFileSync(0), { timeout: 5000 });
console.log(reply.headers?.get("Kyb-Status") ?? "");
console.log(new TextDecoder().decode(reply.data));
await nc.close();
