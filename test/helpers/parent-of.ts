/**
 * A parent process for tests of what a child does when its parent dies: spawns
 * argv[2..] (output inherited), prints `CHILD <pid>` and stays until killed.
 */
import { spawn } from 'node:child_process';

const [command, ...args] = process.argv.slice(2);
if (!command) {
  process.stderr.write('usage: parent-of.ts COMMAND [ARG...]\n');
  process.exit(2);
}
const child = spawn(command, args, { stdio: ['ignore', 'inherit', 'inherit'] });
process.stdout.write(`CHILD ${child.pid}\n`);
setInterval(() => {}, 60_000);
