// Hashing ceiling (see ceilings.ts): per entry, SHA-256 of prev_hash + entry
// (the chain link, hex) and of 0x00 + entry (the RFC 6962 leaf), as the verifier
// does. Timed inside the thread, so thread start-up and the copy of the entries
// into it are not counted.
import { hash } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';

const t0 = performance.now();
let prev = '0'.repeat(64);
for (const entry of workerData) {
  prev = hash('sha256', prev + entry, 'hex');
  hash('sha256', `\u0000${entry}`, 'buffer');
}
parentPort.postMessage({ entries: workerData.length, ms: performance.now() - t0 });
