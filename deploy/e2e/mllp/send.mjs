// Sends each corpus file's first message to the gateway's MLLP listener with
// @medplum/hl7 (a third-party MLLP client), re-sends the first accepted one,
// and reports the ACK codes.
import { Hl7Client } from '@medplum/hl7';
import { Hl7Message } from '@medplum/core';
import { readFileSync, readdirSync } from 'node:fs';

const [host, port, dir] = [process.argv[2], Number(process.argv[3]), process.argv[4]];
const client = new Hl7Client({ host, port });
const codes = {};
const noAck = [];
const files = readdirSync(dir).filter((f) => f.endsWith('.hl7')).sort();
let first;
const withTimeout = (p, ms) => Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error('timeout')), ms))]);
for (const f of files) {
  const text = readFileSync(`${dir}/${f}`, 'utf8').replace(/^\uFEFF/, '').trim().replace(/\r?\n/g, '\r').split(/\r(?=MSH\|)/)[0];
  let msg;
  try { msg = Hl7Message.parse(text); } catch { codes['client-cannot-parse'] = (codes['client-cannot-parse'] ?? 0) + 1; continue; }
  try {
    const ack = await withTimeout(client.sendAndWait(msg), 10000);
    const code = ack.getSegment('MSA')?.getField(1)?.toString() ?? 'none';
    codes[code] = (codes[code] ?? 0) + 1;
    if (!first && code === 'AA') first = { msg, ack: ack.toString() };
  } catch (e) { noAck.push(f); }
}
const again = await client.sendAndWait(first.msg);
console.log(JSON.stringify({ files: files.length, codes, noAck, duplicateSameAck: again.toString() === first.ack }));
await client.close();
process.exit(0);
